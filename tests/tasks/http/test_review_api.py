"""`GET /review`, `POST /review/{id}/approve|reassign` against the CRM simulator on loopback."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from connectors import registry
from connectors.settings import Settings
from connectors.simulator import Simulator
from sync.compiler import load_routing
from sync.pipeline import Pipeline
from sync.state import StateStore
from tests.builders import write_routing
from tests.tasks.test_http import AUTH

ROUTING = """version: 1
reps:
  - {id: ana, crm_ids: {hubspot: '101'}}
  - {id: bo, crm_ids: {hubspot: '102'}}
  - {id: cy, crm_ids: {hubspot: '103'}, active: false}
pools: {team: {members: [ana, bo], strategy: round_robin}}
rules: [{name: everyone, assign: {pool: team}, review: true}]
"""
LISTED = {"id", "record_id", "crm", "object", "proposed_owner", "rule", "reason", "created_at"}


@pytest.fixture
def routing_file(tmp_path: Path) -> Path:
    return write_routing(tmp_path, ROUTING)


def held(sim: Simulator, store: StateStore, settings: Settings, n: int = 1) -> list[str]:
    """Create `n` companies and route them: each is held for review. Their record ids."""
    ids = [str(sim.hubspot_create("companies", {"name": f"Co {i}", "domain": f"c{i}.example"}))
           for i in range(n)]
    routing = load_routing(str(settings.config))
    connector = registry.create_for("hubspot", routing, settings)
    try:
        report = Pipeline(connector, routing, store).route_ids("companies", ids)
    finally:
        connector.close()
    assert report.outcomes == {"pending_review": n}
    return ids


def items(api: TestClient) -> list[dict[str, object]]:
    response = api.get("/review", headers=AUTH)
    assert response.status_code == 200, response.text
    listed: list[dict[str, object]] = response.json()["items"]
    return listed


def test_given_held_records_when_listing_then_the_shape_is_the_designs_and_nothing_written(
        api, sim, sqlite_store, settings):
    [first, second] = held(sim, sqlite_store, settings, 2)

    listed = items(api)

    assert [set(i) for i in listed] == [LISTED, LISTED]
    assert sorted((i["record_id"], i["crm"], i["object"], i["proposed_owner"], i["rule"])
                  for i in listed) == [(first, "hubspot", "companies", "ana", "everyone"),
                                 (second, "hubspot", "companies", "bo", "everyone")]
    assert sim.owner_of("hubspot", "companies", first) is None
    assert sim.stats("hubspot")["records_updated"] == 0


def test_given_an_item_when_approved_then_200_written_once_and_409_after(
        api, sim, sqlite_store, settings):
    [record] = held(sim, sqlite_store, settings)
    [item] = items(api)

    response = api.post(f"/review/{item['id']}/approve", headers=AUTH, json={"by": "maya"})
    again = api.post(f"/review/{item['id']}/approve", headers=AUTH)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["owner"]) == ("approved", "ana")
    assert body["decision"]["trigger"] == "review" and body["decision"]["written_at"]
    assert again.status_code == 409 and "already approved by maya" in again.json()["error"]
    assert sim.owner_of("hubspot", "companies", record) == "101"
    assert sim.stats("hubspot")["records_updated"] == 1
    assert items(api) == []


def test_given_two_concurrent_approvals_then_one_200_one_409_and_one_write(
        api, sim, sqlite_store, settings):
    [record] = held(sim, sqlite_store, settings)
    [item] = items(api)
    codes: list[int] = []
    start = threading.Barrier(2)

    def post() -> None:
        start.wait()
        codes.append(api.post(f"/review/{item['id']}/approve", headers=AUTH).status_code)

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(codes) == [200, 409]
    assert sim.stats("hubspot")["records_updated"] == 1
    assert sim.owner_of("hubspot", "companies", record) == "101"


def test_given_an_item_when_reassigned_then_the_other_rep_is_written(
        api, sim, sqlite_store, settings):
    [record] = held(sim, sqlite_store, settings)
    [item] = items(api)

    response = api.post(f"/review/{item['id']}/reassign", headers=AUTH, json={"rep": "bo"})

    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["owner"]) == ("reassigned", "bo")
    assert sim.owner_of("hubspot", "companies", record) == "102"
    [override] = [e for e in sqlite_store.history.events() if e.kind == "override"]
    assert (override.data["from"], override.data["to"], override.data["by"]) == (
        "ana", "bo", "api")


@pytest.mark.parametrize(("rep", "words"), [("zed", "unknown rep"), ("cy", "inactive")])
def test_given_an_unknown_or_inactive_rep_when_reassigning_then_422_and_still_open(
        api, sim, sqlite_store, settings, rep, words):
    held(sim, sqlite_store, settings)
    [item] = items(api)

    response = api.post(f"/review/{item['id']}/reassign", headers=AUTH, json={"rep": rep})

    assert response.status_code == 422 and words in response.json()["error"]
    assert items(api) == [item]
    assert sim.stats("hubspot")["records_updated"] == 0


def test_given_no_token_or_unknown_id_or_bad_body_then_401_404_422(
        api, sim, sqlite_store, settings):
    held(sim, sqlite_store, settings)
    [item] = items(api)

    assert api.get("/review").status_code == 401
    assert api.post(f"/review/{item['id']}/approve").status_code == 401
    assert api.post(f"/review/{item['id']}/reassign", json={"rep": "bo"}).status_code == 401
    missing = api.post("/review/nosuchitem/approve", headers=AUTH)
    assert missing.status_code == 404 and "nosuchitem" in missing.json()["error"]
    assert api.post("/review/nosuchitem/reassign", headers=AUTH,
                    json={"rep": "bo"}).status_code == 404
    for body in ({}, {"rep": 7}, {"rep": "bo", "extra": 1}, {"rep": ""}):
        refused = api.post(f"/review/{item['id']}/reassign", headers=AUTH, json=body)
        assert refused.status_code in (400, 422), body
        assert "Traceback" not in refused.text
    assert sim.stats("hubspot")["records_updated"] == 0
    assert items(api) == [item]


def test_given_an_owner_set_meanwhile_when_approved_then_it_is_kept_and_superseded(
        api, sim, sqlite_store, settings):
    [record] = held(sim, sqlite_store, settings)
    [item] = items(api)
    sim.set_owner("hubspot", "companies", record, "102")

    response = api.post(f"/review/{item['id']}/approve", headers=AUTH)

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["owner"]) == ("superseded", "bo")
    assert sim.owner_of("hubspot", "companies", record) == "102"
