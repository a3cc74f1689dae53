"""Real parts: redis-server (broker, metrics), the CRM simulator and a `celery -A tasks worker
-B` subprocess whose beat runs `sla.check`: a breach re-routes, then escalates."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.simulator import Simulator
from sync.state import open_store
from tasks.metrics import RedisMetrics
from tasks.queue import enqueue_route, flush
from tests.builders import empty_crm, sla_routing, write_routing

ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 60.0
ROUTING = sla_routing("1s")


@pytest.fixture
def sim() -> Simulator:
    return empty_crm(6, owners=5)


@pytest.fixture
def routing_path(tmp_path: Path) -> Path:
    return write_routing(tmp_path, ROUTING)


@pytest.fixture
def worker(worker_environment, start_worker, tmp_path, monkeypatch):  # -> conftest.Worker
    """A worker with its beat (`-B`), which runs `sla.check` every second."""
    monkeypatch.setenv("ACCOUNT_ROUTER_SLA_CHECK_SECONDS", "1")
    return start_worker("-B", "--schedule", str(tmp_path / "beat-schedule"))


def test_given_beat_and_a_worker_when_first_touch_lapses_then_rerouted_once_then_escalated(
        sim, worker, redis_url, tmp_path):
    pooled = sim.hubspot_create("companies", {"name": "Pooled", "domain": "pooled.example"})
    vip = sim.hubspot_create("companies", {"name": "Vip", "domain": "vip.example"})
    metrics = RedisMetrics(redis_url)

    enqueue_route("hubspot", "companies", [pooled, vip], "webhook")
    flush()

    # The pool's record: ava, untouched for 1 s, goes to ben (never back to ava); ben lets it
    # lapse too and the one re-route allowed is spent: the manager is told. The vip record
    # (a rep target, no pool) escalates at once.
    def settled() -> bool:
        breaches = metrics.snapshot().sla_breaches
        return breaches["reroute"] >= 1 and breaches["notify_manager"] >= 2

    worker.wait_until(settled, "a re-route and two escalations", WAIT_SECONDS)
    try:
        assert metrics.snapshot().sla_breaches == {"reroute": 1, "notify_manager": 2}
        assert sim.owner_of("hubspot", "companies", pooled) == "101"
        assert sim.owner_of("hubspot", "companies", vip) == "103"
        assert "account_router_sla_breaches_total" in metrics.collect()
        store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
        try:
            worker.wait_until(lambda: store.watching() == 0, "the watch to end", WAIT_SECONDS)
            triggers = [d.trigger for d in reversed(store.history.decisions(record_id=pooled))]
            assert triggers == ["webhook", "sla"]
            kinds = sorted(e.kind for e in store.history.events(record_id=pooled))
            assert kinds == ["rerouted", "sla_breach", "sla_breach"]
        finally:
            store.close()
    finally:
        metrics.close()
