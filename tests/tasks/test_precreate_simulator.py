"""POST /route, then the record appears in the CRM simulator: swept or webhooked, it is written
with the owner the API answered, no second pool turn taken, and the decision is used once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from connectors.settings import Settings
from connectors.simulator import Simulator
from connectors.simulator.schema import sf_id
from connectors.simulator.server import RunningSimulator
from sync.compiler import load_routing
from sync.history import History
from sync.pipeline import Pipeline
from sync.state import open_store
from sync.state.sqlite import SqliteStateStore
from tasks.http import create_app
from tasks.metrics import LocalMetrics
from tests.builders import connector, empty_crm, write_routing
from tests.tasks.test_http import AUTH, RecordingEnqueue

ROUTING = f"""version: 1
reps:
  - {{id: ana, name: Ana, email: ana@example.com,
     crm_ids: {{hubspot: '101', salesforce: {sf_id("005", 101)}}}}}
  - {{id: bo, crm_ids: {{hubspot: '102', salesforce: {sf_id("005", 102)}}}}}
  - {{id: cy, crm_ids: {{hubspot: '103', salesforce: {sf_id("005", 103)}}}}}
pools:
  inbound: {{members: [ana, bo, cy], strategy: round_robin}}
rules:
  - {{name: inbound, assign: {{pool: inbound}}}}
"""


@pytest.fixture
def sim() -> Simulator:
    return empty_crm(11, owners=10, days=1)


@pytest.fixture
def routing_path(tmp_path: Path) -> Path:
    return write_routing(tmp_path, ROUTING)


@pytest.fixture
def api(sqlite_store: SqliteStateStore, routing_path: Path) -> TestClient:
    settings = Settings.model_validate({"api_token": "ops-token", "config": str(routing_path)})
    return TestClient(create_app(settings, sqlite_store, RecordingEnqueue(),
                                 metrics=LocalMetrics()))


def route(api: TestClient, crm: str, obj: str, record: dict[str, Any], key: str
          ) -> dict[str, Any]:
    response = api.post("/route", headers=AUTH, json={
        "crm": crm, "object": obj, "record": record, "idempotency_key": key})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def turns(store: SqliteStateStore) -> int:
    """Pool turns taken so far (each commit that takes one moves the version by one)."""
    return store.load_pools({"inbound": {}})["inbound"].version


def test_given_a_routed_form_when_its_hubspot_contact_is_webhooked_then_written_as_answered(
    sim: Simulator, running: RunningSimulator, sqlite_store: SqliteStateStore, api: TestClient,
    routing_path: Path,
) -> None:
    route(api, "hubspot", "contacts", {"email": "x@other.com"}, "warm-up")  # ana's turn
    answer = route(api, "hubspot", "contacts",
                   {"email": "Ann@Acme.com", "firstname": "Ann", "company": "Acme"}, "form-1")
    assert answer["owner"]["id"] == "bo"
    assert turns(sqlite_store) == 2

    created = sim.hubspot_create("contacts", {"email": "ann@acme.com", "company": "Acme"})
    with connector("hubspot") as c:
        Pipeline(c, load_routing(routing_path), sqlite_store).route_ids(
            "contacts", [created], trigger="webhook")

    assert sim.owner_of("hubspot", "contacts", created) == "102"
    assert turns(sqlite_store) == 2  # no second turn: the round robin is where the API left it
    with History(sqlite_store.url) as history:
        [written] = history.decisions(record_id=created)
    assert (written.owner, written.rule, written.trigger) == ("bo", "inbound", "webhook")
    assert written.reason.startswith(f"decided by POST /route at {answer['decided_at']}")
    assert written.written_at is not None
    assert [s.to_dict() for s in written.trace] == answer["trace"]

    # Used once: the next contact with that email is routed by the rules (cy's turn).
    again = sim.hubspot_create("contacts", {"email": "ann@acme.com"})
    with connector("hubspot") as c:
        Pipeline(c, load_routing(routing_path), sqlite_store).route_ids(
            "contacts", [again], trigger="webhook")
    assert sim.owner_of("hubspot", "contacts", again) == "103"
    assert turns(sqlite_store) == 3


def test_given_a_routed_lead_when_swept_from_salesforce_then_the_same_domain_gets_it_once(
    sim: Simulator, running: RunningSimulator, sqlite_store: SqliteStateStore, api: TestClient,
    routing_path: Path,
) -> None:
    answer = route(api, "salesforce", "Lead",
                   {"Email": "jo@beispiel.de", "Company": "Beispiel GmbH", "LastName": "Jo"},
                   "lead-1")
    assert answer["owner"] == {"id": "ana", "name": "Ana", "email": "ana@example.com",
                               "crm_id": sf_id("005", 101)}

    # Another person of the same company fills in the CRM; an unrelated lead, and a free-mail
    # one, appear too: they go by the rules.
    colleague = sim.salesforce_create("Lead", {"Email": "max@beispiel.de",
                                               "Company": "Beispiel GmbH", "LastName": "Max"})
    other = sim.salesforce_create("Lead", {"Email": "li@elsewhere.com", "Company": "Else",
                                           "LastName": "Li"})
    with connector("salesforce") as c:
        report = Pipeline(c, load_routing(routing_path), sqlite_store).sweep("Lead", full=True)

    assert report.written == 2
    assert sim.owner_of("salesforce", "Lead", colleague) == sf_id("005", 101)
    assert sim.owner_of("salesforce", "Lead", other) == sf_id("005", 102)
    assert turns(sqlite_store) == 2  # the API's turn and the unrelated lead's, nothing more


def test_given_a_decision_older_than_precreate_ttl_when_the_record_appears_then_rules_decide(
    sim: Simulator, running: RunningSimulator, sqlite_store: SqliteStateStore, routing_path: Path,
) -> None:
    routing_path.write_text(ROUTING + "precreate_ttl: 1h\n")
    settings = Settings.model_validate({"api_token": "ops-token", "config": str(routing_path)})
    then = sim.clock() - 2 * 3600
    api = TestClient(create_app(settings, sqlite_store, RecordingEnqueue(), clock=lambda: then,
                                metrics=LocalMetrics()))
    route(api, "hubspot", "contacts", {"email": "ann@acme.com"}, "old-form")

    created = sim.hubspot_create("contacts", {"email": "ann@acme.com"})
    with connector("hubspot") as c:
        Pipeline(c, load_routing(routing_path), sqlite_store).route_ids(
            "contacts", [created], trigger="webhook")

    assert sim.owner_of("hubspot", "contacts", created) == "102"  # bo: the next turn
    assert turns(sqlite_store) == 2


def test_given_the_write_fails_when_the_record_is_retried_then_the_api_owner_is_written(
    sim: Simulator, running: RunningSimulator, sqlite_store: SqliteStateStore, api: TestClient,
    routing_path: Path,
) -> None:
    route(api, "salesforce", "Lead", {"Email": "jo@beispiel.de", "LastName": "Jo"}, "lead-1")
    lead = sim.salesforce_create("Lead", {"Email": "jo@beispiel.de", "Company": "Beispiel",
                                          "LastName": "Jo"})
    sim.configure_faults(lock_error_rate=1.0)  # every owner write fails: UNABLE_TO_LOCK_ROW
    with connector("salesforce") as c:
        failed = Pipeline(c, load_routing(routing_path), sqlite_store).sweep("Lead", full=True)
    assert failed.write_failed == 1 and sim.owner_of("salesforce", "Lead", lead) is None

    sim.clear_faults()
    with connector("salesforce") as c:
        retried = Pipeline(c, load_routing(routing_path), sqlite_store).sweep("Lead")

    assert retried.written == 1
    assert sim.owner_of("salesforce", "Lead", lead) == sf_id("005", 101)  # ana, as answered
    assert turns(sqlite_store) == 1


# The same team, every decision held for review.
REVIEWED = ROUTING.replace("assign: {pool: inbound}}", "assign: {pool: inbound}, review: true}")


def counts(sqlite_store: SqliteStateStore, window: str) -> dict[str, int]:
    """Each member's pool count in `window`."""
    snap = sqlite_store.load_pools({"inbound": {m: window for m in ("ana", "bo", "cy")}})["inbound"]
    return {m: snap.counts.get(m, 0) for m in ("ana", "bo", "cy")}


def test_given_a_form_held_for_review_when_its_contact_is_webhooked_then_reviewed_as_proposed(
    sim: Simulator, running: RunningSimulator, sqlite_store: SqliteStateStore, api: TestClient,
    routing_path: Path,
) -> None:
    routing_path.write_text(REVIEWED)
    route(api, "hubspot", "contacts", {"email": "x@other.com"}, "warm-up")  # ana's turn
    answer = route(api, "hubspot", "contacts",
                   {"email": "Ann@Acme.com", "firstname": "Ann", "company": "Acme"}, "form-1")
    # Held for review: no owner to create the record with; the proposal (bo) is in the reason.
    assert (answer["outcome"], answer["owner"]) == ("pending_review", None)
    assert "-> bo; held for review" in answer["reason"]
    assert turns(sqlite_store) == 2
    # Nothing to approve while the record does not exist.
    assert api.get("/review", headers=AUTH).json() == {"items": []}

    created = sim.hubspot_create("contacts", {"email": "ann@acme.com", "company": "Acme"})
    for _ in range(2):  # the creation, then a property change: one item, one proposal
        with connector("hubspot") as c:
            Pipeline(c, load_routing(routing_path), sqlite_store).route_ids(
                "contacts", [created], trigger="webhook")

    # The CRM record waits for review with the API's proposal, and no second turn was taken
    # (routed again, it would have been cy's turn).
    [item] = api.get("/review", headers=AUTH).json()["items"]
    assert (item["record_id"], item["proposed_owner"], item["rule"]) == (
        created, "bo", "inbound")
    assert item["reason"].startswith(f"decided by POST /route at {answer['decided_at']}: ")
    assert turns(sqlite_store) == 2
    [held] = sqlite_store.reviews()
    assert held.window is not None
    assert counts(sqlite_store, held.window) == {"ana": 1, "bo": 1, "cy": 0}
    assert sim.owner_of("hubspot", "contacts", created) is None  # nothing written yet
    with History(sqlite_store.url) as history:
        [pending] = history.decisions(record_id=created)
    assert (pending.outcome, pending.owner, pending.trigger) == ("pending_review", "bo",
                                                                 "webhook")
    assert [s.to_dict() for s in pending.trace] == answer["trace"]

    # Approved: written once, to the proposal; the turn still counted once.
    first = api.post(f"/review/{item['id']}/approve", headers=AUTH, json={"by": "maya"})
    second = api.post(f"/review/{item['id']}/approve", headers=AUTH)

    assert first.status_code == 200, first.text
    assert first.json()["status"] == "approved"
    assert second.status_code == 409
    assert sim.owner_of("hubspot", "contacts", created) == "102"
    assert sim.stats("hubspot")["records_updated"] == 1
    assert turns(sqlite_store) == 2
    assert counts(sqlite_store, held.window) == {"ana": 1, "bo": 1, "cy": 0}
    with History(sqlite_store.url) as history:
        decisions = history.decisions(record_id=created)
    assert sorted((d.outcome, d.trigger, d.written_at is not None) for d in decisions) == [
        ("assigned", "review", True), ("pending_review", "webhook", False)]


def test_given_a_lead_held_for_review_when_swept_and_reassigned_then_the_count_moves_once(
    sim: Simulator, running: RunningSimulator, sqlite_store: SqliteStateStore, api: TestClient,
    routing_path: Path,
) -> None:
    routing_path.write_text(REVIEWED)
    answer = route(api, "salesforce", "Lead",
                   {"Email": "jo@beispiel.de", "Company": "Beispiel GmbH", "LastName": "Jo"},
                   "lead-1")
    assert (answer["outcome"], answer["owner"]) == ("pending_review", None)

    # A colleague of the same company appears (matched by domain): it takes the proposal.
    lead = sim.salesforce_create("Lead", {"Email": "max@beispiel.de",
                                          "Company": "Beispiel GmbH", "LastName": "Max"})
    with connector("salesforce") as c:
        report = Pipeline(c, load_routing(routing_path), sqlite_store).sweep("Lead", full=True)

    assert report.written == 0
    [item] = sqlite_store.reviews()
    assert (item.record_id, item.proposed_owner, item.object) == (lead, "ana", "Lead")
    assert item.window is not None
    assert turns(sqlite_store) == 1
    assert counts(sqlite_store, item.window) == {"ana": 1, "bo": 0, "cy": 0}

    # Reassigned: cy is written, and the API's one count moves from ana to cy.
    done = api.post(f"/review/{item.id}/reassign", headers=AUTH, json={"rep": "cy"})

    assert done.status_code == 200, done.text
    assert done.json()["status"] == "reassigned"
    assert sim.owner_of("salesforce", "Lead", lead) == sf_id("005", 103)
    assert counts(sqlite_store, item.window) == {"ana": 0, "bo": 0, "cy": 1}


def test_given_a_review_proposal_older_than_precreate_ttl_when_its_record_appears_then_rules(
    sim: Simulator, running: RunningSimulator, sqlite_store: SqliteStateStore, routing_path: Path,
) -> None:
    routing_path.write_text(REVIEWED + "precreate_ttl: 1h\n")
    settings = Settings.model_validate({"api_token": "ops-token", "config": str(routing_path)})
    then = sim.clock() - 2 * 3600
    api = TestClient(create_app(settings, sqlite_store, RecordingEnqueue(), clock=lambda: then,
                                metrics=LocalMetrics()))
    route(api, "hubspot", "contacts", {"email": "ann@acme.com"}, "old-form")  # ana proposed

    created = sim.hubspot_create("contacts", {"email": "ann@acme.com"})
    with connector("hubspot") as c:
        Pipeline(c, load_routing(routing_path), sqlite_store).route_ids(
            "contacts", [created], trigger="webhook")

    # Unclaimed in time, the proposal lapsed: the rules decide anew (bo, a turn of its own),
    # and the API's turn stays counted, as for an owner never written.
    [item] = sqlite_store.reviews()
    assert (item.record_id, item.proposed_owner) == (created, "bo")
    assert not item.reason.startswith("decided by POST /route")
    assert turns(sqlite_store) == 2


def test_given_redis_state_when_a_form_held_for_review_gets_its_contact_then_one_item_one_turn(
    sim: Simulator, running: RunningSimulator, redis_url: str, routing_path: Path,
) -> None:
    routing_path.write_text(REVIEWED)
    settings = Settings.model_validate({"api_token": "ops-token", "config": str(routing_path)})
    with open_store(redis_url) as store:
        api = TestClient(create_app(settings, store, RecordingEnqueue(),
                                    metrics=LocalMetrics()))
        route(api, "hubspot", "contacts", {"email": "x@other.com"}, "warm-up")  # ana's turn
        route(api, "hubspot", "contacts", {"email": "ann@acme.com"}, "form-1")  # bo proposed

        created = sim.hubspot_create("contacts", {"email": "ann@acme.com"})
        for _ in range(2):
            with connector("hubspot") as c:
                Pipeline(c, load_routing(routing_path), store).route_ids(
                    "contacts", [created], trigger="webhook")

        [item] = store.reviews()
        assert (item.record_id, item.proposed_owner, item.window is not None) == (
            created, "bo", True)
        assert store.load_pools({"inbound": {}})["inbound"].version == 2

        done = api.post(f"/review/{item.id}/approve", headers=AUTH)

        assert done.status_code == 200, done.text
        assert sim.owner_of("hubspot", "contacts", created) == "102"
        assert sim.stats("hubspot")["records_updated"] == 1
        assert store.load_pools({"inbound": {}})["inbound"].version == 2
