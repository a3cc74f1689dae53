"""Overrides end to end against the CRM simulator: a person reassigning a record in the fake
CRM is seen through HubSpot's owner-change webhook and through a Salesforce sweep, recorded
once, and never routed back; our own writes' echoes are not overrides."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from connectors.settings import Settings
from connectors.simulator import Simulator
from connectors.simulator.schema import sf_id
from sync.compiler import load_routing
from sync.history import History
from sync.pipeline import Pipeline
from sync.state.sqlite import SqliteStateStore
from tasks.http import create_app
from tasks.metrics import LocalMetrics
from tests import builders
from tests.builders import connector
from tests.tasks.test_http import RecordingEnqueue, post_hubspot

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "examples" / "routing.yaml"
SECRET = "hubspot-secret"
MANAGER = sf_id("005", 100)  # maya, the person who reassigns in Salesforce


@pytest.fixture
def sim() -> Simulator:
    simulator = Simulator(seed=5)
    simulator.seed(companies=30, contacts=0, accounts=30, leads=0, days=1)
    return simulator


def overrides(store: SqliteStateStore) -> list:
    with History(store.url) as history:
        return history.events(kind="override")


def test_given_a_person_reassigns_in_hubspot_when_its_webhook_arrives_then_one_override(
        sim, running, sqlite_store, tmp_path):
    routing = load_routing(EXAMPLE)
    unowned = builders.unowned(sim)
    with connector("hubspot") as c:
        Pipeline(c, routing, sqlite_store).sweep("companies", full=True)
    ours = sim.owner_of("hubspot", "companies", unowned[0])
    other = "101" if ours != "101" else "102"

    sim.reassign("hubspot", "companies", unowned[0], other, by="5000177")
    events = sim.owner_events()  # our writes' echoes (INTEGRATION) and the person's change
    enqueue, metrics = RecordingEnqueue(), LocalMetrics()
    settings = Settings.model_validate({"hubspot_webhook_secret": SECRET,
                                        "config": str(EXAMPLE)})
    app = create_app(settings, sqlite_store, enqueue, metrics=metrics)
    with TestClient(app) as client:
        for start in range(0, len(events), 100):
            response = post_hubspot(client, events[start:start + 100],
                                    stamp=str(int(time.time() * 1000)))
            assert response.status_code == 200

    written = sqlite_store.owner_marks("hubspot", "companies", sim.ids("hubspot", "companies"))
    assert sum(e["changeSource"] == "INTEGRATION" for e in events) == len(written) > 1
    [found] = overrides(sqlite_store)
    assert found.record_id == unowned[0] and found.data["to_crm_id"] == other
    assert found.data["from_crm_id"] == ours and found.data["by"] == "userId:5000177"
    assert found.data["source"] == "CRM_UI" and found.data["after_seconds"] >= 0
    assert metrics.snapshot().overrides == {found.data["rule"]: 1}
    assert enqueue.calls == []  # neither the echoes nor the person's change routes anything

    with connector("hubspot") as c:  # a later sweep keeps the person's choice
        Pipeline(c, routing, sqlite_store).sweep("companies", full=True)
    assert sim.owner_of("hubspot", "companies", unowned[0]) == other
    assert len(overrides(sqlite_store)) == 1


@pytest.mark.parametrize("seen_by", ["sweep", "webhook"])
def test_given_a_person_reassigns_in_salesforce_when_seen_then_one_override_by_that_user(
        sim, running, sqlite_store, seen_by):
    routing = load_routing(EXAMPLE)
    with connector("salesforce") as c:
        Pipeline(c, routing, sqlite_store).sweep("Account", full=True)
        routed = sqlite_store.owner_marks("salesforce", "Account", sim.ids("salesforce", "Account"))
        record_id, mark = sorted(routed.items())[0]
        other = sf_id("005", 101) if mark.owner != sf_id("005", 101) else sf_id("005", 102)

        sim.reassign("salesforce", "Account", record_id, other, by=MANAGER)
        if seen_by == "sweep":
            Pipeline(c, routing, sqlite_store).sweep("Account")
        else:  # the route an Outbound Message hands the workers
            Pipeline(c, routing, sqlite_store).route_ids("Account", [record_id], trigger="webhook")
        Pipeline(c, routing, sqlite_store).sweep("Account", full=True)

    [found] = overrides(sqlite_store)
    assert found.record_id == record_id and found.object == "account"
    assert found.data["from_crm_id"] == mark.owner and found.data["to_crm_id"] == other
    assert found.data["by"] == MANAGER and found.data["source"] == seen_by
    assert sim.owner_of("salesforce", "Account", record_id) == other
