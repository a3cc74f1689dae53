"""Salesforce vendor constants: page and batch sizes, timeouts, the fields read per object."""

from __future__ import annotations

from collections.abc import Mapping

from sync.ports import CrmSpec

CRM = "salesforce"

# The objects routed, by their API names, and the record kind of each.
OBJECT_KINDS: Mapping[str, str] = {"Account": "account", "Lead": "lead", "Contact": "contact"}

# Default field maps (docs/routing-file.md#routing-semantics): normalized record field -> Salesforce
# field API name.
FIELD_MAPS: Mapping[str, Mapping[str, str]] = {
    "Account": {
        "name": "Name", "website": "Website", "industry": "Industry",
        "employees": "NumberOfEmployees", "annual_revenue": "AnnualRevenue",
        "country": "BillingCountry", "state": "BillingState", "city": "BillingCity",
        "postal_code": "BillingPostalCode", "lead_source": "AccountSource",
        "phone": "Phone", "owner": "OwnerId",
    },
    "Lead": {
        "name": "Company", "email": "Email", "website": "Website", "industry": "Industry",
        "employees": "NumberOfEmployees", "annual_revenue": "AnnualRevenue",
        "country": "Country", "state": "State", "city": "City", "postal_code": "PostalCode",
        "lead_source": "LeadSource", "phone": "Phone", "owner": "OwnerId",
    },
    "Contact": {
        "email": "Email", "country": "MailingCountry", "state": "MailingState",
        "city": "MailingCity", "postal_code": "MailingPostalCode",
        "lead_source": "LeadSource", "phone": "Phone", "owner": "OwnerId",
    },
}

# REST query pages hold at most 2,000 records (`Sforce-Query-Options: batchSize` 200..2000);
# further pages come from `nextRecordsUrl`, a server-side cursor fixed at the first page.
QUERY_PAGE_SIZE = 2000

# `PATCH /composite/sobjects` takes at most 200 records per call (sObject Collections).
COMPOSITE_BATCH = 200

# `WHERE Id IN (...)` reads: 200 ids (~4.4 kB quoted) keep the GET URL far below the 16 kB
# request-line limit, and always fit in one query page.
ID_CHUNK = 200

# `Website LIKE '%acme.com%' OR ...` lookups: ~30 characters a domain before URL encoding.
DOMAIN_CHUNK = 50

# `Name LIKE 'acm%' OR Name LIKE '% acm%' OR ...` (company_match): two clauses a prefix.
NAME_CHUNK = 50

# Per-record composite errors that clear by themselves: another transaction held the row.
RETRYABLE_RECORD_ERRORS: frozenset[str] = frozenset({"UNABLE_TO_LOCK_ROW"})

# Every listing is keyed by these: the id, the creation time (speed to lead) and the
# watermark field (SystemModstamp also moves on system changes, unlike LastModifiedDate), and
# who changed the record last (names the person behind an owner change: an override's `by`).
SYSTEM_FIELDS: tuple[str, ...] = ("Id", "CreatedDate", "SystemModstamp", "LastModifiedById")

# The fields read per object: FIELD_MAPS's columns, then SYSTEM_FIELDS
# (tests/connectors/salesforce/test_settings.py checks the two tables agree).
OBJECT_FIELDS: Mapping[str, tuple[str, ...]] = {
    "Account": ("Name", "Website", "Industry", "NumberOfEmployees", "AnnualRevenue",
                "BillingCountry", "BillingState", "BillingCity", "BillingPostalCode",
                "AccountSource", "Phone", "OwnerId", "Id", "CreatedDate", "SystemModstamp",
                "LastModifiedById"),
    "Lead": ("Company", "Email", "Website", "Industry", "NumberOfEmployees", "AnnualRevenue",
             "Country", "State", "City", "PostalCode", "LeadSource", "Phone", "OwnerId",
             "Id", "CreatedDate", "SystemModstamp", "LastModifiedById"),
    "Contact": ("Email", "MailingCountry", "MailingState", "MailingCity", "MailingPostalCode",
                "LeadSource", "Phone", "OwnerId", "Id", "CreatedDate", "SystemModstamp",
                "LastModifiedById"),
}

OWNER_FIELD = "OwnerId"

# The field whose change means a rep worked the record (first-touch SLA): a Lead's Status moves
# off its first value once someone works it; Accounts and Contacts carry LastActivityDate (a
# date), which Salesforce sets when a task or event is logged on the record.
TOUCH_FIELDS: Mapping[str, str] = {"Account": "LastActivityDate", "Lead": "Status",
                                   "Contact": "LastActivityDate"}

# Timeouts for every HTTP call, login included (seconds): connect, then read. SOQL over a
# large table can take tens of seconds before the first byte.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0

# Sent on every request: without it, an OwnerId update runs the org's active assignment rules,
# which may hand the record to someone else right after we routed it.
AUTO_ASSIGN_HEADER: Mapping[str, str] = {"Sforce-Auto-Assign": "FALSE"}

# Setting names per auth mode, as CredentialsError names them (docs/operations.md#salesforce).
TOKEN_SETTINGS = ("SALESFORCE_INSTANCE_URL", "SALESFORCE_ACCESS_TOKEN")
PASSWORD_SETTINGS = ("SALESFORCE_USERNAME", "SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN",
                     "SALESFORCE_DOMAIN")
JWT_SETTINGS = ("SALESFORCE_USERNAME", "SALESFORCE_CONSUMER_KEY",
                "SALESFORCE_PRIVATE_KEY_FILE", "SALESFORCE_DOMAIN")

# What the registry and the core know of Salesforce: no connector is created to learn it.
SPEC = CrmSpec(name=CRM, objects=OBJECT_KINDS, field_maps=FIELD_MAPS,
               factory="connectors.salesforce.connector:from_settings",
               touch_fields=TOUCH_FIELDS, modified_by="LastModifiedById")
