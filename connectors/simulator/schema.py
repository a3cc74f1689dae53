"""What the simulated CRMs know: HubSpot properties, Salesforce objects, ids, timestamp formats."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

# --- HubSpot -------------------------------------------------------------------------------------

HUBSPOT_OBJECTS = ("companies", "contacts")
# The word HubSpot uses in batch error messages ("Could not get some COMPANY objects ...").
HUBSPOT_OBJECT_LABEL = {"companies": "COMPANY", "contacts": "CONTACT"}
# The prefix of a webhook event's subscriptionType (`company.propertyChange`).
HUBSPOT_EVENT_PREFIX = {"companies": "company", "contacts": "contact"}

# Property -> type. Search compares by type: numbers numerically, datetimes as epoch ms, the rest
# as case-insensitive strings. Unlisted properties do not exist (reads omit them, writes fail).
_COMMON = {
    "hs_object_id": "number", "createdate": "datetime", "hs_lastmodifieddate": "datetime",
    "hubspot_owner_id": "enumeration", "industry": "enumeration", "website": "string",
    "country": "string", "state": "string", "city": "string", "zip": "string", "phone": "string",
    "lifecyclestage": "enumeration",
    # Set by HubSpot when a sales activity (call, email, meeting, note) is logged: the default
    # first-touch field (`Simulator.touch`).
    "hs_last_sales_activity_timestamp": "datetime",
}
HUBSPOT_PROPERTIES: Mapping[str, Mapping[str, str]] = {
    "companies": {
        **_COMMON, "name": "string", "domain": "string", "numberofemployees": "number",
        "annualrevenue": "number", "description": "string",
    },
    "contacts": {
        # Contacts carry both modified-date properties; HubSpot keeps them equal.
        **_COMMON, "lastmodifieddate": "datetime", "firstname": "string", "lastname": "string",
        "email": "string", "company": "string", "jobtitle": "string",
        "numemployees": "enumeration", "annualrevenue": "string",
        "hs_analytics_source": "enumeration",
    },
}
HUBSPOT_READ_ONLY = frozenset({"hs_object_id", "createdate", "hs_lastmodifieddate",
                               "lastmodifieddate", "hs_last_sales_activity_timestamp"})
# What HubSpot returns when a read names no properties.
HUBSPOT_DEFAULT_PROPERTIES: Mapping[str, tuple[str, ...]] = {
    "companies": ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
    "contacts": ("createdate", "email", "firstname", "hs_lastmodifieddate", "hs_object_id",
                 "lastmodifieddate", "lastname"),
}
# Always present in a record's properties, requested or not.
HUBSPOT_ALWAYS = ("hs_object_id", "createdate", "hs_lastmodifieddate")
HUBSPOT_MODIFIED = {"companies": ("hs_lastmodifieddate",),
                    "contacts": ("hs_lastmodifieddate", "lastmodifieddate")}

# --- Salesforce ----------------------------------------------------------------------------------

STRING_TYPES = frozenset({"string", "picklist", "email", "url", "phone", "textarea"})
ID_TYPES = frozenset({"id", "reference"})
NUMBER_TYPES = frozenset({"int", "double", "currency"})


@dataclass(frozen=True, slots=True)
class SfField:
    name: str
    type: str
    writable: bool = True


@dataclass(frozen=True, slots=True)
class SfObject:
    name: str
    prefix: str  # the key prefix every Id of this object starts with
    fields: Mapping[str, SfField]  # by lower-case name: SOQL field names are case-insensitive
    updatable: bool = True

    def field(self, name: str) -> SfField | None:
        return self.fields.get(name.lower())


def _object(name: str, prefix: str, fields: list[tuple[str, str] | tuple[str, str, bool]], *,
            updatable: bool = True) -> SfObject:
    system = [SfField("Id", "id", False), SfField("IsDeleted", "boolean", False),
              SfField("CreatedDate", "datetime", False),
              SfField("LastModifiedDate", "datetime", False),
              SfField("LastModifiedById", "reference", False),
              SfField("SystemModstamp", "datetime", False)]
    # (name, type[, writable]): LastActivityDate is Salesforce's to set, never written over REST.
    own = [SfField(*f) for f in fields]
    return SfObject(name, prefix, {f.name.lower(): f for f in system + own}, updatable)


_GEO_BILLING = [("BillingCountry", "string"), ("BillingState", "string"),
                ("BillingCity", "string"), ("BillingPostalCode", "string")]
SF_OBJECTS: Mapping[str, SfObject] = {o.name: o for o in (
    _object("Account", "001", [
        ("Name", "string"), ("Website", "url"), ("Industry", "picklist"),
        ("NumberOfEmployees", "int"), ("AnnualRevenue", "currency"), *_GEO_BILLING,
        ("AccountSource", "picklist"), ("Phone", "phone"), ("Type", "picklist"),
        ("OwnerId", "reference"), ("LastActivityDate", "date", False)]),
    _object("Lead", "00Q", [
        ("FirstName", "string"), ("LastName", "string"), ("Company", "string"),
        ("Email", "email"), ("Website", "url"), ("Title", "string"), ("Industry", "picklist"),
        ("NumberOfEmployees", "int"), ("AnnualRevenue", "currency"), ("Country", "string"),
        ("State", "string"), ("City", "string"), ("PostalCode", "string"),
        ("LeadSource", "picklist"), ("Status", "picklist"), ("Phone", "phone"),
        ("OwnerId", "reference"), ("IsConverted", "boolean", False)]),
    _object("Contact", "003", [
        ("FirstName", "string"), ("LastName", "string"), ("Email", "email"),
        ("Title", "string"), ("AccountId", "reference"), ("MailingCountry", "string"),
        ("MailingState", "string"), ("MailingCity", "string"),
        ("MailingPostalCode", "string"), ("LeadSource", "picklist"), ("Phone", "phone"),
        ("OwnerId", "reference"), ("LastActivityDate", "date", False)]),
    # Deals, for the outcomes `suggest` reads (`IsWon` follows the stage in Salesforce; here
    # the Python API sets both). Created through the Python API only.
    _object("Opportunity", "006", [
        ("Name", "string"), ("AccountId", "reference"), ("StageName", "picklist"),
        ("IsWon", "boolean", False), ("IsClosed", "boolean", False), ("OwnerId", "reference")],
        updatable=False),
    # Users and groups are managed through the Python API only, never written over REST here.
    _object("User", "005", [
        ("Name", "string"), ("FirstName", "string"), ("LastName", "string"), ("Email", "email"),
        ("Username", "string"), ("IsActive", "boolean"), ("UserType", "picklist")],
        updatable=False),
    _object("Group", "00G", [("Name", "string"), ("DeveloperName", "string"),
                             ("Type", "picklist")], updatable=False),
)}


def sf_object(name: str) -> SfObject | None:
    """The object named `name` in any case (Salesforce object names are case-insensitive)."""
    for obj in SF_OBJECTS.values():
        if obj.name.lower() == name.lower():
            return obj
    return None


_ID_SUFFIX_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID15 = re.compile(r"^[A-Za-z0-9]{15}$")


def sf_id18(id15: str) -> str:
    """Salesforce's case-safe 18-character form: three checksum characters, each encoding which
    of five characters is upper case, so a 15-character id survives case-insensitive systems."""
    suffix = ""
    for chunk in range(3):
        bits = sum(1 << i for i, c in enumerate(id15[chunk * 5:chunk * 5 + 5]) if "A" <= c <= "Z")
        suffix += _ID_SUFFIX_CHARS[bits]
    return id15 + suffix


def sf_id(prefix: str, number: int) -> str:
    """A deterministic 18-character id, e.g. sf_id("005", 100) == "005000000000100AAA"."""
    return sf_id18(f"{prefix}{number:012d}")


def normalize_sf_id(value: str) -> str | None:
    """The 18-character form of a 15- or 18-character id; None when it is not an id at all."""
    value = value.strip()
    if len(value) == 18 and _ID15.match(value[:15]) and sf_id18(value[:15]) == value:
        return value
    if _ID15.match(value):
        return sf_id18(value)
    return None


# --- Timestamps ----------------------------------------------------------------------------------

def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def hubspot_time(ms: int) -> str:
    """HubSpot's ISO 8601 form: `2026-11-25T10:00:00.000Z`."""
    return _utc(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def salesforce_time(ms: int) -> str:
    """Salesforce's REST form: `2026-11-25T10:00:00.000+0000`."""
    return _utc(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}+0000"


_ISO = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)"
                  r"(Z|[+-]\d{2}:?\d{2})?)?$")


def parse_time(text: str) -> int | None:
    """Epoch ms from epoch ms digits or an ISO 8601 date/datetime (no offset means UTC)."""
    text = text.strip()
    if re.fullmatch(r"-?\d{9,}", text):
        return int(text)
    match = _ISO.match(text)
    if not match:
        return None
    date, clock, offset = match.groups()
    if clock and "." in clock:
        whole, frac = clock.split(".")
        clock = f"{whole}.{frac[:6]:0<6}"
    if offset and offset != "Z" and ":" not in offset:
        offset = f"{offset[:3]}:{offset[3:]}"
    stamp = f"{date}T{clock or '00:00:00'}{'+00:00' if offset in (None, 'Z') else offset}"
    try:
        return round(datetime.fromisoformat(stamp).timestamp() * 1000)
    except ValueError:
        return None
