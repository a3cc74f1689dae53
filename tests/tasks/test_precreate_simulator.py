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
