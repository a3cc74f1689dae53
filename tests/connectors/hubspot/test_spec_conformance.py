"""Every request the HubSpot connector sends, captured on the wire, against HubSpot's schema."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from connectors.hubspot.connector import HubSpotConnector
from connectors.transport import Unlimited
from tests.connectors.hubspot.fake_hubspot import (
    BASE_TIME,
    TOKEN,
    FakeHubSpot,
    RecordingLimiter,
    company,
    contact,
    fixture,
)
from tests.connectors.hubspot.spec import problems


@pytest.fixture
def conn(fake: FakeHubSpot) -> Iterator[HubSpotConnector]:
    connector = HubSpotConnector(TOKEN, base_url=fake.url, limiter=RecordingLimiter(),
                                 search_limiter=Unlimited(), transport_sleep=[].append)
    try:
        yield connector
    finally:
        connector.close()


def _kind(method: str, path: str) -> str:
    parts = path.strip("/").split("/")
    if parts[:3] == ["crm", "v3", "owners"]:
        return "owners"
    return f"{method} {'/'.join(parts[4:]) or 'list'}"


def test_given_every_operation_when_the_connector_calls_hubspot_then_each_request_conforms(
        fake: FakeHubSpot, conn: HubSpotConnector):
    # Given: enough companies for several list and search pages, contacts, and owners.
    fake.add("companies", *(company(n, domain=f"co{n}.com") for n in range(1, 251)))
    fake.add("contacts", *(contact(n, email=f"p{n}@co{n}.com") for n in range(1, 6)))
    fake.owners = fixture("owners_page.json")["results"]

    # When: every operation the pipeline uses runs to its last page.
    for obj in ("companies", "contacts"):
        for since in (None, BASE_TIME - timedelta(days=1)):
            cursor = None
            while True:
                page = conn.list_records(obj, since=since, cursor=cursor)
                cursor = page.cursor
                if cursor is None:
                    break
        conn.read_records(obj, ["1", "2", "404"])
        conn.read_owners(obj, ["1", "2"])
        conn.write_owners(obj, {"1": "7001", "2": "7001"})
    conn.users()
    conn.accounts_by_domain([f"co{n}.com" for n in range(1, 151)])
    conn.accounts_by_name(["Company 1 Holdings", "Acme Widgets", "Zyx Q Group"])

    # Then: each request is one HubSpot's spec accepts, and every kind was seen.
    seen = {_kind(r.method, r.path) for r in fake.requests}
    assert seen == {"GET list", "POST search", "POST batch/read", "POST batch/update", "owners"}
    broken = {f"{r.method} {r.path} {r.query}": problems(r.method, r.path, r.query, r.body)
              for r in fake.requests}
    assert {k: v for k, v in broken.items() if v} == {}


def test_given_the_spec_when_a_batch_read_leaves_out_properties_with_history_then_refused():
    body = {"inputs": [{"id": "1"}], "properties": ["name"]}

    found = problems("POST", "/crm/v3/objects/companies/batch/read", {"archived": ["false"]},
                     body)

    assert found == ["body: 'propertiesWithHistory' is a required property"]
    assert problems("POST", "/crm/v3/objects/companies/batch/read", {"archived": ["False"]},
                    {**body, "propertiesWithHistory": []}) == \
        ["query: 'False' does not match '^(true|false)$'"]


def test_given_the_spec_when_a_search_sorts_by_a_bare_string_then_refused():
    # The spec says strings; HubSpot ignores them (see spec.ERRATA): objects are what works.
    found = problems("POST", "/crm/v3/objects/companies/search", {},
                     {"sorts": ["hs_object_id"], "limit": 200,
                      "filterGroups": [{"filters": [{"propertyName": "x"}]}]})

    assert len(found) == 2
    assert any("'operator' is a required property" in p for p in found)
    assert any("is not of type 'object'" in p for p in found)
