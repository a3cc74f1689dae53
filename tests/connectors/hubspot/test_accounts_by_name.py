"""`accounts_by_name` (company_match's candidates): the company search by name-word prefixes,
its request on the wire, its batching and paging, and its answers from the CRM simulator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from connectors.hubspot import settings as hs
from connectors.hubspot.connector import HubSpotConnector, from_settings
from connectors.simulator import HUBSPOT_TOKEN, Simulator, serve
from sync.ports import CrmUnavailable
from tests.connectors.hubspot.fake_hubspot import (
    FakeHubSpot,
    RecordingLimiter,
    company,
    settings_for,
)

SEARCH = "/crm/v3/objects/companies/search"


def searches(fake: FakeHubSpot) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests if r.method == "POST" and r.path == SEARCH]


def test_given_names_when_looking_up_then_each_search_ors_five_word_prefixes_as_tokens(
        fake: FakeHubSpot, connector: HubSpotConnector) -> None:
    # Twelve distinct word prefixes (legal forms and short words dropped, repeats merged).
    names = ["Acme Corporation", "ACME Widgets Inc.", "Bolt & Nut GmbH", "Cobalt Dynamics",
             "Delta Echo Foxtrot", "Gamma Hotel India Ltd", "Juliet Kilo", "x", ""]

    assert connector.accounts_by_name(names) == []

    sent = searches(fake)
    prefixes = sorted({"acm", "wid", "bol", "and", "nut", "cob", "dyn", "del", "ech", "fox",
                       "gam", "hot", "ind", "jul", "kil"})
    assert len(sent) == 3  # 15 prefixes, 5 a search
    asked = []
    for body in sent:
        assert body["sorts"] == [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]
        assert body["properties"] == ["name", "domain", "website"]
        assert body["limit"] == hs.SEARCH_PAGE_SIZE == 200
        assert "after" not in body
        groups = body["filterGroups"]
        assert len(groups) <= hs.SEARCH_FILTER_GROUPS == 5
        for group in groups:  # one filter a group: groups OR, filters in a group AND
            [only] = group["filters"]
            assert only["propertyName"] == "name" and only["operator"] == "CONTAINS_TOKEN"
            assert only["value"].endswith("*")
            asked.append(only["value"][:-1])
    assert asked == prefixes


def test_given_no_name_with_a_three_letter_word_when_looking_up_then_nothing_is_asked(
        fake: FakeHubSpot, connector: HubSpotConnector) -> None:
    assert connector.accounts_by_name([]) == []
    assert connector.accounts_by_name(["x", "Inc.", "A B", "  "]) == []
    assert searches(fake) == []


def test_given_more_matches_than_a_page_when_looking_up_then_it_pages_with_after(
        fake: FakeHubSpot, connector: HubSpotConnector) -> None:
    fake.add("companies", *(company(n, name=f"Zyx Labs {n}", domain=f"zyx{n}.example")
                            for n in range(1, 451)))
    fake.add("companies", company(451, name="Other", domain="other.example"),
             company(452, name="Zyx No Domain"),
             company(453, name="Zyx Site Only", website="https://www.zyx-site.example/about"))

    found = connector.accounts_by_name(["Zyxcorp"])

    assert len(found) == 451
    assert found[:2] == [("Zyx Labs 1", "zyx1.example"), ("Zyx Labs 2", "zyx2.example")]
    assert ("Zyx Site Only", "zyx-site.example") in found  # website when domain is empty
    assert all(name != "Zyx No Domain" for name, _ in found)
    assert [b.get("after") for b in searches(fake)] == [None, "200", "400"]


def test_given_a_search_throttled_once_when_looking_up_then_the_transport_retries_it(
        fake: FakeHubSpot, connector: HubSpotConnector, sleeps: list[float]) -> None:
    fake.add("companies", company(1, name="ACME Corp.", domain="acme.com"))
    fake.then(SEARCH, 429, {"status": "error", "category": "RATE_LIMITS",
                            "policyName": "SECONDLY", "message": "too many searches"})

    assert connector.accounts_by_name(["Acme Corporation"]) == [("ACME Corp.", "acme.com")]
    assert len(searches(fake)) == 2 and len(sleeps) == 1  # the one retry layer, once


# --- against the CRM simulator ------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[tuple[Simulator, HubSpotConnector]]:
    simulator = Simulator(5)
    simulator.seed(companies=0, contacts=0, accounts=0, leads=0, owners=2)
    with serve(simulator, tls=False) as running:
        settings = settings_for(running.hubspot_url, token=HUBSPOT_TOKEN)
        conn = from_settings(settings, limiter=RecordingLimiter(), transport_sleep=[].append)
        try:
            yield simulator, conn
        finally:
            conn.close()


def test_given_companies_in_the_simulator_then_those_with_a_word_starting_alike_are_found(
        sim: tuple[Simulator, HubSpotConnector]) -> None:
    simulator, conn = sim
    simulator.hubspot_create("companies", {"name": "Zyxcorp, Inc.", "domain": "zyxcorp.example"})
    simulator.hubspot_create("companies", {"name": "The Zyxcorp Group",
                                           "website": "https://zyx-group.example"})
    simulator.hubspot_create("companies", {"name": "Qwzzy O'Brien", "domain": "QWZZY.example"})
    simulator.hubspot_create("companies", {"name": "Zyxcorp Without Site"})
    simulator.hubspot_create("companies", {"name": "Azyx Unrelated", "domain": "azyx.example"})
    archived = simulator.hubspot_create("companies", {"name": "Zyxcorp Old",
                                                      "domain": "old.example"})
    simulator.hubspot_archive("companies", archived)

    found = conn.accounts_by_name(["ZYXCORP LLC", "qwz 100%", "x"])

    assert sorted(found) == [("Qwzzy O'Brien", "qwzzy.example"),
                             ("The Zyxcorp Group", "zyx-group.example"),
                             ("Zyxcorp, Inc.", "zyxcorp.example")]
    calls = simulator.stats("hubspot")["calls"]["POST /crm/v3/objects/companies/search"]
    assert calls == {"200": 1}


def test_given_one_attempt_when_a_search_is_throttled_then_it_fails_without_a_retry(
        fake: FakeHubSpot, sleeps: list[float]) -> None:
    # POST /route's connector (tasks/http/lookup.py): a form waits, so no retry loop.
    fake.then(SEARCH, 503, {"status": "error", "category": "INTERNAL_ERROR", "message": "x"})
    quick = from_settings(settings_for(fake.url), limiter=RecordingLimiter(),
                          transport_sleep=sleeps.append, attempts=1)
    try:
        with pytest.raises(CrmUnavailable, match="gave up after 1 attempts"):
            quick.accounts_by_name(["Acme Corporation"])
    finally:
        quick.close()
    assert len(searches(fake)) == 1 and sleeps == []


def test_given_a_name_of_many_words_when_looking_up_then_only_its_first_eight_are_searched(
        fake: FakeHubSpot, connector: HubSpotConnector) -> None:
    words = [f"{chr(ord('a') + i) * 3}word" for i in range(20)]  # aaaword ... tttword

    connector.accounts_by_name([" ".join(words)])

    asked = [f["value"] for body in searches(fake) for g in body["filterGroups"]
             for f in g["filters"]]
    assert hs.NAME_WORDS_SEARCHED == 8
    assert asked == [f"{w[:3]}*" for w in words[:8]]
    assert len(searches(fake)) == 2


# --- word starts too common to page through ------------------------------------------------


def filters_of(body: dict[str, Any]) -> list[list[str]]:
    return [[f["value"] for f in g["filters"]] for g in body["filterGroups"]]


def test_given_common_word_starts_when_looking_up_then_they_are_not_paged_but_names_are_found(
        fake: FakeHubSpot, connector: HubSpotConnector, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hs, "NAME_SEARCH_MAX_ACCOUNTS", 30)  # 2,000 in production
    fake.add("companies", *(company(n, name=f"Northwind Traders {n}", domain=f"nt{n}.example")
                            for n in range(1, 36)))
    fake.add("companies", *(company(n, name=f"Blue Group {n}", domain=f"bg{n}.example")
                            for n in range(36, 71)))
    fake.add("companies", company(71, name="Northwind Group", domain="northwind-group.example"),
             company(72, name="ACME Group", domain="acme-group.example"))

    found = connector.accounts_by_name(["Northwind Group LLC", "Acme Group"])

    assert sorted(found) == [("ACME Group", "acme-group.example"),
                             ("Northwind Group", "northwind-group.example")]
    assert [filters_of(b) for b in searches(fake)] == [
        [["acm*"], ["gro*"], ["nor*"]],  # 73 companies: more than one search may page
        [["acm*"]],  # 1: kept
        [["gro*"]],  # 36: too common, not paged
        [["nor*"]],  # 36: too common, not paged
        [["northwind", "group"]],  # every start of the name is common: its whole words
    ]
    assert all("after" not in b for b in searches(fake))


def test_given_many_names_of_common_words_then_whole_word_searches_keep_hubspots_limits(
        fake: FakeHubSpot, connector: HubSpotConnector, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hs, "NAME_SEARCH_MAX_ACCOUNTS", 0)  # every search is too common
    names = [" ".join(f"{chr(ord('a') + i)}{chr(ord('a') + j)}x{j}" for j in range(words))
             for i, words in enumerate([8, 8, 8, 4, 4, 4, 4, 4, 4, 2])]
    fake.add("companies", *(company(n + 1, name=name, domain=f"c{n}.example")
                            for n, name in enumerate(names)))

    assert connector.accounts_by_name(names) == []

    whole = [filters_of(b) for b in searches(fake) if "*" not in filters_of(b)[0][0]]
    assert sorted(w for body in whole for w in body) == sorted(
        [n.lower().split() for n in names])  # each name once, all its words in one group
    for groups in whole:
        assert len(groups) <= hs.SEARCH_FILTER_GROUPS
        assert all(len(g) <= hs.SEARCH_FILTERS_PER_GROUP for g in groups)
        assert sum(map(len, groups)) <= hs.SEARCH_FILTERS_TOTAL
    # 8+8+8 (a fourth name would pass 25 filters) | 4 x 5 (five groups) | 4+2
    assert [sum(map(len, g)) for g in whole] == [24, 20, 6]
