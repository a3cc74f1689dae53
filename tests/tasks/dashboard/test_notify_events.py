"""The decision page shows what happened after the write: notices sent and failed."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from sync.models import HistoryEvent, decision_key, event_id
from tests.tasks.dashboard.conftest import HOSTILE, NOW, Env, sign_in


@pytest.fixture
def client(env: Env) -> TestClient:
    sign_in(env.client)
    return env.client


def _event(env: Env, record_id: str, kind: str, **data: object) -> HistoryEvent:
    found = env.history.decision(env.ids[record_id])
    assert found is not None
    key = decision_key(found)
    return HistoryEvent(id=event_id(kind, key, str(data.get("channel"))), decision_id=None,
                        record_id=record_id, crm=found.crm, object=found.object, kind=kind,
                        at=NOW - timedelta(minutes=5), data={"decision": key, **data})


def test_given_a_sent_and_a_failed_notice_when_opening_the_decision_then_both_show_with_the_error(
        client: TestClient, env: Env) -> None:
    env.store.record_events([
        _event(env, "700", "notified", channel="email", recipient="bo", role="owner",
               to="bo@example.com"),
        _event(env, "700", "notify_failed", channel="slack", recipient="bo", role="owner",
               error="slack: chat.postMessage: user_not_found"),
        # Another decision of another record: not shown on this one.
        _event(env, "600", "notified", channel="slack", recipient="bo", role="owner"),
    ])
    page = client.get(f"/dashboard/decisions/{env.ids['700']}").text
    events = re.search(r'<table id="events">(.*?)</table>', page, re.S)
    assert events is not None
    rows = re.findall(r"<tr class=\"(\w+)\">(.*?)</tr>", events[1], re.S)
    assert sorted(kind for kind, _ in rows) == ["notified", "notify_failed"]
    failed = next(body for kind, body in rows if kind == "notify_failed")
    assert "slack to bo" in failed and "user_not_found" in failed
    sent = next(body for kind, body in rows if kind == "notified")
    assert "email to bo (bo@example.com)" in sent


def test_given_no_events_when_opening_a_decision_then_it_says_so(
        client: TestClient, env: Env) -> None:
    page = client.get(f"/dashboard/decisions/{env.ids['800']}").text
    assert "No notifications or other events yet." in page


def test_given_a_hostile_error_when_opening_the_decision_then_it_is_escaped(
        client: TestClient, env: Env) -> None:
    env.store.record_events([_event(env, HOSTILE, "notify_failed", channel="email",
                                    recipient="bo", error=f"SMTP 550 {HOSTILE}")])
    page = client.get(f"/dashboard/decisions/{env.ids[HOSTILE]}").text
    assert "SMTP 550 &lt;script&gt;" in page and "<script>alert" not in page
