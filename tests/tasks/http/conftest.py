"""Fixtures of the HTTP app's tests: the app over SQLite state and a recording enqueue, and the
ops API (`api`) in front of the CRM simulator."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from connectors.settings import Settings
from connectors.simulator import RunningSimulator, Simulator
from sync.state import StateStore
from tasks.http import create_app
from tasks.metrics import LocalMetrics
from tests.builders import empty_crm
from tests.tasks.test_http import (
    TOKEN,
    RecordingEnqueue,
    client,
    enqueue,
    routing_file,
)

__all__ = ["client", "enqueue", "routing_file"]


@pytest.fixture
def sim() -> Simulator:
    """An empty simulated CRM (its owners only): each test creates the records it routes."""
    return empty_crm(3, days=1)


@pytest.fixture
def settings(running: RunningSimulator, routing_file: Path, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[Settings]:
    """The settings `serve` reads: the simulator (`running`), `routing_file`, the ops token and
    no Redis (state and queue embedded)."""
    monkeypatch.setenv("ACCOUNT_ROUTER_CONFIG", str(routing_file))
    monkeypatch.setenv("ACCOUNT_ROUTER_API_TOKEN", TOKEN)
    monkeypatch.delenv("ACCOUNT_ROUTER_REDIS_URL", raising=False)
    yield Settings()


@pytest.fixture
def api(settings: Settings, sqlite_store: StateStore, enqueue: RecordingEnqueue) -> TestClient:
    """The app on `settings` over the SQLite state, enqueueing into `enqueue`."""
    return TestClient(create_app(settings, sqlite_store, enqueue, metrics=LocalMetrics()))
