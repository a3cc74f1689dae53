"""The sweep chain's lock hand-over, driven in-process: a page whose message comes back after it
already queued the next page is dropped (no second chain), and a rerun after a Redis outage
queues the next page without sweeping its page again. Against the CRM simulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from kombu.exceptions import OperationalError

from connectors.simulator import Simulator
from tasks import worker
from tasks.celery_app import SWEEP_PAGE_TASK, SWEEP_PRIORITY
from tests.tasks.test_celery import CHAIN_LOCK, CHECKPOINT, EXAMPLE, in_process_worker

LIST_CALL = "GET /crm/v3/objects/companies"


class FakeTask:
    """The bound task as `_sweep_page` sees it: a request id, and `apply_async` recorded."""

    name = SWEEP_PAGE_TASK

    def __init__(self, task_id: str, *, fail_first_enqueue: bool = False) -> None:
        self.request = SimpleNamespace(id=task_id, retries=0)
        self.queued: list[tuple[str, str, str]] = []
        self._fail = fail_first_enqueue

    def apply_async(self, args: tuple[str, str, str], **options: object) -> None:
        if self._fail:
            self._fail = False
            raise OperationalError("broker connection lost")
        # Every page queues behind webhook batches (tasks/celery_app.py).
        assert options == {"priority": SWEEP_PRIORITY}
        self.queued.append(args)


@pytest.fixture
def sim() -> Simulator:
    simulator = Simulator(seed=5)
    simulator.seed(companies=300, contacts=0, accounts=0, leads=0, days=2)  # three pages
    return simulator


@pytest.fixture
def crm(sim, tmp_path, monkeypatch) -> Iterator[None]:
    with in_process_worker(sim, EXAMPLE, f"sqlite:///{tmp_path / 's.db'}", monkeypatch):
        yield


def lists(sim: Simulator) -> int:
    return sum(sim.stats("hubspot")["calls"].get(LIST_CALL, {}).values())


def run_page(task: FakeTask, chain: str | None) -> None:
    worker._sweep_page(task, "hubspot", "companies", chain,  # type: ignore[arg-type]
                       worker._ChainStep())


def test_given_a_page_that_handed_on_when_its_message_comes_back_then_it_is_dropped(sim, crm):
    # Given: a beat start ran the first page and queued the second under a new token.
    first = FakeTask("start-1")
    run_page(first, None)
    assert len(first.queued) == 1
    handed_to = first.queued[0][2]
    assert handed_to != "start-1"
    calls = lists(sim)

    # When: the same message is delivered again (its ack was lost with the worker).
    again = FakeTask("start-1")
    run_page(again, None)

    # Then: it sweeps nothing and queues nothing: no second chain.
    assert again.queued == [] and lists(sim) == calls

    # And the real next page carries on, handing on once more; its own redelivery is dropped.
    second = FakeTask("page-2")
    run_page(second, handed_to)
    assert len(second.queued) == 1 and second.queued[0][2] not in (handed_to, "start-1")
    stale = FakeTask("page-2")
    run_page(stale, handed_to)
    assert stale.queued == []


def test_given_the_last_page_when_it_finishes_then_the_chain_lock_is_free(sim, crm):
    task, chain = FakeTask("start"), None
    for _ in range(3):
        run_page(task, chain)
        if not task.queued:
            break
        chain = task.queued.pop()[2]
        task = FakeTask(f"after-{chain}")

    assert task.queued == []
    store = worker.pipeline_for("hubspot").store
    assert json.loads(store.get_checkpoint(CHECKPOINT) or "{}").get("cursor") is None
    assert store.lock_records([CHAIN_LOCK], "probe", 1)


def test_given_the_next_page_cannot_be_queued_when_rerun_after_the_outage_then_only_the_enqueue_repeats(  # noqa: E501
        sim, crm, redis_url, monkeypatch):
    # The broker is Redis (up); the state stays in SQLite. The first enqueue fails as if the
    # broker connection dropped; the task waits for Redis and runs again.
    monkeypatch.setenv("ACCOUNT_ROUTER_REDIS_URL", redis_url)
    task = FakeTask("start-1", fail_first_enqueue=True)

    step = worker._ChainStep()

    def body() -> None:
        worker._sweep_page(task, "hubspot", "companies", None, step)  # type: ignore[arg-type]

    worker._outlasting_redis_outages(task, body)  # type: ignore[arg-type]

    assert len(task.queued) == 1 and task.queued[0][2] == step.handed_to
    assert lists(sim) == 1  # the page was swept once, not again on the rerun
