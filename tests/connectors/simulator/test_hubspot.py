"""The HubSpot simulator, driven by hubspot-api-client 12 and by raw HTTP for error shapes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from hubspot import HubSpot
from hubspot.crm.companies import (
    BatchInputSimplePublicObjectBatchInput,
    BatchReadInputSimplePublicObjectId,
    BatchResponseSimplePublicObject,
    BatchResponseSimplePublicObjectWithErrors,
    PublicObjectSearchRequest,
)
from hubspot.crm.companies.exceptions import ApiException

from connectors.simulator import HUBSPOT_TOKEN, RunningSimulator, Simulator, serve
from connectors.simulator.schema import parse_time

AUTH = {"Authorization": f"Bearer {HUBSPOT_TOKEN}"}


class Clock:
    def __init__(self) -> None:
        self.t = 1_795_600_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clocked() -> Iterator[tuple[Simulator, Clock, RunningSimulator]]:
    """A small simulator on a clock the test drives, for the time-window limits."""
    clock = Clock()
    simulator = Simulator(3, clock=clock)
    simulator.seed(companies=20, accounts=0, leads=0)
    with serve(simulator, tls=False) as served:
        yield simulator, clock, served


def search_body(**extra: object) -> dict[str, object]:
    return {"filterGroups": [], "properties": ["name"], "limit": 200, "after": "0", **extra}


# --- reads --------------------------------------------------------------------------------------

def test_given_companies_when_listed_page_by_page_then_every_record_once_in_id_order(
        hubspot: HubSpot, sim: Simulator):
    seen: list[str] = []
    after = None
    while True:
        page = hubspot.crm.companies.basic_api.get_page(
            limit=100, after=after, properties=["name", "domain", "hubspot_owner_id"],
            archived=False)
        assert len(page.results) <= 100
        seen += [r.id for r in page.results]
        if page.paging is None:
            break
        after = page.paging.next.after
    assert seen == sim.ids("hubspot", "companies") and len(seen) == 250
    record = page.results[0]
    assert set(record.properties) == {"name", "domain", "hubspot_owner_id", "hs_object_id",
                                      "createdate", "hs_lastmodifieddate"}
    assert record.created_at is not None and record.archived is False


def test_given_an_archived_record_when_listing_then_only_archived_true_shows_it(
        hubspot: HubSpot, sim: Simulator):
    gone = sim.ids("hubspot", "companies")[3]
    sim.hubspot_archive("companies", gone)
    live = hubspot.crm.companies.get_all()
    archived = hubspot.crm.companies.basic_api.get_page(archived=True).results
    assert gone not in {r.id for r in live} and [r.id for r in archived] == [gone]


def test_given_an_id_when_read_then_the_record_or_a_404_object_not_found(hubspot: HubSpot):
    record = hubspot.crm.companies.basic_api.get_by_id("1001", properties=["industry"])
    assert record.properties["hs_object_id"] == "1001" and "industry" in record.properties
    with pytest.raises(ApiException) as caught:
        hubspot.crm.companies.basic_api.get_by_id("999999")
    assert caught.value.status == 404
    assert json.loads(caught.value.body)["category"] == "OBJECT_NOT_FOUND"


def test_given_unknown_property_names_when_read_then_they_are_left_out(hs: requests.Session,
                                                                       running):
    body = hs.get(f"{running.hubspot_url}/crm/v3/objects/companies/1001",
                  params={"properties": "name,not_a_property"}).json()
    assert "not_a_property" not in body["properties"] and "name" in body["properties"]


def test_given_ids_some_missing_when_batch_read_then_207_names_the_missing_ones(
        hubspot: HubSpot):
    batch = hubspot.crm.companies.batch_api
    ok = batch.read(BatchReadInputSimplePublicObjectId(
        properties=["hubspot_owner_id"], inputs=[{"id": "1001"}, {"id": "1002"}],
        properties_with_history=[]))
    assert isinstance(ok, BatchResponseSimplePublicObject) and ok.status == "COMPLETE"
    assert sorted(r.id for r in ok.results) == ["1001", "1002"]
    partial = batch.read(BatchReadInputSimplePublicObjectId(
        properties=["hubspot_owner_id"], inputs=[{"id": "1001"}, {"id": "999"}],
        properties_with_history=[]))
    assert isinstance(partial, BatchResponseSimplePublicObjectWithErrors)
    assert partial.num_errors == 1 and [r.id for r in partial.results] == ["1001"]
    assert partial.errors[0].category == "OBJECT_NOT_FOUND"
    assert partial.errors[0].context == {"ids": ["999"]}
    assert "COMPANY" in partial.errors[0].message


def test_given_more_than_100_inputs_when_batch_read_then_400(hs: requests.Session, running):
    response = hs.post(f"{running.hubspot_url}/crm/v3/objects/companies/batch/read",
                       json={"properties": [], "propertiesWithHistory": [],
                             "inputs": [{"id": str(i)} for i in range(101)]})
    assert response.status_code == 400 and response.json()["category"] == "VALIDATION_ERROR"
    assert "at most 100 inputs" in response.json()["message"]


def test_given_a_batch_read_without_properties_with_history_when_posted_then_400_names_it(
        hs: requests.Session, running):
    response = hs.post(f"{running.hubspot_url}/crm/v3/objects/companies/batch/read",
                       json={"properties": ["name"], "inputs": [{"id": "1001"}]})

    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "error" and body["category"] == "VALIDATION_ERROR"
    assert "propertiesWithHistory" in body["message"] and body["correlationId"]


# --- writes -------------------------------------------------------------------------------------

def test_given_valid_and_invalid_owners_when_batch_update_then_207_and_valid_ones_applied(
        hubspot: HubSpot, sim: Simulator):
    a, b, c, d = sim.ids("hubspot", "companies")[:4]
    before = sim.hubspot_record("companies", a)
    b_owner = sim.owner_of("hubspot", "companies", b)
    result = hubspot.crm.companies.batch_api.update(BatchInputSimplePublicObjectBatchInput(
        inputs=[{"id": a, "properties": {"hubspot_owner_id": "101"}},
                {"id": b, "properties": {"hubspot_owner_id": "109"}},  # gus: archived
                {"id": c, "properties": {"hubspot_owner_id": "199"}},  # a queue: assignable
                {"id": "999", "properties": {"hubspot_owner_id": "101"}},
                {"id": d, "properties": {"hubspot_owner_id": "424242"}}]))
    assert isinstance(result, BatchResponseSimplePublicObjectWithErrors)
    assert sorted(r.id for r in result.results) == sorted([a, c])
    by_category = {e.category: e for e in result.errors}
    assert by_category["OBJECT_NOT_FOUND"].context == {"ids": ["999"]}
    invalid = [e for e in result.errors if e.category == "VALIDATION_ERROR"]
    assert sorted(e.context["ids"][0] for e in invalid) == sorted([b, d])
    assert all(e.message.startswith("Property values were not valid: ") for e in invalid)
    assert "INVALID_OWNER_ID" in invalid[0].message
    assert result.num_errors == 3
    assert sim.owner_of("hubspot", "companies", a) == "101"
    assert sim.owner_of("hubspot", "companies", c) == "199"
    assert sim.owner_of("hubspot", "companies", b) == b_owner  # refused: unchanged
    after = sim.hubspot_record("companies", a)
    assert before and after and after["hs_lastmodifieddate"] >= before["hs_lastmodifieddate"]
    assert sim.stats("hubspot")["records_updated"] == 2


def test_given_all_valid_when_batch_update_then_200_and_empty_string_clears_the_owner(
        hubspot: HubSpot, sim: Simulator):
    a, b = sim.ids("hubspot", "companies")[:2]
    result = hubspot.crm.companies.batch_api.update(BatchInputSimplePublicObjectBatchInput(
        inputs=[{"id": a, "properties": {"hubspot_owner_id": "102"}},
                {"id": b, "properties": {"hubspot_owner_id": ""}}]))
    assert isinstance(result, BatchResponseSimplePublicObject)
    assert {r.id: r.properties["hubspot_owner_id"] for r in result.results} == {a: "102", b: None}


@pytest.mark.parametrize(("inputs", "fragment"), [
    ([{"id": "1001", "properties": {}}, {"id": "1001", "properties": {}}], "Duplicate IDs"),
    ([{"id": str(1001 + i), "properties": {}} for i in range(101)], "at most 100"),
])
def test_given_a_malformed_batch_when_updating_then_400_and_nothing_applied(
        hs: requests.Session, running, inputs, fragment):
    response = hs.post(f"{running.hubspot_url}/crm/v3/objects/companies/batch/update",
                       json={"inputs": inputs})
    assert response.status_code == 400 and fragment in response.json()["message"]


def test_given_read_only_or_unknown_properties_when_updating_one_then_400(
        hs: requests.Session, running, sim: Simulator):
    url = f"{running.hubspot_url}/crm/v3/objects/companies/1001"
    for props in ({"hs_lastmodifieddate": "0"}, {"nope": "x"}):
        response = hs.patch(url, json={"properties": props})
        assert response.status_code == 400, props
    response = hs.patch(url, json={"properties": {"hubspot_owner_id": "105"}})
    assert response.status_code == 200 and response.json()["properties"]["hubspot_owner_id"] \
        == "105" == sim.owner_of("hubspot", "companies", "1001")


# --- search -------------------------------------------------------------------------------------

def test_given_a_modified_since_filter_when_searching_then_paged_sorted_and_complete(
        hubspot: HubSpot, sim: Simulator):
    sim.configure_limits(hubspot_search_per_second=1000)  # this test pages fast
    ids = sim.ids("hubspot", "companies")
    stamps = {i: (sim.hubspot_record("companies", i) or {})["hs_lastmodifieddate"] for i in ids}
    cut = sorted(stamps.values())[100]
    expected = sorted((s, int(i)) for i, s in stamps.items() if s and cut and s >= cut)
    got: list[str] = []
    after = "0"
    for value in (str(parse_time(cut or "")), cut):  # epoch ms and ISO both work
        got, after = [], "0"
        while after is not None:
            page = hubspot.crm.companies.search_api.do_search(PublicObjectSearchRequest(
                filter_groups=[{"filters": [{"propertyName": "hs_lastmodifieddate",
                                             "operator": "GTE", "value": value}]}],
                sorts=[{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
                properties=["name", "hubspot_owner_id"], limit=60, after=after))
            assert page.total == len(expected)
            got += [r.id for r in page.results]
            after = page.paging.next.after if page.paging else None
        assert got == [str(i) for _, i in expected]


def test_given_filter_groups_when_searching_then_filters_and_and_groups_or(
        hs: requests.Session, running, sim: Simulator):
    records = [sim.hubspot_record("companies", i) or {} for i in sim.ids("hubspot", "companies")]

    def search(groups: list[list[dict[str, object]]]) -> set[str]:
        body = search_body(filterGroups=[{"filters": g} for g in groups])
        response = hs.post(f"{running.hubspot_url}/crm/v3/objects/companies/search", json=body)
        assert response.status_code == 200, response.text
        return {r["id"] for r in response.json()["results"]}

    def employees(r: dict[str, str | None]) -> float:
        return float(r["numberofemployees"] or "nan")

    big_unowned = {r["hs_object_id"] for r in records
                   if employees(r) > 500 and not r["hubspot_owner_id"]}
    assert search([[{"propertyName": "numberofemployees", "operator": "GT", "value": "500"},
                    {"propertyName": "hubspot_owner_id", "operator": "NOT_HAS_PROPERTY"}]]) \
        == big_unowned
    named = {r["hs_object_id"] for r in records if r["domain"] in ("acme.com", "hooli.com")}
    queue = {r["hs_object_id"] for r in records if r["hubspot_owner_id"] == "199"}
    assert search([[{"propertyName": "domain", "operator": "IN",
                     "values": ["ACME.com", "hooli.com"]}],
                   [{"propertyName": "hubspot_owner_id", "operator": "EQ", "value": "199"}]]) \
        == named | queue
    assert len(named) == 2 and queue


def test_given_search_when_answered_then_no_rate_limit_headers_but_other_calls_carry_them(
        hs: requests.Session, running):
    searched = hs.post(f"{running.hubspot_url}/crm/v3/objects/companies/search",
                       json=search_body())
    listed = hs.get(f"{running.hubspot_url}/crm/v3/objects/companies")
    assert not any(h.lower().startswith("x-hubspot-ratelimit") for h in searched.headers)
    assert listed.headers["X-HubSpot-RateLimit-Max"] == "100"
    assert listed.headers["X-HubSpot-RateLimit-Remaining"] == "99"
    assert listed.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert listed.headers["X-HubSpot-RateLimit-Daily"] == "250000"
    assert listed.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "249998"


def test_given_contains_token_when_searching_then_words_match_and_star_completes_a_word(
        hs: requests.Session, running, sim: Simulator):
    sim.configure_limits(hubspot_search_per_second=1000)  # six searches at once
    names = {"ACME Corp.": "acme.example", "The Acme Co": "acme-co.example",
             "Macme Ltd": "macme.example", "Acmeworks": "acmeworks.example",
             "Road-Runner Acme": "runner.example"}
    made = {sim.hubspot_create("companies", {"name": n, "domain": d}): n
            for n, d in names.items()}

    def search(value: str, op: str = "CONTAINS_TOKEN") -> set[str]:
        body = search_body(filterGroups=[{"filters": [
            {"propertyName": "name", "operator": op, "value": value}]}],
            sorts=[{"propertyName": "hs_object_id", "direction": "DESCENDING"}])  # ours first
        response = hs.post(f"{running.hubspot_url}/crm/v3/objects/companies/search", json=body)
        assert response.status_code == 200, response.text
        return {made[r["id"]] for r in response.json()["results"] if r["id"] in made}

    assert search("acm*") == {"ACME Corp.", "The Acme Co", "Acmeworks", "Road-Runner Acme"}
    assert search("ACME") == {"ACME Corp.", "The Acme Co", "Road-Runner Acme"}  # whole words
    assert search("cor") == set() and search("corp") == {"ACME Corp."}
    assert search("run*") == {"Road-Runner Acme"}  # a hyphen splits words
    assert search("*acme*") == set(names)  # a pattern may span the whole value
    assert search("acm*", "NOT_CONTAINS_TOKEN") == {"Macme Ltd"}


def test_given_hubspots_filter_limits_when_searching_then_the_most_allowed_pass_and_more_fail(
        hs: requests.Session, running, sim: Simulator):
    sim.configure_limits(hubspot_search_per_second=1000)
    def post(groups: int, per_group: int) -> int:
        one = {"propertyName": "name", "operator": "CONTAINS_TOKEN", "value": "a*"}
        body = search_body(filterGroups=[{"filters": [one] * per_group}] * groups)
        return hs.post(f"{running.hubspot_url}/crm/v3/objects/companies/search",
                       json=body).status_code

    # HubSpot changelog 2024-08-26: 5 groups, 10 filters a group, 25 filters in all.
    assert post(5, 5) == 200 and post(1, 10) == 200
    assert post(6, 1) == 400 and post(1, 11) == 400 and post(3, 9) == 400


@pytest.mark.parametrize(("extra", "fragment"), [
    ({"after": "10000"}, "10000"),
    ({"limit": 201}, "limit"),
    ({"filterGroups": [{"filters": [{"propertyName": "nope", "operator": "EQ",
                                     "value": "x"}]}]}, "nope"),
    ({"filterGroups": [{"filters": [{"propertyName": "name", "operator": "LIKE",
                                     "value": "x"}]}]}, "operator"),
])
def test_given_a_search_beyond_its_limits_when_sent_then_400_validation_error(
        hs: requests.Session, running, extra, fragment):
    response = hs.post(f"{running.hubspot_url}/crm/v3/objects/companies/search",
                       json=search_body(**extra))
    assert response.status_code == 400
    assert response.json()["category"] == "VALIDATION_ERROR"
    assert fragment in response.json()["message"]


def test_given_contacts_when_searched_by_lastmodifieddate_then_both_date_properties_agree(
        hs: requests.Session, running, sim: Simulator):
    response = hs.post(f"{running.hubspot_url}/crm/v3/objects/contacts/search", json={
        "filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE",
                                       "value": "0"}]}],
        "properties": ["email", "lastmodifieddate"], "limit": 5})
    body = response.json()
    assert body["total"] == 40 and len(body["results"]) == 5
    first = body["results"][0]["properties"]
    assert first["lastmodifieddate"] == first["hs_lastmodifieddate"]


# --- owners -------------------------------------------------------------------------------------

def test_given_owners_when_listed_then_archived_are_separate_and_queues_are_typed(
        hubspot: HubSpot):
    active = hubspot.crm.owners.owners_api.get_page(limit=100, archived=False).results
    archived = hubspot.crm.owners.owners_api.get_page(archived=True).results
    assert [o.id for o in active] == [str(i) for i in range(100, 109)] + ["199"]
    assert {o.id: o.type for o in active}["199"] == "QUEUE"
    assert active[1].email == "ava@example.com" and active[1].teams[0].name == "Sales"
    assert sorted(o.id for o in archived) == ["109", "190"] and all(o.archived for o in archived)
    assert hubspot.crm.owners.owners_api.get_by_id("103").last_name == "Sato"


def test_given_owners_when_paged_small_then_the_cursor_walks_them_all(hs: requests.Session,
                                                                     running):
    seen, after = [], None
    while True:
        body = hs.get(f"{running.hubspot_url}/crm/v3/owners",
                      params={"limit": 4, **({"after": after} if after else {})}).json()
        seen += [o["id"] for o in body["results"]]
        if "paging" not in body:
            break
        after = body["paging"]["next"]["after"]
    assert len(seen) == 10 and len(set(seen)) == 10


# --- auth and limits ----------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic eDp5"}])
def test_given_no_valid_token_when_calling_then_401_invalid_authentication(running, headers):
    response = requests.get(f"{running.hubspot_url}/crm/v3/objects/companies", headers=headers)
    body = response.json()
    assert response.status_code == 401
    assert body["status"] == "error" and body["category"] == "INVALID_AUTHENTICATION"
    assert body["message"].startswith("Authentication credentials not found.")
    assert body["correlationId"]


def test_given_a_small_burst_limit_when_exceeded_then_429_until_the_window_rolls(clocked):
    sim, clock, served = clocked
    sim.configure_limits(hubspot_burst=5)
    url = f"{served.hubspot_url}/crm/v3/objects/companies"
    statuses = [requests.get(url, headers=AUTH).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    refused = requests.get(url, headers=AUTH)
    body = refused.json()
    assert body["policyName"] == "TEN_SECONDLY_ROLLING" and body["errorType"] == "RATE_LIMIT"
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    assert body["status"] == "error" and body["groupName"] and body["correlationId"]
    assert refused.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    other = {"Authorization": "Bearer second-token"}
    sim.hubspot_tokens.add("second-token")
    assert requests.get(url, headers=other).status_code == 200  # counted per token
    clock.t += 10.001
    assert requests.get(url, headers=AUTH).status_code == 200


def test_given_the_daily_limit_when_spent_then_429_daily_until_reset(clocked):
    sim, clock, served = clocked
    sim.configure_limits(hubspot_daily=3)
    url = f"{served.hubspot_url}/crm/v3/objects/companies"
    assert [requests.get(url, headers=AUTH).status_code for _ in range(4)] == [200] * 3 + [429]
    body = requests.get(url, headers=AUTH).json()
    assert body["policyName"] == "DAILY"
    clock.t += 3600  # the burst window rolling does not help
    assert requests.get(url, headers=AUTH).status_code == 429
    sim.reset_daily()
    assert requests.get(url, headers=AUTH).status_code == 200


def test_given_six_searches_in_one_second_when_sent_then_the_sixth_is_429_secondly(clocked):
    _, clock, served = clocked
    url = f"{served.hubspot_url}/crm/v3/objects/companies/search"
    statuses = [requests.post(url, headers=AUTH, json=search_body()).status_code
                for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    assert requests.post(url, headers=AUTH, json=search_body()).json()["policyName"] == \
        "SECONDLY"
    clock.t += 1.01
    assert requests.post(url, headers=AUTH, json=search_body()).status_code == 200
