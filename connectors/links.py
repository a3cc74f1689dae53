"""Links to a record's own page in its CRM, for the dashboard and for notifications (the core
names no CRM: `sync.notify` takes a `Links` from here)."""

from __future__ import annotations

from urllib.parse import quote

from sync.models import Decision, Outcome

# The record kind -> HubSpot's object type id (its record URLs name the type by id).
HUBSPOT_TYPES = {"account": "0-2", "contact": "0-1"}
SALESFORCE_OBJECTS = {"account": "Account", "lead": "Lead", "contact": "Contact"}


# The CRMs' own object names -> the record kind the links above are keyed by.
_KINDS = {("hubspot", "companies"): "account", ("hubspot", "contacts"): "contact",
          ("salesforce", "Account"): "account", ("salesforce", "Lead"): "lead",
          ("salesforce", "Contact"): "contact"}


def record_link(crm: str, crm_object: str, record_id: str, hubspot_portal_id: str | None,
                salesforce_instance_url: str | None) -> str | None:
    """`crm_link` for a record known by its CRM's own object name (`companies`, `Lead`)."""
    kind = _KINDS.get((crm, crm_object))
    if kind is None:
        return None
    return crm_link(Decision(record_id, kind, crm, Outcome.ASSIGNED), hubspot_portal_id,
                    salesforce_instance_url)


class CrmLinks:
    """`sync.notify.Links` from the settings (HUBSPOT_PORTAL_ID, SALESFORCE_INSTANCE_URL)."""

    def __init__(self, hubspot_portal_id: str | None = None,
                 salesforce_instance_url: str | None = None) -> None:
        self.hubspot_portal_id = hubspot_portal_id
        self.salesforce_instance_url = salesforce_instance_url

    def decision(self, decision: Decision) -> str | None:
        return crm_link(decision, self.hubspot_portal_id, self.salesforce_instance_url)

    def record(self, crm: str, crm_object: str, record_id: str) -> str | None:
        return record_link(crm, crm_object, record_id, self.hubspot_portal_id,
                           self.salesforce_instance_url)


def crm_link(decision: Decision, hubspot_portal_id: str | None,
             salesforce_instance_url: str | None) -> str | None:
    """The record's page in its CRM: HubSpot's record URL (portal id needed), Salesforce
    Lightning's; None when the setting is missing or the object has no such page."""
    record = quote(decision.record_id, safe="")
    if decision.crm == "hubspot" and hubspot_portal_id:
        kind = HUBSPOT_TYPES.get(decision.object)
        if kind is None:
            return None
        return (f"https://app.hubspot.com/contacts/{quote(hubspot_portal_id, safe='')}"
                f"/record/{kind}/{record}")
    if decision.crm == "salesforce" and salesforce_instance_url:
        base = salesforce_instance_url.rstrip("/")
        sobject = SALESFORCE_OBJECTS.get(decision.object)
        # Only a web address becomes a link (a setting is not a place for javascript:).
        if sobject is None or not base.lower().startswith(("https://", "http://")):
            return None
        return f"{base}/lightning/r/{sobject}/{record}/view"
    return None
