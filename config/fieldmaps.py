"""Default CRM field maps (DESIGN.md §4): normalized record field -> the CRM's property name."""

from __future__ import annotations

from collections.abc import Mapping

FieldMap = Mapping[str, str]

DEFAULT_FIELD_MAPS: Mapping[str, Mapping[str, FieldMap]] = {
    "hubspot": {
        "companies": {
            "name": "name", "domain": "domain", "website": "website", "industry": "industry",
            "employees": "numberofemployees", "annual_revenue": "annualrevenue",
            "country": "country", "state": "state", "city": "city", "postal_code": "zip",
            "owner": "hubspot_owner_id",
        },
        "contacts": {
            "name": "company", "email": "email", "website": "website", "industry": "industry",
            "employees": "numemployees", "annual_revenue": "annualrevenue",
            "country": "country", "state": "state", "city": "city", "postal_code": "zip",
            "lead_source": "hs_analytics_source", "owner": "hubspot_owner_id",
        },
    },
    "salesforce": {
        "Account": {
            "name": "Name", "website": "Website", "industry": "Industry",
            "employees": "NumberOfEmployees", "annual_revenue": "AnnualRevenue",
            "country": "BillingCountry", "state": "BillingState", "city": "BillingCity",
            "postal_code": "BillingPostalCode", "lead_source": "AccountSource",
            "owner": "OwnerId",
        },
        "Lead": {
            "name": "Company", "email": "Email", "website": "Website", "industry": "Industry",
            "employees": "NumberOfEmployees", "annual_revenue": "AnnualRevenue",
            "country": "Country", "state": "State", "city": "City", "postal_code": "PostalCode",
            "lead_source": "LeadSource", "owner": "OwnerId",
        },
        "Contact": {
            "email": "Email", "country": "MailingCountry", "state": "MailingState",
            "city": "MailingCity", "postal_code": "MailingPostalCode",
            "lead_source": "LeadSource", "owner": "OwnerId",
        },
    },
}


# A CSV export's columns already carry the normalized names (DESIGN.md §5).
_NORMALIZED = ("name", "domain", "email", "industry", "employees", "annual_revenue", "country",
               "state", "city", "postal_code", "lead_source", "website", "owner")
DEFAULT_FIELD_MAPS = {**DEFAULT_FIELD_MAPS, "csv": {
    obj: {f: f for f in _NORMALIZED} for obj in ("account", "lead", "contact")}}


def field_map(crm: str, obj: str, overrides: Mapping[str, Mapping[str, Mapping[str, str]]]
              | None = None) -> dict[str, str]:
    """The default map for a CRM object with the routing file's `field_maps` applied."""
    base = dict(DEFAULT_FIELD_MAPS.get(crm, {}).get(obj, {}))
    if overrides:
        for name, mapping in overrides.get(crm, {}).items():
            if name.lower() == obj.lower():
                base.update(mapping)
    return base
