"""HubSpot owner-change webhooks: a person's change is an override (recorded once, never
routed back); our own write's echo and changes our later write replaced are ignored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sync.history import History
from sync.state import StateStore
from sync.state.base import OwnerMark
from tasks.http import create_app
from tasks.metrics import LocalMetrics
from tests.tasks.test_http import (
    NOW,
    RecordingEnqueue,
    event,
    make_settings,
    post_hubspot,
    routing_file,  # noqa: F401 - fixture
)

WRITTEN = datetime.fromtimestamp(NOW - 600, UTC)  # our write, ten minutes before the app's now
AFTER_MS = int((NOW - 60) * 1000)  # a change one minute ago: nine minutes after our write
BEFORE_MS = int((NOW - 700) * 1000)  # a change the CRM saw before our write


@pytest.fixture
def metrics() -> LocalMetrics:
    return LocalMetrics()


@pytest.fixture
def enqueue() -> RecordingEnqueue:
    return RecordingEnqueue()


@pytest.fixture
def client(sqlite_store: StateStore, enqueue: RecordingEnqueue,  # noqa: F811
           routing_file: Path, metrics: LocalMetrics) -> TestClient:  # noqa: F811
    sqlite_store.set_owner_marks([OwnerMark(
        crm="hubspot", object="companies", record_id="502", owner="101", written_at=WRITTEN,
        decision="hubspot:account:502:1", rep="ana", rule="everyone")], 3600)
    return TestClient(create_app(make_settings(config=str(routing_file)), sqlite_store,
                                 enqueue, clock=lambda: NOW, metrics=metrics))


def owner_change(event_id: int, object_id: int, value: object, at: int = AFTER_MS,
                 **extra: object) -> dict[str, object]:
    return event(event_id, object_id, "company.propertyChange", occurred_at=at,
                 propertyName="hubspot_owner_id", propertyValue=value, **extra)


def overrides(store: StateStore) -> list:
    with History(store.url) as history:  # type: ignore[attr-defined]
        return history.events(kind="override")


def test_given_a_persons_owner_change_when_posted_then_one_override_and_nothing_routed(
        client: TestClient, enqueue: RecordingEnqueue, sqlite_store: StateStore,  # noqa: F811
        metrics: LocalMetrics) -> None:
    body = [owner_change(1, 502, "102", changeSource="CRM_UI", sourceId="userId:77")]

    response = post_hubspot(client, body)

    assert response.status_code == 200 and enqueue.calls == []
    [found] = overrides(sqlite_store)
    assert found.record_id == "502" and found.object == "account"
    assert found.at == datetime.fromtimestamp(AFTER_MS / 1000, UTC)
    assert found.data["from"] == "ana" and found.data["to"] == "bo"
    assert found.data["by"] == "userId:77" and found.data["source"] == "CRM_UI"
    assert found.data["after_seconds"] == 540.0 and found.data["rule"] == "everyone"
    assert metrics.snapshot().overrides == {"everyone": 1}
    assert 'account_router_overrides_total{rule="everyone"} 1.0' in metrics.collect()
    mark = sqlite_store.owner_marks("hubspot", "companies", ["502"])["502"]
    assert mark.overridden_to == "102" and mark.overridden_by == "userId:77"


def test_given_the_same_change_delivered_twice_under_new_event_ids_then_counted_once(
        client: TestClient, enqueue: RecordingEnqueue, sqlite_store: StateStore,  # noqa: F811
        metrics: LocalMetrics) -> None:
    post_hubspot(client, [owner_change(1, 502, "102")])
    post_hubspot(client, [owner_change(2, 502, "102", at=AFTER_MS + 5)])
    post_hubspot(client, [owner_change(3, 502, "101", at=AFTER_MS + 9)])  # and back again

    assert len(overrides(sqlite_store)) == 1
    assert metrics.snapshot().overrides == {"everyone": 1}
    assert enqueue.calls == []  # a person's choice either way: never routed back


@pytest.mark.parametrize("body", [
    [owner_change(1, 502, "101", changeSource="INTEGRATION")],  # our own write's echo
    [owner_change(1, 502, "102", at=BEFORE_MS)],  # a change our write replaced
])
def test_given_our_own_write_or_an_older_change_when_posted_then_ignored(
        client: TestClient, enqueue: RecordingEnqueue, sqlite_store: StateStore,  # noqa: F811
        metrics: LocalMetrics, body: list[dict[str, object]]) -> None:
    response = post_hubspot(client, body)

    assert response.status_code == 200 and response.json()["accepted"] == 1
    assert enqueue.calls == [] and overrides(sqlite_store) == []
    assert metrics.snapshot().overrides == {}


def test_given_an_unmarked_record_or_a_cleared_owner_when_posted_then_routed_as_before(
        client: TestClient, enqueue: RecordingEnqueue, sqlite_store: StateStore,  # noqa: F811
        ) -> None:
    body = [owner_change(1, 777, "102"), owner_change(2, 502, ""),
            event(3, 503, "company.propertyChange", propertyName="hubspot_owner_id")]

    post_hubspot(client, body)

    assert enqueue.calls == [("hubspot", "companies", ["777", "502", "503"], "webhook")]
    assert overrides(sqlite_store) == []


@pytest.mark.parametrize(("value", "message"), [
    (101, "event 0: propertyValue must be a string"),
    ("9" * 1001, "event 0: propertyValue must be a string"),
    ("1\x00", "event 0: propertyValue must be a string"),
])
def test_given_a_malformed_property_value_when_posted_then_400_naming_it(
        client: TestClient, enqueue: RecordingEnqueue, value: object, message: str) -> None:
    response = post_hubspot(client, [owner_change(1, 502, value)])

    assert response.status_code == 400
    assert message in response.json()["error"] and enqueue.calls == []


def test_given_an_old_mark_when_the_override_is_seen_then_after_seconds_spans_it(
        sqlite_store: StateStore, routing_file: Path) -> None:  # noqa: F811
    sqlite_store.set_owner_marks([OwnerMark(
        crm="hubspot", object="contacts", record_id="9", owner="102",
        written_at=WRITTEN - timedelta(days=2), kind="contact")], 3600)
    app = create_app(make_settings(config=str(routing_file)), sqlite_store,
                     RecordingEnqueue(), clock=lambda: NOW, metrics=LocalMetrics())

    post_hubspot(TestClient(app), [event(1, 9, "contact.propertyChange", occurred_at=AFTER_MS,
                                         propertyName="hubspot_owner_id", propertyValue="101")])

    [found] = overrides(sqlite_store)
    assert found.object == "contact" and found.data["after_seconds"] == 2 * 86400 + 540.0
    assert found.data["from"] == "102" and found.data["to"] == "ana"  # no rep: the CRM id
