"""company_match with HubSpot, end to end against the CRM simulator: a contact whose domain has
no company follows the company its own company name matches (webhook and sweep paths), and
`POST /route` looks the names up too, within a bound, or says in the trace why it did not."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from connectors import registry
from connectors.settings import Settings
from connectors.simulator import Simulator
from connectors.simulator.server import RunningSimulator
from connectors.transport import Unlimited
from sync.compiler import load_routing
from sync.history import History
from sync.pipeline import Pipeline
from sync.state.sqlite import SqliteStateStore
from tasks.http import create_app
from tasks.http.common import Settings as AppSettings
from tasks.http.lookup import AccountLookup
from tasks.metrics import LocalMetrics
from tests.tasks.test_http import AUTH, RecordingEnqueue

ROUTING = """version: 1
reps:
  - {id: ana, crm_ids: {hubspot: '101'}}
  - {id: bo, crm_ids: {hubspot: '102'}}
rules:
  - {name: follow-account, when: {object: contact}, assign: {account_owner: true}}
fallback: {rep: bo}
enrich: [company_match]
"""


@pytest.fixture
def sim() -> Simulator:
    simulator = Simulator(seed=7)
    simulator.seed(companies=0, contacts=0, accounts=0, leads=0, owners=4, days=1)
    simulator.hubspot_create("companies", {"name": "ACME Corp.", "domain": "acme.com",
                                           "hubspot_owner_id": "101"})
    simulator.hubspot_create("companies", {"name": "Acme Widgets Europe",
                                           "domain": "acme-widgets.example",
                                           "hubspot_owner_id": "102"})
    return simulator


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStateStore]:
    opened = SqliteStateStore(tmp_path / "state.db")
    yield opened
    opened.close()


@pytest.fixture
def routing_path(tmp_path: Path) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(ROUTING)
    return path


def connector() -> Any:
    return closing(registry.create("hubspot", Settings(), limiter=Unlimited(),
                                   transport_sleep=lambda _: None))


def test_given_a_freemail_contact_of_acme_when_webhooked_then_it_follows_acmes_company_owner(
    sim: Simulator, running: RunningSimulator, store: SqliteStateStore, routing_path: Path,
) -> None:
    created = sim.hubspot_create("contacts", {"email": "wile@gmail.com",
                                              "company": "Acme Corporation"})
    with connector() as c:
        Pipeline(c, load_routing(routing_path), store).route_ids(
            "contacts", [created], trigger="webhook")

    assert sim.owner_of("hubspot", "contacts", created) == "101"
    with History(store.url) as history:
        [decision] = history.decisions(record_id=created)
    assert (decision.owner, decision.rule) == ("ana", "follow-account")
    step = decision.trace[0]
    assert (step.rule, step.result) == ("enrich company_match", "enriched")
    assert step.detail == ("domain = acme.com from name 'Acme Corporation' ~ account "
                           "'ACME Corp.' (100)")
    searched = sim.stats("hubspot")["calls"]["POST /crm/v3/objects/companies/search"]
    assert searched == {"200": 2}  # the name search, then the matched domain's owner


def test_given_contacts_with_unknown_domains_when_swept_then_only_name_matches_follow_accounts(
    sim: Simulator, running: RunningSimulator, store: SqliteStateStore, routing_path: Path,
) -> None:
    acme = sim.hubspot_create("contacts", {"email": "road@runner-mail.example",
                                           "company": "ACME Corporation"})
    other = sim.hubspot_create("contacts", {"email": "x@nowhere.example",
                                            "company": "Initech"})
    with connector() as c:
        report = Pipeline(c, load_routing(routing_path), store).sweep(
            "contacts", now=datetime.now(UTC) + timedelta(seconds=1))

    assert report.rules == {"follow-account": 1, "(fallback)": 1}
    assert sim.owner_of("hubspot", "contacts", acme) == "101"
    assert sim.owner_of("hubspot", "contacts", other) == "102"


# --- POST /route ---------------------------------------------------------------------------


def app_for(store: SqliteStateStore, routing_path: Path, deadline: float | None = None
            ) -> TestClient:
    settings = AppSettings.model_validate({"api_token": "ops-token",
                                           "config": str(routing_path)})
    app = create_app(settings, store, RecordingEnqueue(), metrics=LocalMetrics())
    if deadline is not None:
        app.state.ctx.account_lookup = AccountLookup(deadline=deadline)
    return TestClient(app)


def route(api: TestClient, record: dict[str, Any], key: str) -> dict[str, Any]:
    response = api.post("/route", headers=AUTH, json={
        "crm": "hubspot", "object": "contacts", "record": record, "idempotency_key": key})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


FORM = {"email": "wile@gmail.com", "company": "Acme Corporation"}


def test_given_company_match_when_a_form_is_routed_then_it_follows_the_matched_company_owner(
    sim: Simulator, running: RunningSimulator, store: SqliteStateStore, routing_path: Path,
) -> None:
    with app_for(store, routing_path) as api:
        answer = route(api, FORM, "form-1")
        again = route(api, {**FORM, "email": "coyote@yahoo.com"}, "form-2")

    assert answer["owner"] == {"id": "ana", "name": None, "email": None, "crm_id": "101"}
    assert answer["rule"] == "follow-account"
    assert answer["trace"][0] == {
        "rule": "enrich company_match", "result": "enriched",
        "detail": "domain = acme.com from name 'Acme Corporation' ~ account 'ACME Corp.' (100)"}
    assert again["owner"]["id"] == "ana"
    # Per form: the name search and the matched domain's owner; one connector for both forms.
    searched = sim.stats("hubspot")["calls"]["POST /crm/v3/objects/companies/search"]
    assert searched == {"200": 4}


def test_given_no_hubspot_token_when_a_form_is_routed_then_it_routes_without_the_match(
    store: SqliteStateStore, routing_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN", raising=False)
    with app_for(store, routing_path) as api:
        answer = route(api, FORM, "form-1")

    assert (answer["owner"]["id"], answer["outcome"]) == ("bo", "fallback")
    assert answer["trace"][0] == {
        "rule": "enrich company_match", "result": "skipped",
        "detail": "hubspot is not configured here or refused its credentials "
                  "(HUBSPOT_ACCESS_TOKEN); no account looked up"}


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """HubSpot configured with a token, at a loopback port nothing listens on."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "pat-secret-token")
    monkeypatch.setenv("ACCOUNT_ROUTER_HUBSPOT_BASE_URL", f"http://127.0.0.1:{port}")


@pytest.mark.usefixtures("unreachable")
def test_given_hubspot_unreachable_when_a_form_is_routed_then_it_routes_without_the_match(
    store: SqliteStateStore, routing_path: Path,
) -> None:
    with app_for(store, routing_path) as api:
        answer = route(api, FORM, "form-1")
        history = api.get("/decisions/api:form-1", headers=AUTH).json()

    assert answer["owner"]["id"] == "bo"
    assert answer["trace"][0] == {"rule": "enrich company_match", "result": "skipped",
                                  "detail": "hubspot not reachable; no account looked up"}
    assert history[0]["trace"][0]["result"] == "skipped"  # audited as answered
    assert "pat-secret-token" not in json.dumps(answer)


def test_given_hubspot_hangs_when_a_form_is_routed_then_it_is_answered_at_the_deadline(
    sim: Simulator, running: RunningSimulator, store: SqliteStateStore, routing_path: Path,
) -> None:
    sim.configure_faults(timeout_rate=1.0, timeout_sleep_s=5.0)
    with app_for(store, routing_path, deadline=0.5) as api:
        started = time.monotonic()
        answer = route(api, FORM, "form-1")
        took = time.monotonic() - started

    assert 0.5 <= took < 2.0  # never the transport's retries, never the 5 s stall
    assert answer["owner"]["id"] == "bo"
    assert answer["trace"][0] == {
        "rule": "enrich company_match", "result": "skipped",
        "detail": "hubspot did not answer within 0.5 s; no account looked up"}


def test_given_other_steps_when_the_lookup_is_skipped_then_they_still_run_in_file_order(
    store: SqliteStateStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN", raising=False)
    path = tmp_path / "steps.yaml"
    path.write_text(ROUTING.replace("enrich: [company_match]",
                                    "enrich: [state_codes, tld_country, company_match]"))
    with app_for(store, path) as api:
        answer = route(api, {"email": "jo@beispiel.de", "company": "Beispiel GmbH"}, "form-1")

    assert [(s["rule"], s["result"]) for s in answer["trace"][:2]] == [
        ("enrich tld_country", "enriched"), ("enrich company_match", "skipped")]


def test_given_hubspots_daily_quota_spent_when_a_form_is_routed_then_the_trace_says_so(
    sim: Simulator, running: RunningSimulator, store: SqliteStateStore, routing_path: Path,
) -> None:
    sim.hubspot_admit("another-app", search=False)  # a call today, by whoever
    sim.configure_limits(hubspot_daily=sim.stats("hubspot")["daily_used"])  # the last one
    with app_for(store, routing_path) as api:
        answer = route(api, FORM, "form-1")

    assert answer["owner"]["id"] == "bo"
    assert answer["trace"][0] == {
        "rule": "enrich company_match", "result": "skipped",
        "detail": "hubspot's daily API quota is spent; no account looked up"}


# --- POST /route with `account_owner` and no enrichment -------------------------------------

FOLLOW_ONLY = ROUTING.replace("enrich: [company_match]\n", "")


def test_given_an_account_owner_rule_when_a_form_of_a_known_domain_is_routed_then_it_follows(
    sim: Simulator, running: RunningSimulator, store: SqliteStateStore, tmp_path: Path,
) -> None:
    path = tmp_path / "follow.yaml"
    path.write_text(FOLLOW_ONLY)
    with app_for(store, path) as api:
        known = route(api, {"email": "wile@acme.com"}, "form-1")
        freemail = route(api, {"email": "wile@gmail.com"}, "form-2")

    assert (known["owner"]["id"], known["rule"]) == ("ana", "follow-account")
    # gmail.com is nobody's company: no CRM read for it, and the fallback takes it.
    assert (freemail["owner"]["id"], freemail["outcome"]) == ("bo", "fallback")
    searched = sim.stats("hubspot")["calls"]["POST /crm/v3/objects/companies/search"]
    assert searched == {"200": 1}  # acme.com's owner only


@pytest.mark.usefixtures("unreachable")
def test_given_an_account_owner_rule_and_hubspot_unreachable_then_the_trace_says_why(
    store: SqliteStateStore, tmp_path: Path,
) -> None:
    path = tmp_path / "follow.yaml"
    path.write_text(FOLLOW_ONLY)
    with app_for(store, path) as api:
        answer = route(api, {"email": "wile@acme.com"}, "form-1")

    assert (answer["owner"]["id"], answer["outcome"]) == ("bo", "fallback")
    assert answer["trace"][0] == {
        "rule": "account owner lookup", "result": "skipped",
        "detail": "hubspot not reachable; no account owner looked up"}
