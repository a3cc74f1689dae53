"""Real parts: redis-server (broker, metrics), the CRM simulator and a `celery -A tasks worker
-B` subprocess whose beat runs `sla.check`: a breach re-routes, then escalates."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from connectors.simulator import Simulator, serve
from sync.state import open_store
from tasks.metrics import RedisMetrics
from tasks.queue import enqueue_route, flush

ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 60.0
ROUTING = """\
version: 1
reps:
  - {id: ava, crm_ids: {hubspot: "100"}, manager: max}
  - {id: ben, crm_ids: {hubspot: "101"}, manager: max}
  - {id: cara, crm_ids: {hubspot: "102"}, manager: max}
  - {id: max, crm_ids: {hubspot: "103"}}
pools:
  smb: {members: [ava, ben, cara]}
sla: {first_touch: 1s, on_breach: reroute, max_reroutes: 1}
rules:
  - name: vip
    when: {domain: {eq: vip.example}}
    assign: {rep: max}
  - {name: everyone, assign: {pool: smb}}
"""


@pytest.fixture
def sim() -> Simulator:
    simulator = Simulator(seed=6)
    simulator.seed(companies=0, contacts=0, accounts=0, leads=0, owners=5)
    return simulator


@pytest.fixture
def worker(sim, redis_url, tmp_path, monkeypatch) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    config = tmp_path / "routing.yaml"
    config.write_text(ROUTING)
    log = tmp_path / "worker.log"
    with serve(sim) as running:
        for name, value in {**running.env(), "ACCOUNT_ROUTER_REDIS_URL": redis_url,
                            "ACCOUNT_ROUTER_CONFIG": str(config),
                            "ACCOUNT_ROUTER_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
                            "ACCOUNT_ROUTER_SLA_CHECK_SECONDS": "1"}.items():
            monkeypatch.setenv(name, value)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-B",
                 "--schedule", str(tmp_path / "beat-schedule"), "--pool", "solo",
                 "--concurrency", "1", "--loglevel", "WARNING"],
                cwd=ROOT, env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT)
            try:
                yield proc, log
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_until(done: Callable[[], bool], worker: tuple[subprocess.Popen[bytes], Path],
               what: str) -> None:
    proc, log = worker
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if done():
            return
        if proc.poll() is not None:
            pytest.fail(f"worker exited ({proc.returncode}) while waiting for {what}:\n"
                        f"{log.read_text(errors='replace')}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}; worker log:\n{log.read_text(errors='replace')}")


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

    wait_until(settled, worker, "a re-route and two escalations")
    try:
        assert metrics.snapshot().sla_breaches == {"reroute": 1, "notify_manager": 2}
        assert sim.owner_of("hubspot", "companies", pooled) == "101"
        assert sim.owner_of("hubspot", "companies", vip) == "103"
        assert "account_router_sla_breaches_total" in metrics.collect()
        store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
        try:
            wait_until(lambda: store.watching() == 0, worker, "the watch to end")
            triggers = [d.trigger for d in reversed(store.history.decisions(record_id=pooled))]
            assert triggers == ["webhook", "sla"]
            kinds = sorted(e.kind for e in store.history.events(record_id=pooled))
            assert kinds == ["rerouted", "sla_breach", "sla_breach"]
        finally:
            store.close()
    finally:
        metrics.close()
