"""Overrides with real parts: redis-server (broker, state, metrics), the CRM simulator, the
HTTP app and a `celery -A tasks worker` subprocess. A webhook routes a new company through the
worker; a person then reassigns it in the CRM; HubSpot's owner-change webhook is an override
counted in /metrics (aggregated across processes), and the record is never routed back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from connectors.settings import Settings
from sync.history import History
from sync.history.outbox import drain
from sync.history.overrides import list_overrides
from sync.state.redis import RedisStateStore
from tasks.http import create_app
from tasks.queue import enqueue_route, flush
from tests.tasks.test_celery import sim  # noqa: F401 - fixture
from tests.tasks.test_http import post_hubspot

SECRET = "hubspot-secret"


@pytest.fixture(autouse=True)
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The history service mode needs (set before the worker starts): a SQLite file here."""
    url = f"sqlite:///{tmp_path / 'history.db'}"
    with History(url) as history:
        history.upgrade()
    monkeypatch.setenv("ACCOUNT_ROUTER_DATABASE_URL", url)
    return url


@pytest.fixture
def state_url(redis_url: str) -> str:
    """Service mode: the worker's and the app's state in Redis (beside broker and metrics)."""
    return redis_url


def overrides_total(client: TestClient) -> dict[str, float]:
    text = client.get("/metrics").text
    return {s.labels["rule"]: s.value for f in text_string_to_metric_families(text)
            if f.name == "account_router_overrides" for s in f.samples
            if s.name == "account_router_overrides_total"}


def test_given_a_worker_routed_record_when_a_person_reassigns_it_then_metrics_count_once(
        sim, worker, redis_url, database, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HUBSPOT_WEBHOOK_SECRET", SECRET)
    worker_proc, log = worker
    record_id = sim.hubspot_create("companies", {"name": "Override Co",
                                                  "domain": "override-co.example"})
    store = RedisStateStore(redis_url)
    app = create_app(Settings(), store, enqueue_route)
    try:
        with TestClient(app) as client:
            # A creation webhook routes the record through the worker, which marks its write.
            created = {"eventId": 1, "objectId": int(record_id), "occurredAt":
                       int(time.time() * 1000), "subscriptionType": "company.creation"}
            assert post_hubspot(client, [created], stamp=str(int(time.time() * 1000))
                                ).status_code == 200
            flush()
            worker.wait_until(
                lambda: bool(store.owner_marks("hubspot", "companies", [record_id])),
                "the worker's write and its own-write mark")
            ours = sim.owner_of("hubspot", "companies", record_id)
            mark = store.owner_marks("hubspot", "companies", [record_id])[record_id]
            assert mark.owner == ours

            # A person reassigns it; HubSpot delivers our write's echo and the person's change.
            other = "100" if ours != "100" else "101"
            sim.reassign("hubspot", "companies", record_id, other, by="5000100")
            events = sim.owner_events()
            for _ in range(2):  # delivered twice: counted once
                response = post_hubspot(client, events, stamp=str(int(time.time() * 1000)))
                assert response.status_code == 200
            flush()

            assert overrides_total(client) == {mark.rule or "": 1.0}
            time.sleep(1.0)  # had anything been enqueued, the worker would have run it
            assert sim.owner_of("hubspot", "companies", record_id) == other
            assert worker_proc.poll() is None, log.read_text(errors="replace")
            assert store.owner_marks("hubspot", "companies", [record_id])[
                record_id].overridden_to == other
        # The event waits in the Redis outbox until beat's flush moves it into SQL, once.
        with History(database) as history:
            drain(store, history, budget_seconds=30.0)
            [found] = list_overrides(history)
        assert found.record_id == record_id and found.by == "userId:5000100"
        assert found.to == {"100": "maya", "101": "ava"}[other]
    finally:
        store.close()
