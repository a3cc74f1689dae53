"""HubSpot vendor constants: page sizes, limits and the properties we read.

See docs/connectors.md#the-built-in-connectors.
"""

from __future__ import annotations

from collections.abc import Mapping

from sync.ports import CrmSpec

# Tests check these tables against each other (STYLE.md §6).

CRM = "hubspot"

LIST_PAGE_SIZE = 100  # GET /crm/v3/objects/{object}: `limit` at most 100
BATCH_SIZE = 100  # batch/read and batch/update: at most 100 inputs
SEARCH_PAGE_SIZE = 200  # POST .../search: `limit` at most 200
SEARCH_RESULT_CAP = 10_000  # a search query pages through at most 10,000 results
SEARCH_CALLS_PER_SECOND = 5  # search is limited per account, apart from the burst limit
SEARCH_IN_VALUES = 100  # values in one IN filter
# Filter groups are ORed, the filters inside one ANDed (HubSpot changelog 2024-08-26: at most
# 5 groups, 10 filters per group, 25 filters in all).
SEARCH_FILTER_GROUPS = 5
SEARCH_FILTERS_PER_GROUP = 10
SEARCH_FILTERS_TOTAL = 25
OWNERS_PAGE_SIZE = 100  # GET /crm/v3/owners: `limit` at most 100
BURST_INTERVAL_SECONDS = 10.0  # the burst policy's window (TEN_SECONDLY_ROLLING)

# The objects routed, by HubSpot's name, and the record kind of each (companies are accounts).
OBJECT_KINDS: Mapping[str, str] = {"companies": "account", "contacts": "contact"}
OBJECTS = tuple(OBJECT_KINDS)

# Default field maps (docs/routing-file.md#routing-semantics): normalized record field -> HubSpot
# property.
FIELD_MAPS: Mapping[str, Mapping[str, str]] = {
    "companies": {
        "name": "name", "domain": "domain", "website": "website", "industry": "industry",
        "employees": "numberofemployees", "annual_revenue": "annualrevenue",
        "country": "country", "state": "state", "city": "city", "postal_code": "zip",
        "phone": "phone", "owner": "hubspot_owner_id",
    },
    "contacts": {
        "name": "company", "email": "email", "website": "website", "industry": "industry",
        "employees": "numemployees", "annual_revenue": "annualrevenue",
        "country": "country", "state": "state", "city": "city", "postal_code": "zip",
        "lead_source": "hs_analytics_source", "phone": "phone", "owner": "hubspot_owner_id",
    },
}

# The property whose change means a rep worked the record (first-touch SLA): HubSpot sets it
# when a call, email, meeting or note is logged on the record.
TOUCH_FIELDS: Mapping[str, str] = {obj: "hs_last_sales_activity_timestamp" for obj in OBJECTS}

# Lifecycle stages at or past a sale (HubSpot's default stages, internal values): a record
# there converted (`suggest`, docs/operations.md#rule-suggestions).
LIFECYCLE_PROPERTY = "lifecyclestage"
CONVERTED_STAGES = frozenset({"customer", "evangelist"})
# Or a deal associated with the record closed won: `hs_is_closed_won` is HubSpot's calculated
# deal property, true in any pipeline; `closedwon` is the default pipeline's stage id.
DEALS = "deals"
DEAL_PROPERTIES = ("dealstage", "hs_is_closed_won")
DEAL_WON_STAGE = "closedwon"
OWNER_PROPERTY = "hubspot_owner_id"  # takes an owner `id` from /crm/v3/owners
ID_PROPERTY = "hs_object_id"
CREATED_PROPERTY = "createdate"

# The last-modified property that search can filter and sort on. Contacts keep the legacy
# name `lastmodifieddate`; companies (like deals and tickets) use `hs_lastmodifieddate`.
MODIFIED_PROPERTY = {
    "companies": "hs_lastmodifieddate",
    "contacts": "lastmodifieddate",
}

# Properties requested for each object: the default field map's (FIELD_MAPS) plus the
# bookkeeping ones. HubSpot returns only what is asked for; an unknown name is simply omitted,
# so contacts also ask for `hs_lastmodifieddate`.
PROPERTIES = {
    "companies": (
        "name", "domain", "website", "industry", "numberofemployees", "annualrevenue",
        "country", "state", "city", "zip", "phone", "hubspot_owner_id",
        "hs_lastmodifieddate", "createdate", "hs_object_id",
    ),
    "contacts": (
        "company", "email", "website", "industry", "numemployees", "annualrevenue",
        "country", "state", "city", "zip", "phone", "hs_analytics_source", "hubspot_owner_id",
        "lastmodifieddate", "hs_lastmodifieddate", "createdate", "hs_object_id",
    ),
}

# Properties a company search by domain needs (accounts_by_domain).
DOMAIN_PROPERTY = "domain"
# A company's name (accounts_by_name searches its words with CONTAINS_TOKEN `acm*`), and the
# website its domain falls back to when `domain` is empty.
NAME_PROPERTY = "name"
WEBSITE_PROPERTY = "website"
# Name-word prefixes one search asks for: one CONTAINS_TOKEN filter per group, since a prefix
# must match on its own (groups OR) and filters in one group would all have to (AND).
NAME_PREFIXES_PER_SEARCH = SEARCH_FILTER_GROUPS
# Words of a lead's company name whose prefixes are searched: real names have a few; a junk or
# hostile 256-character one would otherwise cost a dozen searches of the 5-a-second budget.
NAME_WORDS_SEARCHED = 8
# Companies one name search may page through: a word start more common than this is passed
# over by the matcher (sync/enrich.py MAX_TOKEN_ACCOUNTS, the same number), so it is not paged.
NAME_SEARCH_MAX_ACCOUNTS = 2_000

# Rate-limit response headers (absent on search responses).
HEADER_INTERVAL_MS = "X-HubSpot-RateLimit-Interval-Milliseconds"
HEADER_REMAINING = "X-HubSpot-RateLimit-Remaining"
HEADER_SECONDLY_REMAINING = "X-HubSpot-RateLimit-Secondly-Remaining"
HEADER_RETRY_AFTER = "Retry-After"

# 429 `policyName` values: the window each one waits out; DAILY is a quota, never waited.
POLICY_WINDOW_SECONDS = {
    "TEN_SECONDLY_ROLLING": 10.0,
    "SECONDLY": 1.0,
}
DAILY_POLICY = "DAILY"

# What the registry and the core know of HubSpot: no connector is created to learn it.
# HubSpot omits an unknown property from a read instead of failing it.
SPEC = CrmSpec(name=CRM, objects=OBJECT_KINDS, field_maps=FIELD_MAPS,
               factory="connectors.hubspot.connector:from_settings", unknown_fields_ignored=True,
               touch_fields=TOUCH_FIELDS)
