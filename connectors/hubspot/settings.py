"""HubSpot vendor constants (DESIGN.md §7): page sizes, limits and the properties we read."""

from __future__ import annotations

# Tests check these tables against config/fieldmaps.py and each other (STYLE.md §6).

LIST_PAGE_SIZE = 100  # GET /crm/v3/objects/{object}: `limit` at most 100
BATCH_SIZE = 100  # batch/read and batch/update: at most 100 inputs
SEARCH_PAGE_SIZE = 200  # POST .../search: `limit` at most 200
SEARCH_RESULT_CAP = 10_000  # a search query pages through at most 10,000 results
SEARCH_CALLS_PER_SECOND = 5  # search is limited per account, apart from the burst limit
SEARCH_IN_VALUES = 100  # values in one IN filter
OWNERS_PAGE_SIZE = 100  # GET /crm/v3/owners: `limit` at most 100
BURST_INTERVAL_SECONDS = 10.0  # the burst policy's window (TEN_SECONDLY_ROLLING)

OBJECTS = ("companies", "contacts")

OWNER_PROPERTY = "hubspot_owner_id"  # takes an owner `id` from /crm/v3/owners
ID_PROPERTY = "hs_object_id"
CREATED_PROPERTY = "createdate"

# The last-modified property that search can filter and sort on. Contacts keep the legacy
# name `lastmodifieddate`; companies (like deals and tickets) use `hs_lastmodifieddate`.
MODIFIED_PROPERTY = {
    "companies": "hs_lastmodifieddate",
    "contacts": "lastmodifieddate",
}

# Properties requested for each object: the default field map's (config/fieldmaps.py) plus the
# bookkeeping ones. HubSpot returns only what is asked for; an unknown name is simply omitted,
# so contacts also ask for `hs_lastmodifieddate`.
PROPERTIES = {
    "companies": (
        "name", "domain", "website", "industry", "numberofemployees", "annualrevenue",
        "country", "state", "city", "zip", "hubspot_owner_id",
        "hs_lastmodifieddate", "createdate", "hs_object_id",
    ),
    "contacts": (
        "company", "email", "website", "industry", "numemployees", "annualrevenue",
        "country", "state", "city", "zip", "hs_analytics_source", "hubspot_owner_id",
        "lastmodifieddate", "hs_lastmodifieddate", "createdate", "hs_object_id",
    ),
}

# Properties a company search by domain needs (accounts_by_domain).
DOMAIN_PROPERTY = "domain"

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
