"""`GET /decisions/{record_id}` in service mode: read from the SQL history (PostgreSQL), and a
503 that names no password when that database is unset or cannot be reached."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from connectors.settings import Settings
from sync.history import History
from sync.models import Decision, Outcome, TraceStep
from sync.state import StateStore
from tasks.http import create_app
from tasks.metrics import LocalMetrics

TOKEN = "ops-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "hunter2"


def client(store: StateStore, database_url: str | None) -> TestClient:
    settings = Settings.model_validate({"api_token": TOKEN, "database_url": database_url})
    return TestClient(create_app(settings, store, lambda *_: None, metrics=LocalMetrics()))


def test_given_redis_state_and_a_postgresql_history_when_listed_then_the_history_answers(
    redis_store: StateStore, postgres_url: str,
) -> None:
    d = Decision(record_id="501", object="account", crm="hubspot", outcome=Outcome.ASSIGNED,
                 owner="ana", rule="r", reason="rule r: rep ana",
                 trace=(TraceStep("r", "won", "rep ana"),), trigger="webhook",
                 decided_at=datetime(2026, 11, 1, tzinfo=UTC))
    with History(postgres_url) as history:
        history.upgrade()
        history.record([(1_764_000_000_000_000, d)])

    response = client(redis_store, postgres_url).get("/decisions/501", headers=AUTH)

    assert response.status_code == 200
    assert response.json() == [d.to_dict()]


@pytest.mark.parametrize("database_url", [
    None, f"postgresql+psycopg://router:{SECRET}@127.0.0.1:1/router"])
def test_given_no_reachable_history_when_listed_then_503_without_the_password(
    redis_store: StateStore, database_url: str | None, caplog: pytest.LogCaptureFixture,
) -> None:
    response = client(redis_store, database_url).get("/decisions/501", headers=AUTH)

    assert response.status_code == 503
    assert "history" in response.text
    assert SECRET not in response.text and SECRET not in caplog.text
