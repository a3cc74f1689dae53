"""`POST /reprocess` with `dry_run`: the decisions the pipeline would make, read from a CRM
(the simulator on loopback) and rendered as `GET /decisions` renders them; no pool turn taken,
nothing written to the CRM or the state store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from connectors import registry
from connectors.settings import Settings
from connectors.simulator import Simulator
from sync.compiler import load_routing
from sync.decide import RoutingContext
from sync.models import Decision
from sync.pipeline import Pipeline
from sync.state import StateStore
from tasks.http import create_app
from tasks.metrics import LocalMetrics
from tests.builders import write_routing
from tests.tasks.test_http import AUTH, TOKEN, RecordingEnqueue

ROUTING = """version: 1
reps: [{id: ana, crm_ids: {hubspot: '101'}}, {id: bo, crm_ids: {hubspot: '102'}}]
pools: {team: {members: [ana, bo], strategy: round_robin}}
rules: [{name: everyone, assign: {pool: team}}]
"""
DECISION_KEYS = set(Decision(record_id="x", object="account", crm="hubspot",
                             outcome="assigned").to_dict())


@pytest.fixture
def routing_file(tmp_path: Path) -> Path:
    return write_routing(tmp_path, ROUTING)


def pool_versions(store: StateStore, settings: Settings) -> dict[str, int]:
    routing = load_routing(str(settings.config))
    windows = RoutingContext.pool_windows(routing, datetime.now(UTC))
    return {pool: snap.version for pool, snap in store.load_pools(windows).items()}


def dry_run(client: TestClient, ids: list[str]) -> dict[str, object]:
    response = client.post("/reprocess", headers=AUTH, json={
        "crm": "hubspot", "object": "companies", "ids": ids, "dry_run": True})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_given_unowned_and_gone_records_when_dry_run_then_200_with_the_decisions_and_no_turn(
    api: TestClient, sim: Simulator, sqlite_store: StateStore, settings: Settings,
    enqueue: RecordingEnqueue,
) -> None:
    first = str(sim.hubspot_create("companies", {"name": "A", "domain": "a.example"}))
    second = str(sim.hubspot_create("companies", {"name": "B", "domain": "b.example"}))
    sim.reset_stats()

    body = dry_run(api, [first, second, "987654321"])
    again = dry_run(api, [first, second, "987654321"])

    assert body["dry_run"] is True and (body["crm"], body["object"]) == ("hubspot", "companies")
    decisions = body["decisions"]
    assert isinstance(decisions, list)
    assert [d["record_id"] for d in decisions] == [first, second, "987654321"]
    assert all(set(d) == DECISION_KEYS for d in decisions)  # the shape of GET /decisions
    assert [(d["outcome"], d["owner"], d["owner_crm_id"]) for d in decisions[:2]] == [
        ("assigned", "ana", "101"), ("assigned", "bo", "102")]
    assert decisions[2]["outcome"] == "skipped"
    # No turn taken: the same answer twice, and the pool never written.
    assert [d["owner"] for d in again["decisions"]] == ["ana", "bo", None]
    assert pool_versions(sqlite_store, settings) == {"team": 0}
    # Nothing written: no owner in the CRM, no audit row, nothing enqueued.
    assert sim.owner_of("hubspot", "companies", first) is None
    assert sim.owner_of("hubspot", "companies", second) is None
    assert sim.stats("hubspot")["records_updated"] == 0
    assert sim.stats("hubspot")["total"] > 0  # it did read the CRM
    assert sqlite_store.decisions(record_id=first, limit=10) == []
    assert enqueue.calls == []

    # The same ids routed for real do take the turn: the checks above can see one.
    routing = load_routing(str(settings.config))
    real = Pipeline(registry.create_for("hubspot", routing, settings), routing, sqlite_store)
    real.route_ids("companies", [first])
    assert pool_versions(sqlite_store, settings) == {"team": 1}
    assert sim.owner_of("hubspot", "companies", first) == "101"


def test_given_more_than_100_ids_when_dry_run_then_413_saying_the_limit(
    api: TestClient, enqueue: RecordingEnqueue,
) -> None:
    response = api.post("/reprocess", headers=AUTH, json={
        "crm": "hubspot", "object": "companies", "ids": [str(i) for i in range(1, 102)],
        "dry_run": True})

    assert response.status_code == 413
    assert "at most 100 ids" in response.json()["error"]
    assert enqueue.calls == []


def test_given_no_routing_file_when_dry_run_then_503_naming_the_setting(
    client: TestClient, sqlite_store: StateStore, enqueue: RecordingEnqueue,
) -> None:
    app = create_app(Settings.model_validate({"api_token": TOKEN}), sqlite_store, enqueue,
                     metrics=LocalMetrics())

    response = TestClient(app).post("/reprocess", headers=AUTH, json={
        "crm": "hubspot", "object": "companies", "ids": ["1"], "dry_run": True})

    assert response.status_code == 503
    assert "ACCOUNT_ROUTER_CONFIG" in response.json()["error"]
    assert enqueue.calls == []
