"""POST /route: a record not in the CRM yet routed for real (a pool turn, audited with trigger
`api`), idempotent by key (also under concurrent requests), and bad bodies a clear 4xx."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from sync.history import History
from sync.state import StateStore, open_store
from sync.state.sqlite import SqliteStateStore
from tasks.http import create_app
from tasks.http import route as route_module
from tasks.http.route import RouteBody, decide_once
from tasks.metrics import LocalMetrics
from tests.builders import write_routing
from tests.loopback import free_port
from tests.tasks.test_http import AUTH, NOW, RecordingEnqueue, make_settings

DECIDED_AT = datetime.fromtimestamp(NOW, UTC)

ROUTING = """version: 1
reps:
  - {id: ana, name: Ana Lima, email: ana@example.com,
     crm_ids: {hubspot: '101', salesforce: 0055g000001AbCdAAA}}
  - {id: bo, name: Bo Chen, email: bo@example.com,
     crm_ids: {hubspot: '102', salesforce: 0055g000001AbCeAAA}}
  - {id: cy, crm_ids: {hubspot: '103', salesforce: 0055g000001AbCfAAA}}
pools:
  inbound: {members: [ana, bo, cy], strategy: round_robin}
rules:
  - name: germany
    when: {country: {eq: DE}}
    assign: {rep: cy}
  - name: inbound
    when: {employees: {lt: 100000}}
    assign: {pool: inbound}
"""


@pytest.fixture
def routing_path(tmp_path: Path) -> Path:
    return write_routing(tmp_path, ROUTING)


@pytest.fixture
def route_client(sqlite_store: StateStore, routing_path: Path) -> TestClient:
    return TestClient(create_app(make_settings(config=str(routing_path)), sqlite_store,
                                 RecordingEnqueue(), clock=lambda: NOW, metrics=LocalMetrics()))


def contact(key: str = "form-1", **fields: object) -> dict[str, Any]:
    record: dict[str, object] = {"email": "ann@acme.com", "company": "Acme",
                                 "numemployees": "250"}
    record.update(fields)
    return {"crm": "hubspot", "object": "contacts", "record": record, "idempotency_key": key}


def post(client: TestClient, body: object, headers: dict[str, str] | None = None) -> Response:
    return client.post("/route", content=json.dumps(body),
                       headers={**AUTH, "Content-Type": "application/json"}
                       if headers is None else headers)


# --- authentication and limits --------------------------------------------------------------


def test_given_no_token_when_routing_then_401_and_no_turn_taken(
    route_client: TestClient, sqlite_store: StateStore,
) -> None:
    response = post(route_client, contact(), headers={"Content-Type": "application/json"})

    assert response.status_code == 401
    assert sqlite_store.load_pools({"inbound": {}})["inbound"].version == 0


def test_given_a_wrong_token_when_routing_then_401(route_client: TestClient) -> None:
    response = post(route_client, contact(), headers={"Authorization": "Bearer nope"})

    assert response.status_code == 401


def test_given_no_token_and_a_bad_body_when_routing_then_401_before_the_body_is_read(
    route_client: TestClient,
) -> None:
    response = route_client.post("/route", content=b"{not json",
                                 headers={"Content-Type": "application/json"})

    assert response.status_code == 401
    assert response.json() == {"error": "missing or wrong bearer token"}


@pytest.mark.parametrize(("content", "headers", "named"), [
    (b"", {"Content-Type": "application/json"}, "body: Field required"),
    (b"{not json", {"Content-Type": "application/json"}, "body.1: JSON decode error"),
    (b'{"crm": "\xff"}', {"Content-Type": "application/json"},
     "There was an error parsing the body"),
    (b"[" * 100_000, {"Content-Type": "application/json"}, "There was an error parsing"),
    (b"[1]", {"Content-Type": "application/json"}, "body: Input should be a valid dictionary"),
    (json.dumps(contact()).encode(), {"Content-Type": "text/plain"},
     "body: Input should be a valid dictionary"),
    (json.dumps(contact()).encode(), {}, "body: Input should be a valid dictionary"),
])
def test_given_a_body_fastapi_would_refuse_when_routing_then_the_same_400(
    route_client: TestClient, content: bytes, headers: dict[str, str], named: str,
) -> None:
    response = route_client.post("/route", content=content, headers={**AUTH, **headers})

    assert response.status_code == 400
    assert response.json()["error"].startswith(named)


def test_given_an_application_json_variant_when_routing_then_the_body_is_read_as_json(
    route_client: TestClient,
) -> None:
    response = route_client.post(
        "/route", content=json.dumps(contact()),
        headers={**AUTH, "Content-Type": "application/vnd.form+json; charset=utf-8"})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["owner"]["id"] == "ana"


def test_given_other_methods_or_paths_when_called_then_the_router_answers_them(
    route_client: TestClient,
) -> None:
    assert route_client.get("/route", headers=AUTH).status_code == 405
    assert post(route_client, contact(), headers=None).status_code == 200
    assert route_client.post("/route/", content=json.dumps(contact()),
                             headers=AUTH).status_code == 404


def test_given_a_body_over_one_mib_when_routing_then_413(route_client: TestClient) -> None:
    response = post(route_client, contact(notes="x" * (1 << 20)))

    assert response.status_code == 413


# --- bad bodies name the field --------------------------------------------------------------


@pytest.mark.parametrize(("body", "status", "named"), [
    ({"crm": "hubspot", "object": "contacts", "idempotency_key": "k"}, 400, "body.record"),
    ({**contact(), "idempotency_key": 5}, 400, "body.idempotency_key"),
    ({**contact(), "idempotency_key": ""}, 400, "body.idempotency_key"),
    ({**contact(), "record": ["email"]}, 400, "body.record"),
    ({**contact(), "record": {"email": {"nested": 1}}}, 400, "body.record.email"),
    ({**contact(), "record": {"numemployees": float("inf")}}, 400, "body.record.numemployees"),
    ({**contact(), "crm": ["hubspot"]}, 400, "body.crm"),
    ({**contact(), "extra": 1}, 400, "body.extra"),
    ({**contact(), "record": {f"f{i}": "x" for i in range(501)}}, 400, "body.record"),
    ({**contact(), "record": {"e\x00mail": "x"}}, 400, "body.record.e"),
    ({**contact(), "idempotency_key": "k" * 201}, 400, "body.idempotency_key"),
    ({**contact(), "crm": "pipedrive"}, 422, "crm: unknown CRM 'pipedrive'"),
    ({**contact(), "object": "tickets"}, 422, "object: unknown hubspot object 'tickets'"),
])
def test_given_a_bad_body_when_routing_then_4xx_naming_the_field_and_no_turn_taken(
    route_client: TestClient, sqlite_store: StateStore, body: dict[str, object], status: int,
    named: str,
) -> None:
    response = post(route_client, body)

    assert response.status_code == status, response.text
    assert response.json()["error"].startswith(named)
    assert sqlite_store.load_pools({"inbound": {}})["inbound"].version == 0


def test_given_a_body_that_is_not_json_when_routing_then_400(route_client: TestClient) -> None:
    response = route_client.post("/route", content=b"{not json",
                                 headers={**AUTH, "Content-Type": "application/json"})

    assert response.status_code == 400


# --- the decision ---------------------------------------------------------------------------


def test_given_a_form_record_when_routed_then_the_answer_names_the_owner_rule_and_trace(
    route_client: TestClient,
) -> None:
    response = post(route_client, contact())

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer == {
        "owner": {"id": "ana", "name": "Ana Lima", "email": "ana@example.com",
                  "crm_id": "101"},
        "outcome": "assigned",
        "rule": "inbound",
        "reason": answer["reason"],
        "trace": answer["trace"],
        "decided_at": DECIDED_AT.isoformat(),
    }
    assert [s["rule"] for s in answer["trace"]] == ["germany", "inbound"]
    assert answer["trace"][-1]["result"] == "won"


def test_given_three_forms_when_routed_then_the_round_robin_advances_one_turn_each(
    route_client: TestClient, sqlite_store: StateStore,
) -> None:
    owners = [post(route_client, contact(f"form-{i}", email=f"p{i}@acme.com")).json()
              ["owner"]["id"] for i in range(4)]

    assert owners == ["ana", "bo", "cy", "ana"]
    assert sqlite_store.load_pools({"inbound": {}})["inbound"].version == 4


def test_given_a_salesforce_lead_when_routed_then_its_fields_map_and_the_crm_id_is_salesforces(
    route_client: TestClient,
) -> None:
    body = {"crm": "salesforce", "object": "lead", "idempotency_key": "sf-1",
            "record": {"Email": "jo@beispiel.de", "Company": "Beispiel", "Country": "Germany",
                       "OwnerId": "0055g000001AbCdAAA"}}

    answer = post(route_client, body).json()

    assert answer["rule"] == "germany"
    assert answer["owner"]["crm_id"] == "0055g000001AbCfAAA"


def test_given_no_rule_matches_when_routed_then_owner_null_and_unassigned(
    route_client: TestClient,
) -> None:
    answer = post(route_client, contact(numemployees="250000")).json()

    assert answer["owner"] is None
    assert answer["outcome"] == "unassigned"


def test_given_a_routed_form_then_the_history_has_it_with_trigger_api(
    route_client: TestClient, sqlite_store: StateStore,
) -> None:
    post(route_client, contact("form-9"))

    assert isinstance(sqlite_store, SqliteStateStore)
    with History(sqlite_store.url) as history:
        found = history.decisions(record_id="api:form-9")
    assert [(d.trigger, d.owner, d.rule, d.crm, d.object) for d in found] == [
        ("api", "ana", "inbound", "hubspot", "contact")]
    listed = route_client.get("/decisions/api:form-9", headers=AUTH).json()
    assert listed[0]["trigger"] == "api"


def test_given_routed_forms_then_each_decision_is_counted_once(
    sqlite_store: StateStore, routing_path: Path,
) -> None:
    metrics = LocalMetrics()
    client = TestClient(create_app(make_settings(config=str(routing_path)), sqlite_store,
                                   RecordingEnqueue(), clock=lambda: NOW, metrics=metrics))

    assert post(client, contact("a")).status_code == 200
    assert post(client, contact("a")).status_code == 200  # the same answer: no second turn
    assert post(client, contact("b", country="DE")).status_code == 200

    assert dict(metrics.snapshot().decisions) == {("assigned", "inbound"): 1,
                                                  ("assigned", "germany"): 1}


def test_given_no_routing_file_when_routing_then_503_not_a_crash(
    sqlite_store: StateStore,
) -> None:
    client = TestClient(create_app(make_settings(config=None), sqlite_store, RecordingEnqueue(),
                                   clock=lambda: NOW, metrics=LocalMetrics()))

    response = post(client, contact())

    assert response.status_code == 503
    assert "routing file" in response.json()["error"]


# --- idempotency ----------------------------------------------------------------------------


def test_given_the_same_key_twice_when_routed_then_the_same_answer_and_one_turn(
    route_client: TestClient, sqlite_store: StateStore,
) -> None:
    first = post(route_client, contact("same")).json()
    again = post(route_client, contact("same")).json()
    other = post(route_client, contact("other", email="x@acme.com")).json()

    assert again == first
    assert other["owner"]["id"] == "bo"  # the retry took no turn
    assert sqlite_store.load_pools({"inbound": {}})["inbound"].version == 2


def test_given_a_key_reused_for_another_record_when_routed_then_422_naming_the_key(
    route_client: TestClient,
) -> None:
    post(route_client, contact("same"))

    response = post(route_client, contact("same", email="someone-else@acme.com"))

    assert response.status_code == 422
    assert response.json()["error"].startswith("idempotency_key: already used")


def test_given_a_refused_record_then_its_key_stays_free_for_a_corrected_retry(
    route_client: TestClient,
) -> None:
    assert post(route_client, {**contact("fix-me"), "object": "tickets"}).status_code == 422

    assert post(route_client, contact("fix-me")).status_code == 200


@pytest.fixture
def app_over(store_url: str, routing_path: Path) -> Iterator[tuple[Any, str]]:
    opened = open_store(store_url)
    try:
        app = create_app(make_settings(config=str(routing_path)), opened, RecordingEnqueue(),
                         clock=lambda: NOW, metrics=LocalMetrics())
        yield app, store_url
    finally:
        opened.close()


def test_given_concurrent_requests_with_one_key_then_one_turn_and_the_same_answer(
    app_over: tuple[Any, str],
) -> None:
    app, store_url = app_over
    ctx = app.state.ctx
    body = RouteBody.model_validate(contact("burst"))

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: decide_once(ctx, body), range(16)))

    assert all(a == answers[0] for a in answers)
    assert answers[0]["owner"]["id"] == "ana"
    with open_store(store_url) as store:
        assert store.load_pools({"inbound": {}})["inbound"].version == 1


def test_given_concurrent_requests_with_distinct_keys_then_each_takes_its_own_turn(
    app_over: tuple[Any, str],
) -> None:
    app, store_url = app_over
    ctx = app.state.ctx
    bodies = [RouteBody.model_validate(contact(f"k{i}", email=f"p{i}@acme.com"))
              for i in range(9)]

    with ThreadPoolExecutor(8) as pool:
        owners = [a["owner"]["id"] for a in pool.map(lambda b: decide_once(ctx, b), bodies)]

    assert sorted(owners) == ["ana"] * 3 + ["bo"] * 3 + ["cy"] * 3
    with open_store(store_url) as store:
        snapshot = store.load_pools({"inbound": {}})["inbound"]
    # Nine turns, in order (the rotation ends on its last member), committed in one batch or
    # several (requests that queue together share a commit).
    assert snapshot.last_served == "cy"
    assert 1 <= snapshot.version <= 9


def test_given_a_routed_form_then_its_decision_waits_for_the_record_by_email(
    route_client: TestClient, sqlite_store: StateStore,
) -> None:
    post(route_client, contact("form-1"))

    later = DECIDED_AT + timedelta(hours=1)
    entry = sqlite_store.take_precreated("hubspot", "contacts", "ann@acme.com", None, later)

    assert entry is not None
    assert (entry.decision.owner, entry.decision.rule) == ("ana", "inbound")
    assert entry.expires_at == DECIDED_AT + timedelta(hours=24)


def test_given_another_request_holds_the_key_too_long_when_routing_then_409_and_no_turn(
    route_client: TestClient, sqlite_store: StateStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(route_module, "WAIT_SECONDS", 0.05)
    key = hashlib.blake2b(b"held", digest_size=16).hexdigest()
    assert not sqlite_store.seen(f"route:{key}", 30)  # a request deciding it right now

    response = post(route_client, contact("held"))

    assert response.status_code == 409
    assert response.json()["error"].startswith("idempotency_key: ")
    assert sqlite_store.load_pools({"inbound": {}})["inbound"].version == 0


def test_given_a_rule_held_for_review_when_routed_then_pending_review_owner_null_and_kept(
    sqlite_store: StateStore, tmp_path: Path,
) -> None:
    path = tmp_path / "review.yaml"
    path.write_text(ROUTING.replace("assign: {pool: inbound}",
                                    "assign: {pool: inbound}\n    review: true"))
    client = TestClient(create_app(make_settings(config=str(path)), sqlite_store,
                                   RecordingEnqueue(), clock=lambda: NOW, metrics=LocalMetrics()))

    answer = post(client, contact()).json()

    assert (answer["outcome"], answer["owner"], answer["rule"]) == (
        "pending_review", None, "inbound")
    assert "-> ana; held for review" in answer["reason"]  # the proposal, named
    # Nothing to approve before the record exists: no review item yet...
    assert sqlite_store.reviews() == []
    # ...but the proposal waits for the record, with the window its turn was counted in.
    entry = sqlite_store.take_precreated("hubspot", "contacts", "ann@acme.com", None,
                                         DECIDED_AT)
    assert entry is not None
    assert (entry.decision.outcome, entry.decision.owner) == ("pending_review", "ana")
    assert entry.window is not None and entry.window.startswith("day:")


def test_given_the_state_store_unreachable_when_routing_then_503_not_a_crash(
    routing_path: Path,
) -> None:
    store = open_store(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        client = TestClient(create_app(make_settings(config=str(routing_path)), store,
                                       RecordingEnqueue(), clock=lambda: NOW,
                                       metrics=LocalMetrics()))
        response = post(client, contact())
    finally:
        store.close()

    assert response.status_code == 503
    assert response.json() == {"error": "state store unavailable; retry later"}


def test_given_an_enrichment_step_when_routed_then_it_runs_first_and_shows_in_the_trace(
    sqlite_store: StateStore, tmp_path: Path,
) -> None:
    path = tmp_path / "enrich.yaml"
    path.write_text(ROUTING.replace("rules:", "enrich: [tld_country]\nrules:"))
    client = TestClient(create_app(make_settings(config=str(path)), sqlite_store,
                                   RecordingEnqueue(), clock=lambda: NOW, metrics=LocalMetrics()))

    answer = post(client, contact(email="jo@beispiel.de", company="Beispiel")).json()

    assert answer["rule"] == "germany"  # the country came from the .de domain
    assert answer["owner"]["id"] == "cy"
    assert answer["trace"][0]["rule"] == "enrich tld_country"


def test_given_the_longest_key_when_routed_then_its_decision_is_found_by_record_id(
    route_client: TestClient,
) -> None:
    key = "k" * 200
    assert post(route_client, contact(key)).status_code == 200

    found = route_client.get(f"/decisions/api:{key}", headers=AUTH)

    assert found.status_code == 200 and found.json()[0]["trigger"] == "api"


def test_given_a_paused_rep_when_routed_then_the_pool_skips_them_as_the_workers_would(
    route_client: TestClient,
) -> None:
    assert route_client.post("/reps/ana/pause", headers=AUTH).status_code == 200

    answer = post(route_client, contact("while-ana-is-away")).json()

    assert answer["owner"]["id"] == "bo"
    assert "ana" in json.dumps(answer["trace"])  # the trace says why ana was passed over
