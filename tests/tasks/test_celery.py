"""Real parts: redis-server, the CRM simulator and a `celery -A tasks worker` subprocess."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from connectors.simulator import Simulator, serve
from sync.models import Decision
from sync.state import StateStore, open_store
from tasks.queue import enqueue_route, enqueue_sweep, flush
from tests.builders import unowned

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "examples" / "routing.yaml"
COMPANIES = 300  # three list pages of 100: the sweep chain must re-enqueue itself twice
WAIT_SECONDS = 40.0
CHECKPOINT = "sweep:hubspot:companies"  # as sync/pipeline.py names it
CHAIN_LOCK = "sweep-chain:hubspot:companies"  # as tasks/worker.py names it


@pytest.fixture
def sim() -> Simulator:
    simulator = Simulator(seed=5)
    simulator.seed(companies=COMPANIES, contacts=0, accounts=0, leads=0, days=2)
    return simulator


@contextmanager
def in_process_worker(sim: Simulator, config: Path, state_url: str,
                      monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process as an embedded worker: the simulator served, the environment pointing at
    it, `config` and `state_url`, no Redis; the worker's pipeline cache fresh, closed after."""
    from tasks import worker

    monkeypatch.setattr(worker, "_pipelines", {})
    with serve(sim) as running:
        for name, value in {**running.env(), "ACCOUNT_ROUTER_CONFIG": str(config),
                            "ACCOUNT_ROUTER_STATE_URL": state_url}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("ACCOUNT_ROUTER_REDIS_URL", raising=False)
        try:
            yield
        finally:
            for built in worker._pipelines.values():
                built.pipeline.store.close()


def test_given_a_worker_when_ids_are_enqueued_and_a_sweep_started_then_all_are_routed_once(
        sim, worker, state_url):
    targets = unowned(sim)[:30]
    assert targets, "the seed leaves some companies unowned"

    # When: webhook-style ids arrive in two bursts that coalesce into route tasks.
    enqueue_route("hubspot", "companies", targets[:20], "webhook")
    enqueue_route("hubspot", "companies", targets[10:], "webhook")  # overlapping ids
    flush()

    # Then: the worker routes and writes each one exactly once.
    worker.wait_until(lambda: all(sim.owner_of("hubspot", "companies", i) for i in targets),
                      "the enqueued companies to be owned")
    store = open_store(state_url)
    try:
        # The audit row is committed just after the CRM write: wait for it too.
        worker.wait_until(lambda: all(written(store, i) for i in targets), "the audit")
        for record_id in targets:
            assert [d.trigger for d in written(store, record_id)] == ["webhook"], record_id
    finally:
        store.close()

    # When: a sweep chain starts; Then: page after page, every company gets an owner.
    enqueue_sweep("hubspot", "companies")
    worker.wait_until(lambda: not unowned(sim), "every company to be owned by the sweep")
    store = open_store(state_url)
    try:
        # The chain ends on its own: the last page clears the cursor and frees the chain lock.
        worker.wait_until(
            lambda: json.loads(store.get_checkpoint(CHECKPOINT) or "{}").get("cursor") is None
            and bool(store.lock_records([CHAIN_LOCK], "probe", 1)), "the sweep chain to finish")
        for record_id in targets:  # the sweep kept the owners the route tasks wrote
            assert len(written(store, record_id)) == 1
        assert any(d.trigger == "sweep" for d in store.decisions(limit=1000))
    finally:
        store.close()


def test_given_no_redis_when_ids_are_enqueued_then_this_process_routes_them_in_the_background(
        sim, state_url, monkeypatch):
    with serve(sim) as running:
        for name, value in {**running.env(), "ACCOUNT_ROUTER_CONFIG": str(EXAMPLE),
                            "ACCOUNT_ROUTER_STATE_URL": state_url}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("ACCOUNT_ROUTER_REDIS_URL", raising=False)
        targets = unowned(sim)[:10]

        enqueue_route("hubspot", "companies", targets + targets[:3], "webhook")
        flush()

        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline and unowned_of(sim, targets):
            time.sleep(0.1)
        assert not unowned_of(sim, targets)
    store = open_store(state_url)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline and not all(written(store, i) for i in targets):
            time.sleep(0.1)  # the audit row is committed just after the CRM write
        for record_id in targets:
            assert len(written(store, record_id)) == 1, record_id
    finally:
        store.close()


def unowned_of(sim: Simulator, ids: list[str]) -> list[str]:
    return [i for i in ids if sim.owner_of("hubspot", "companies", i) is None]


def written(store: StateStore, record_id: str) -> list[Decision]:
    return [d for d in store.decisions(record_id=record_id) if d.written_at is not None]


def test_given_configured_crms_when_a_worker_process_warms_up_then_its_first_task_reads_no_users(
        sim, state_url, monkeypatch):
    from tasks import worker

    with in_process_worker(sim, EXAMPLE, state_url, monkeypatch):
        # When: the pool process warms up (as worker_process_init does, in a thread).
        assert worker.warm_up() == ["hubspot", "salesforce"]
        owner_calls = sum(sim.stats("hubspot")["calls"]["GET /crm/v3/owners"].values())
        assert owner_calls >= 1

        # Then: the first routed batch reuses the cached pipeline and owner directory.
        target = unowned(sim)[0]
        worker.run_route("hubspot", "companies", [target], "webhook")
        assert sim.owner_of("hubspot", "companies", target) is not None
        assert sum(sim.stats("hubspot")["calls"]["GET /crm/v3/owners"].values()) == owner_calls


def test_given_no_routing_file_when_warming_up_then_nothing_is_built(monkeypatch):
    from connectors.settings import Settings
    from tasks import worker

    monkeypatch.setattr(worker, "_pipelines", {})
    assert worker.warm_up(Settings(config=None, hubspot_access_token="t")) == []
    assert worker._pipelines == {}


def test_given_a_sweep_backlog_when_a_webhook_batch_arrives_then_workers_take_the_batch_first(
        redis_url, monkeypatch):
    from kombu import Connection

    from tasks.celery_app import ROUTE_TASK, SWEEP_PAGE_TASK

    # Given: sweep starts queued before a webhook batch, no worker running.
    monkeypatch.setenv("ACCOUNT_ROUTER_REDIS_URL", redis_url)
    enqueue_sweep("hubspot", "companies")
    enqueue_sweep("salesforce", "Lead")
    enqueue_route("hubspot", "companies", ["501"], "webhook")

    # When: a worker takes the next messages (kombu's get, as its consumer does).
    with Connection(redis_url) as connection:
        channel = connection.default_channel
        taken = [channel.basic_get("celery", no_ack=True) for _ in range(3)]

    # Then: the webhook batch jumps the sweep backlog; the sweeps keep their order.
    names = [m.headers["task"] for m in taken if m is not None]
    assert names == [ROUTE_TASK, SWEEP_PAGE_TASK, SWEEP_PAGE_TASK]
