"""The HTTP app: webhook intake (signature, validation, dedupe, enqueue), ops API, health."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from connectors.settings import Settings
from sync.models import Decision
from sync.state import StateStore, open_store
from tasks.http import create_app, hubspot_signature_v3
from tasks.metrics import LocalMetrics
from tests.builders import write_routing
from tests.loopback import free_port

SECRET = "hubspot-secret"
TOKEN = "ops-token"
ORG = "00D5g000000ABCDEAG"  # 18 characters
SF_SECRET = "sf-webhook-secret-0123456789"
SF_PATH = f"/webhooks/salesforce/{SF_SECRET}"
NOW = 1_764_000_000.0  # the app's clock, seconds
NOW_MS = str(int(NOW * 1000))


class RecordingEnqueue:
    """Stands in for `tasks.queue.enqueue_route`: remembers every call."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str, list[str], str]] = []
        self.fail = fail

    def __call__(self, crm: str, obj: str, ids: list[str], trigger: str) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.calls.append((crm, obj, list(ids), trigger))


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "hubspot_webhook_secret": SECRET, "api_token": TOKEN, "salesforce_org_id": ORG,
        "public_url": None, "salesforce_webhook_secret": SF_SECRET,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture
def enqueue() -> RecordingEnqueue:
    return RecordingEnqueue()


ROUTING = """version: 1
reps:
  - {id: ana, crm_ids: {hubspot: '101', salesforce: 0055g000001AbCdAAA}}
  - {id: bo, crm_ids: {hubspot: '102', salesforce: 0055g000001AbCeAAA}}
rules:
  - {name: everyone, assign: {rep: ana}}
"""


@pytest.fixture
def routing_file(tmp_path: Path) -> Path:
    return write_routing(tmp_path, ROUTING)


@pytest.fixture
def client(sqlite_store: StateStore, enqueue: RecordingEnqueue, routing_file: Path
           ) -> TestClient:
    return TestClient(create_app(make_settings(config=str(routing_file)), sqlite_store, enqueue,
                                 clock=lambda: NOW))


def event(event_id: int = 1, object_id: int = 501, kind: str = "company.creation",
          occurred_at: int = 1_763_999_990_000, **extra: object) -> dict[str, object]:
    return {"eventId": event_id, "objectId": object_id, "subscriptionType": kind,
            "occurredAt": occurred_at, "portalId": 62515, **extra}


def post_hubspot(client: TestClient, body: bytes | list[object] | dict[str, object], *,
                 uri: str = "http://testserver/webhooks/hubspot", stamp: str = NOW_MS,
                 secret: str = SECRET, path: str = "/webhooks/hubspot",
                 signature: str | None = None) -> object:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    sig = signature if signature is not None else hubspot_signature_v3(
        secret, "POST", uri, raw, stamp)
    return client.post(path, content=raw, headers={
        "X-HubSpot-Signature-v3": sig, "X-HubSpot-Request-Timestamp": stamp,
        "Content-Type": "application/json"})


# --- signature ------------------------------------------------------------------------------


def test_given_hubspots_published_v3_vector_when_signed_then_the_published_signature() -> None:
    signature = hubspot_signature_v3(
        "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy", "POST", "https://www.example.com/webhook_uri",
        b"{'example_field':'example_value'}", "1693657560000")
    assert signature == "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="


def test_given_a_signed_creation_when_posted_then_200_and_the_ids_are_enqueued(
    client: TestClient, enqueue: RecordingEnqueue,
) -> None:
    body = [event(1, 501), event(2, 502), event(3, 77, "contact.creation")]
    response = post_hubspot(client, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 3, "duplicates": 0}
    assert enqueue.calls == [("hubspot", "companies", ["501", "502"], "webhook"),
                             ("hubspot", "contacts", ["77"], "webhook")]


def test_given_a_public_url_behind_a_proxy_when_signed_for_it_then_accepted(
    sqlite_store: StateStore, enqueue: RecordingEnqueue,
) -> None:
    app = create_app(make_settings(public_url="https://router.example.com/"), sqlite_store,
                     enqueue, clock=lambda: NOW)
    client = TestClient(app)  # the app itself sees http://testserver
    uri = "https://router.example.com/webhooks/hubspot?portal=62515"
    path = "/webhooks/hubspot?portal=62515"
    assert post_hubspot(client, [event()], uri=uri, path=path).status_code == 200
    # Signed for the internal URL instead: refused, nothing enqueued.
    internal = "http://testserver/webhooks/hubspot?portal=62515"
    assert post_hubspot(client, [event(2)], uri=internal, path=path).status_code == 401
    assert enqueue.calls == [("hubspot", "companies", ["501"], "webhook")]


@pytest.mark.parametrize("signature", ["", "bm90IHRoZSBzaWduYXR1cmU=", "K36dawei4A+QBNolUOqo7s9"])
def test_given_a_missing_or_wrong_signature_when_posted_then_401_and_nothing_enqueued(
    client: TestClient, enqueue: RecordingEnqueue, signature: str,
) -> None:
    response = post_hubspot(client, [event()], signature=signature)
    assert response.status_code == 401
    assert enqueue.calls == []


def test_given_the_wrong_secret_when_posted_then_401(
    client: TestClient, enqueue: RecordingEnqueue,
) -> None:
    assert post_hubspot(client, [event()], secret="other").status_code == 401
    assert enqueue.calls == []


@pytest.mark.parametrize("offset_ms", [-5 * 60 * 1000 - 1, 10 * 60 * 1000])
def test_given_a_stale_or_future_timestamp_when_posted_then_401(
    client: TestClient, enqueue: RecordingEnqueue, offset_ms: int,
) -> None:
    response = post_hubspot(client, [event()], stamp=str(int(NOW_MS) + offset_ms))
    assert response.status_code == 401
    assert enqueue.calls == []


def test_given_a_timestamp_just_inside_the_window_when_posted_then_200(
    client: TestClient,
) -> None:
    assert post_hubspot(client, [event()], stamp=str(int(NOW_MS) - 299_000)).status_code == 200


def test_given_no_configured_secret_when_posted_then_401(
    sqlite_store: StateStore, enqueue: RecordingEnqueue,
) -> None:
    app = create_app(make_settings(hubspot_webhook_secret=None), sqlite_store, enqueue,
                     clock=lambda: NOW)
    assert post_hubspot(TestClient(app), [event()]).status_code == 401
    assert enqueue.calls == []


# --- validation -----------------------------------------------------------------------------


def test_given_a_body_over_1_mib_when_posted_then_413(
    client: TestClient, enqueue: RecordingEnqueue,
) -> None:
    response = post_hubspot(client, b"[" + b" " * (1 << 20) + b"]")
    assert response.status_code == 413
    assert enqueue.calls == []


def test_given_a_chunked_body_over_1_mib_when_posted_then_413(
    client: TestClient, enqueue: RecordingEnqueue,
) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(17):
            yield b" " * 65536

    response = client.post("/webhooks/hubspot", content=chunks())
    assert response.status_code == 413
    assert enqueue.calls == []


def test_given_a_json_object_instead_of_an_array_when_posted_then_400(
    client: TestClient, enqueue: RecordingEnqueue,
) -> None:
    response = post_hubspot(client, event())
    assert response.status_code == 400
    assert "array" in response.json()["error"]
    assert enqueue.calls == []


@pytest.mark.parametrize("body", [
    b"not json",
    [event(), "x"],
    [{k: v for k, v in event().items() if k != "objectId"}],
    [event(object_id=-3)],
    [event(kind="nonsense")],
    [{k: v for k, v in event().items() if k != "eventId"}],
    [event(occurred_at="yesterday")],  # type: ignore[arg-type]
    [event(kind="company.propertyChange")],  # no propertyName
    [event(i) for i in range(101)],
])
def test_given_malformed_events_when_posted_then_400_with_a_message_and_nothing_enqueued(
    client: TestClient, enqueue: RecordingEnqueue, body: bytes | list[object],
) -> None:
    response = post_hubspot(client, body)
    assert response.status_code == 400
    assert response.json()["error"]
    assert enqueue.calls == []


def test_given_a_malformed_event_after_good_ones_when_posted_then_none_is_marked_seen(
    client: TestClient, enqueue: RecordingEnqueue,
) -> None:
    assert post_hubspot(client, [event(1), {"bad": True}]).status_code == 400
    assert post_hubspot(client, [event(1)]).json() == {"accepted": 1, "duplicates": 0}


# --- dedupe and filtering -------------------------------------------------------------------


def test_given_a_replayed_event_when_delivered_again_then_nothing_is_enqueued(
    client: TestClient, enqueue: RecordingEnqueue,
) -> None:
    first = event(7, 501, "company.propertyChange", propertyName="country",
                  propertyValue="DE")
    assert post_hubspot(client, [first]).json() == {"accepted": 1, "duplicates": 0}
    # Same eventId and occurredAt, though the record has changed since: still a replay.
    again = {**first, "propertyValue": "FR"}
    assert post_hubspot(client, [again]).json() == {"accepted": 0, "duplicates": 1}
    assert enqueue.calls == [("hubspot", "companies", ["501"], "webhook")]


def test_given_the_same_event_id_at_another_instant_when_delivered_then_it_is_new(
    client: TestClient, enqueue: RecordingEnqueue,
) -> None:
    post_hubspot(client, [event(7, occurred_at=1)])
    assert post_hubspot(client, [event(7, occurred_at=2)]).json()["accepted"] == 1
    assert len(enqueue.calls) == 2


def test_given_changes_of_unmapped_properties_and_other_objects_when_posted_then_skipped(
    client: TestClient, enqueue: RecordingEnqueue,
) -> None:
    body = [
        event(1, 501, "company.propertyChange", propertyName="hs_lastmodifieddate"),
        event(2, 502, "company.propertyChange", propertyName="hubspot_owner_id"),
        event(3, 77, "contact.propertyChange", propertyName="email"),
        event(4, 9, "deal.creation"),
        event(5, 503, "company.deletion"),
        {**event(6, 504), "subscriptionType": None, "eventType": "company.creation"},
    ]
    response = post_hubspot(client, body)
    assert response.json() == {"accepted": 6, "duplicates": 0}
    assert enqueue.calls == [("hubspot", "companies", ["502", "504"], "webhook"),
                             ("hubspot", "contacts", ["77"], "webhook")]


def test_given_a_broker_failure_when_posted_then_503_not_500(sqlite_store: StateStore) -> None:
    app = create_app(make_settings(), sqlite_store, RecordingEnqueue(fail=True),
                     clock=lambda: NOW)
    assert post_hubspot(TestClient(app), [event()]).status_code == 503


def test_given_a_broker_failure_when_hubspot_retries_then_the_retry_is_not_a_duplicate(
        sqlite_store: StateStore) -> None:
    failing = create_app(make_settings(), sqlite_store, RecordingEnqueue(fail=True),
                         clock=lambda: NOW)
    assert post_hubspot(TestClient(failing), [event()]).status_code == 503
    enqueue = RecordingEnqueue()
    working = create_app(make_settings(), sqlite_store, enqueue, clock=lambda: NOW)

    response = post_hubspot(TestClient(working), [event()])

    assert response.json() == {"accepted": 1, "duplicates": 0}
    assert len(enqueue.calls) == 1


def test_given_webhooks_when_metrics_read_then_counters_by_result(client: TestClient) -> None:
    post_hubspot(client, [event(1)])
    post_hubspot(client, [event(1)])
    post_hubspot(client, [event(2)], signature="bad")
    text = client.get("/metrics").text
    assert 'account_router_webhook_events_total{crm="hubspot",result="accepted"} 1.0' in text
    assert 'account_router_webhook_events_total{crm="hubspot",result="duplicate"} 1.0' in text
    assert 'account_router_webhook_events_total{crm="hubspot",result="unauthorized"} 1.0' in text


# --- Salesforce Outbound Messages -----------------------------------------------------------


def outbound(org: str = ORG, ids: tuple[str, ...] = ("00Q5g00000AbCdEAAA",),
             kind: str = "sf:Lead") -> bytes:
    notes = "".join(
        f"<Notification><Id>04l5g0000000001AAA</Id>"
        f'<sObject xsi:type="{kind}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
        f"<sf:Id>{record_id}</sf:Id><sf:OwnerId>0055g000001AbCdAAA</sf:OwnerId></sObject>"
        f"</Notification>"
        for record_id in ids)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f"<OrganizationId>{org}</OrganizationId><ActionId>04k5g0000000001AAA</ActionId>"
        f"{notes}</notifications></soapenv:Body></soapenv:Envelope>"
    ).encode()


def test_given_an_outbound_message_when_posted_then_enqueued_and_acked(
    client: TestClient, enqueue: RecordingEnqueue,
) -> None:
    response = client.post(SF_PATH, content=outbound(
        org=ORG[:15], ids=("00Q5g00000AbCdEAAA", "00Q5g00000AbCdF")))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")
    assert "<Ack>true</Ack>" in response.text
    assert enqueue.calls == [
        ("salesforce", "Lead", ["00Q5g00000AbCdEAAA", "00Q5g00000AbCdF"], "webhook")]


def test_given_another_org_when_posted_then_refused_and_nothing_enqueued(
    client: TestClient, enqueue: RecordingEnqueue,
) -> None:
    response = client.post(SF_PATH, content=outbound(org="00D5g000000ZZZZ"))
    assert response.status_code == 403
    assert enqueue.calls == []


def test_given_a_wrong_secret_in_the_path_when_posted_then_401_and_nothing_enqueued(
    client: TestClient, enqueue: RecordingEnqueue,
) -> None:
    response = client.post(f"/webhooks/salesforce/{SF_SECRET[:-1]}x", content=outbound())

    assert response.status_code == 401
    assert enqueue.calls == []


@pytest.mark.parametrize("secret", [None, "short-secret", "has/a/slash-0123456789",
                                    "has space 0123456789"])
def test_given_no_usable_secret_when_an_outbound_message_arrives_then_404_and_nothing_enqueued(
    sqlite_store: StateStore, enqueue: RecordingEnqueue, secret: str | None,
) -> None:
    # The org id is public: without a secret anyone could have messages routed, so: off.
    client = TestClient(create_app(make_settings(salesforce_webhook_secret=secret),
                                   sqlite_store, enqueue))

    for path in (f"/webhooks/salesforce/{secret}", "/webhooks/salesforce/None",
                 "/webhooks/salesforce"):
        assert client.post(path, content=outbound()).status_code == 404, path
    assert enqueue.calls == []


def test_given_the_old_header_route_when_posted_with_the_secret_header_then_404(
    client: TestClient, enqueue: RecordingEnqueue,
) -> None:
    response = client.post("/webhooks/salesforce", content=outbound(),
                           headers={"X-Account-Router-Secret": SF_SECRET})

    assert response.status_code == 404
    assert enqueue.calls == []


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
    b"<unclosed>",
    b'<?xml version="1.0" encoding="bogus"?><a/>',
    outbound(ids=("not-an-id",)),
    outbound(kind="sf:Opportunity"),
    outbound(ids=()),
    outbound(ids=tuple(f"00Q5g00000AbC{i:03d}" for i in range(101))),
])
def test_given_a_bad_outbound_message_when_posted_then_400(
    client: TestClient, enqueue: RecordingEnqueue, body: bytes,
) -> None:
    assert client.post(SF_PATH, content=body).status_code == 400
    assert enqueue.calls == []


# --- ops API --------------------------------------------------------------------------------

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize("method,path", [
    ("POST", "/reprocess"), ("GET", "/decisions/501"), ("POST", "/reps/ana/pause"),
    ("POST", "/reps/ana/resume"),
])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": TOKEN}])
def test_given_no_or_a_wrong_bearer_token_when_calling_the_ops_api_then_401(
    client: TestClient, enqueue: RecordingEnqueue, method: str, path: str,
    headers: dict[str, str],
) -> None:
    body = {"crm": "hubspot", "object": "companies", "ids": ["1"]}
    assert client.request(method, path, json=body, headers=headers).status_code == 401
    assert enqueue.calls == []


def test_given_no_configured_token_when_calling_the_ops_api_then_401(
    sqlite_store: StateStore, enqueue: RecordingEnqueue,
) -> None:
    client = TestClient(create_app(make_settings(api_token=None), sqlite_store, enqueue))
    assert client.get("/decisions/501", headers={"Authorization": "Bearer "}).status_code == 401


def test_given_a_reprocess_request_when_authorized_then_enqueued_with_trigger_reprocess(
    client: TestClient, enqueue: RecordingEnqueue,
) -> None:
    response = client.post("/reprocess", headers=AUTH, json={
        "crm": "salesforce", "object": "lead", "ids": ["00Q1", "00Q2", "00Q1"]})
    assert response.status_code == 202
    assert enqueue.calls == [("salesforce", "Lead", ["00Q1", "00Q2"], "reprocess")]


@pytest.mark.parametrize("body", [
    {"crm": "hubspot", "object": "companies", "ids": ["1"], "dry_run": "yes"},
    {"crm": "hubspot", "object": "companies", "ids": ["1"], "dryrun": True},
    {"crm": "pipedrive", "object": "companies", "ids": ["1"]},
    {"crm": "hubspot", "object": "deals", "ids": ["1"]},
    {"crm": "hubspot", "object": "companies", "ids": []},
    {"crm": "hubspot", "object": "companies", "ids": [1]},
])
def test_given_a_bad_reprocess_request_when_authorized_then_400(
    client: TestClient, enqueue: RecordingEnqueue, body: dict[str, object],
) -> None:
    assert client.post("/reprocess", headers=AUTH, json=body).status_code == 400
    assert enqueue.calls == []


def test_given_decisions_for_a_record_when_listed_then_newest_first_in_the_audit_shape(
    client: TestClient, sqlite_store: StateStore,
) -> None:
    older = Decision(record_id="501", object="account", crm="hubspot", outcome="assigned",
                     owner="ana", decided_at=datetime(2026, 11, 1, tzinfo=UTC))
    newer = Decision(record_id="501", object="account", crm="hubspot", outcome="kept_existing",
                     owner="ana", decided_at=datetime(2026, 11, 2, tzinfo=UTC))
    other = Decision(record_id="502", object="account", crm="hubspot", outcome="assigned",
                     decided_at=datetime(2026, 11, 3, tzinfo=UTC))
    assert sqlite_store.commit({}, [], [older, newer, other])
    response = client.get("/decisions/501", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert [d["outcome"] for d in body] == ["kept_existing", "assigned"]
    assert body[0] == newer.to_dict()
    assert {"record_id", "crm", "object", "previous_owner", "owner", "owner_crm_id", "outcome",
            "rule", "reason", "trace", "trigger", "created_at", "decided_at",
            "written_at"} <= set(body[0])


def test_given_a_rep_when_paused_until_and_resumed_then_the_store_follows(
    client: TestClient, sqlite_store: StateStore,
) -> None:
    response = client.post("/reps/ana/pause", headers=AUTH,
                           json={"until": "2999-01-01T00:00:00Z"})
    assert response.status_code == 200
    assert sqlite_store.pauses(datetime.now(UTC)) == {"ana": datetime(2999, 1, 1, tzinfo=UTC)}
    assert client.post("/reps/ana/resume", headers=AUTH).json() == {
        "rep": "ana", "resumed": True}
    assert sqlite_store.pauses(datetime.now(UTC)) == {}
    assert client.post("/reps/bo/pause", headers=AUTH).status_code == 200
    assert client.post("/reps/bo/pause", headers=AUTH,
                       json={"until": "2999-01-01T00:00:00"}).status_code == 400


# --- health ---------------------------------------------------------------------------------


def broken_store(tmp_path: Path) -> StateStore:
    broken = open_store(f"sqlite:///{tmp_path / 'gone.db'}")
    broken.close()
    (tmp_path / "gone.db").unlink()
    (tmp_path / "gone.db").mkdir()  # reopening now fails
    return broken


def health(settings: Settings, store: StateStore, enqueue: RecordingEnqueue) -> Response:
    return TestClient(create_app(settings, store, enqueue, metrics=LocalMetrics())).get(
        "/healthz")


def test_given_a_working_store_in_embedded_mode_when_healthz_then_ok(
        client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"state": "ok", "checks": {"state": "ok", "broker": "embedded"}}


def test_given_a_failing_store_when_healthz_then_503(
    tmp_path: Path, enqueue: RecordingEnqueue,
) -> None:
    response = health(make_settings(), broken_store(tmp_path), enqueue)

    assert response.status_code == 503
    assert response.json() == {"state": "unavailable",
                               "checks": {"state": "unavailable", "broker": "embedded"}}


def test_given_a_reachable_broker_and_store_when_healthz_then_both_ok(
    sqlite_store: StateStore, enqueue: RecordingEnqueue, redis_url: str,
) -> None:
    response = health(make_settings(redis_url=redis_url), sqlite_store, enqueue)

    assert response.status_code == 200
    assert response.json() == {"state": "ok", "checks": {"state": "ok", "broker": "ok"}}


def test_given_an_unreachable_broker_and_a_working_store_when_healthz_then_503_naming_it(
    sqlite_store: StateStore, enqueue: RecordingEnqueue,
) -> None:
    broker_url = f"redis://127.0.0.1:{free_port()}/0"

    response = health(make_settings(redis_url=broker_url), sqlite_store, enqueue)

    assert response.status_code == 503
    assert response.json() == {"state": "ok", "checks": {"state": "ok", "broker": "unavailable"}}


def test_given_a_reachable_broker_and_a_failing_store_when_healthz_then_503_naming_it(
    tmp_path: Path, enqueue: RecordingEnqueue, redis_url: str,
) -> None:
    response = health(make_settings(redis_url=redis_url), broken_store(tmp_path), enqueue)

    assert response.status_code == 503
    assert response.json() == {"state": "unavailable",
                               "checks": {"state": "unavailable", "broker": "ok"}}


# --- fuzz -----------------------------------------------------------------------------------

_FUZZ_DIR = tempfile.mkdtemp(prefix="http-fuzz-")
_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                       st.text(max_size=20))
_json = st.recursive(_json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)
# Lone surrogates and control characters (JSON's "\ud800", "\u0000"), and integers past 64 bits.
_odd_text = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
                    | st.characters(max_codepoint=0x1F), min_size=1, max_size=3)
_odd_integers = st.integers(2**63 - 2, 10**40)
_events = st.lists(st.fixed_dictionaries(
    {"eventId": st.one_of(st.integers(-1, 50), st.text(max_size=5), _odd_text, _odd_integers),
     "objectId": st.one_of(st.integers(-1, 50), st.text(max_size=5), _odd_integers),
     "subscriptionType": st.sampled_from(["company.creation", "contact.propertyChange",
                                          "deal.creation", "x", ""]),
     "occurredAt": st.one_of(st.integers(-1, 10), st.none())},
    optional={"propertyName": st.one_of(st.none(), st.text(max_size=10),
                                        st.sampled_from(["country", "hubspot_owner_id"]))},
), max_size=5)
_bodies = st.one_of(
    _events.map(lambda v: json.dumps(v).encode()),  # listed twice: more requests get deep
    st.binary(max_size=200),
    _json.map(lambda v: json.dumps(v).encode()),
    _events.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([outbound(), outbound(org="x"), b"<a><notifications/></a>"]),
)
_header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@hsettings(max_examples=200, derandomize=True, deadline=None,
           suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(["/webhooks/hubspot", "/webhooks/hubspot", "/webhooks/hubspot?x=%2F",
                          SF_PATH,
                          "/reprocess", "/reps/a/pause", "/reps/ana/pause", "/decisions/1",
                          "/healthz/"]),
    body=_bodies,
    sign=st.booleans(),
    stamp=st.one_of(st.just(NOW_MS), st.just(NOW_MS), _header_text),
    auth=st.one_of(st.just(f"Bearer {TOKEN}"), _header_text),
    extra=st.dictionaries(st.sampled_from(["X-HubSpot-Signature-v3", "X-Account-Router-Secret",
                                           "Content-Type"]), _header_text, max_size=2),
)
def test_given_arbitrary_requests_when_posted_then_never_5xx_and_nothing_enqueued_on_4xx(
    path: str, body: bytes, sign: bool, stamp: str, auth: str, extra: dict[str, str],
) -> None:
    enqueue = RecordingEnqueue()
    store = open_store(f"sqlite:///{Path(_FUZZ_DIR) / 'state.db'}")
    try:
        client = TestClient(create_app(make_settings(), store, enqueue, clock=lambda: NOW))
        headers = {"X-HubSpot-Request-Timestamp": stamp, "Authorization": auth, **extra}
        if sign:
            headers["X-HubSpot-Signature-v3"] = hubspot_signature_v3(
                SECRET, "POST", f"http://testserver{path.replace('%2F', '/')}", body, stamp)
        response = client.post(path, content=body, headers=headers)
    finally:
        store.close()
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert enqueue.calls == []


# --- serve ----------------------------------------------------------------------------------


def test_given_no_worker_queue_when_serve_then_exit_2_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from tasks.cli import app

    monkeypatch.setitem(sys.modules, "tasks.queue", None)  # import fails as if absent
    result = CliRunner().invoke(app, ["serve", "--state", f"sqlite:///{tmp_path / 's.db'}"])
    assert result.exit_code == 2
    assert "tasks.queue" in result.output


def test_given_a_worker_queue_when_serve_then_uvicorn_runs_the_app_on_host_and_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    import types

    import uvicorn
    from typer.testing import CliRunner

    from tasks.cli import app

    queue = types.ModuleType("tasks.queue")
    queue.enqueue_route = RecordingEnqueue()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tasks.queue", queue)
    served: list[tuple[object, str, int]] = []

    def run(server: uvicorn.Server) -> None:
        served.append((server.config.app, server.config.host, server.config.port))
        server.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run)
    result = CliRunner().invoke(app, ["serve", "--port", "8123", "--state",
                                      f"sqlite:///{tmp_path / 's.db'}"])
    assert result.exit_code == 0, result.output
    assert [(host, port) for _, host, port in served] == [("127.0.0.1", 8123)]
    assert TestClient(served[0][0]).get("/healthz").json()["state"] == "ok"  # type: ignore[arg-type]


def test_given_the_app_started_then_webhooks_have_threads_to_wait_out_the_batch_window(
    sqlite_store: StateStore, enqueue: RecordingEnqueue,
) -> None:
    import anyio.to_thread

    from tasks.http import ENQUEUE_THREADS

    app = create_app(make_settings(), sqlite_store, enqueue, clock=lambda: NOW)
    with TestClient(app) as client:  # runs the lifespan, in the app's own event loop
        tokens = client.portal.call(
            lambda: anyio.to_thread.current_default_thread_limiter().total_tokens)
    assert tokens == ENQUEUE_THREADS
