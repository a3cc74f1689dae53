"""Redis (broker and state) crashes mid-run and comes back: workers resume, nothing
acknowledged is lost, nothing is written twice. Real redis-server with an append-only file,
the CRM simulator and `celery -A tasks worker` subprocesses."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from connectors.simulator import Simulator
from sync.state import StateStore, open_store
from tasks.queue import enqueue_route, enqueue_sweep, flush
from tests.builders import unowned
from tests.loopback import free_port
from tests.tasks.test_distributed import (
    CHECKPOINT,
    OBJ,
    Workers,
    WriteCounter,
    running_crm,
    seeded,
    sweep_done,
    wait_for,
    written_audit,
)

# Longer than redis-py's own reconnect retries (about 5 s), so the tasks really meet the outage.
OUTAGE_SECONDS = 8.0
# The broker's visibility timeout for this test: a task waiting out the outage keeps its
# message (the wait is 0.6 of it), as in production with the default of 60 s.
VISIBILITY_SECONDS = 30


def sweeping(store: StateStore) -> bool:
    """A sweep chain has finished a page and has more to go."""
    saved = json.loads(store.get_checkpoint(CHECKPOINT) or "{}")
    return bool(saved.get("cursor"))


def kill_in_next_write(sim: Simulator, server: RestartableRedis) -> threading.Event:
    """SIGKILL Redis from inside the next owner write the CRM receives, then apply the write:
    the task that sent it is mid-run when Redis goes (not between two messages, where kombu's
    Redis transport can itself lose a message: its BRPOP and the `unacked` record that follows
    are two commands, and a crash between them drops the message; the sweep chain then resumes
    from its checkpoint at beat's next start, once the chain lock lapses)."""
    killed = threading.Event()
    original = sim.hubspot_update

    def killing(obj: str, record_id: str | int, props: dict[str, object], **how: Any) -> None:
        if not killed.is_set():
            server.kill()
            killed.set()
        original(obj, record_id, props, **how)

    sim.hubspot_update = killing  # type: ignore[method-assign]
    return killed


class RestartableRedis:
    """A redis-server on a fixed loopback port whose every write is fsynced to an append-only
    file before it is answered (`appendfsync always`), so a SIGKILL loses nothing it acked."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.workdir), "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        client = redis.Redis.from_url(self.url, retry=None, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        try:
            while time.monotonic() < deadline:
                try:
                    # Answers only once the append-only file is loaded.
                    if client.ping():
                        return
                except redis.exceptions.RedisError:
                    time.sleep(0.05)
        finally:
            client.close()
        pytest.fail(f"redis-server did not come back: {(self.workdir / 'redis.log').read_text()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def test_given_redis_sigkilled_mid_run_when_it_restarts_then_work_resumes_and_none_is_lost(
        tmp_path, monkeypatch):
    # Given: 2,000 companies, a sweep chain and webhook batches on two workers, all on one
    # Redis (broker and state) that persists every acknowledged write.
    server = RestartableRedis(tmp_path)
    server.start()
    sim = seeded(2000, seed=17)
    todo = unowned(sim)
    writes = WriteCounter(sim)
    workers = Workers(tmp_path)
    refused: list[str] = []
    try:
        with running_crm(sim, server.url, monkeypatch):
            monkeypatch.setenv("ACCOUNT_ROUTER_VISIBILITY_TIMEOUT", str(VISIBILITY_SECONDS))
            workers.start()
            workers.start()
            enqueue_sweep("hubspot", OBJ)
            webhooks = todo[-300:]
            for start in range(0, len(webhooks), 50):
                enqueue_route("hubspot", OBJ, webhooks[start:start + 50], "webhook")
            flush()

            # When: once the webhook batches are done (they outrank sweep pages) and the sweep
            # is under way, Redis is SIGKILLed from inside a page's CRM write: the task holds
            # its record locks, its turns are taken, its audit not yet committed. Redis stays
            # down past redis-py's own retries and restarts from its append-only file.
            store = open_store(server.url)
            wait_for(lambda: all(writes.counts.get(i) for i in webhooks) and sweeping(store),
                     workers, "the webhooks routed and the sweep under way", poll=0.02)
            store.close()
            killed = kill_in_next_write(sim, server)
            assert killed.wait(timeout=30), "no sweep write came to kill Redis in"
            during = writes.total
            assert len(unowned(sim)) > 100, "the sweep finished before Redis could be killed"
            # Webhooks arriving meanwhile are refused (the app answers 503), not acknowledged
            # and dropped: the CRM delivers them again later.
            late = [i for i in todo if i not in webhooks][-20:]
            with pytest.raises(Exception) as raised:
                enqueue_route("hubspot", OBJ, late, "webhook")
            assert not isinstance(raised.value, AssertionError)
            refused += late
            time.sleep(OUTAGE_SECONDS)
            server.start()
            enqueue_route("hubspot", OBJ, refused, "webhook")  # the CRM's redelivery

            # Then: the same workers carry on (none died of the outage) ...
            # (Celery's consumers reconnect with a growing backoff: 2 s, 4 s, 6 s, ...)
            wait_for(lambda: writes.total > during, workers, "writes after the restart")
            store = open_store(server.url)
            wait_for(lambda: sweep_done(store), workers, "the sweep chain to finish",
                     timeout=90)
            # ... and the next scheduled sweep picks up whatever the outage parked.
            enqueue_sweep("hubspot", OBJ)
            wait_for(lambda: not unowned(sim), workers, "every company to be owned", timeout=90)
            wait_for(lambda: sweep_done(store), workers, "the second sweep to finish")
            assert len(workers.live()) == 2, workers.logs_text()

            # Nothing written twice: each company's owner was set by one write ...
            twice = {i: n for i, n in writes.counts.items() if n > 1}
            assert not twice, f"written more than once: {twice}"
            assert set(todo) <= set(writes.counts)
            # ... and no record has two audited writes (an audit row whose commit the crash
            # swallowed may be missing; its record is owned and audited as kept next time).
            audit = written_audit(store)
            assert all(len(ds) == 1 for ds in audit.values())
            store.close()
    finally:
        workers.stop_all()
        server.stop()


class FakeTask:
    name = "account_router.route"


def test_given_redis_drops_under_a_task_when_it_answers_again_then_the_body_reruns_with_its_token(
        redis_url, monkeypatch):
    from sync import pipeline as pipeline_module
    from tasks import worker

    monkeypatch.setenv("ACCOUNT_ROUTER_REDIS_URL", redis_url)
    monkeypatch.delenv("ACCOUNT_ROUTER_STATE_URL", raising=False)
    tokens: list[str | None] = []

    def body() -> None:
        tokens.append(pipeline_module._lock_owner.get())
        if len(tokens) == 1:
            raise redis.exceptions.ConnectionError("Redis went away")

    worker._outlasting_redis_outages(FakeTask(), body)  # type: ignore[arg-type]

    assert len(tokens) == 2 and tokens[0] is not None and tokens[0] == tokens[1]
    assert pipeline_module._lock_owner.get() is None  # the token does not leak past the task


def test_given_redis_still_down_after_the_wait_when_a_task_gives_up_then_its_message_is_requeued(
        monkeypatch):
    from celery.exceptions import Reject

    from tasks import worker

    closed = free_port()
    monkeypatch.setenv("ACCOUNT_ROUTER_REDIS_URL", f"redis://127.0.0.1:{closed}/0")
    monkeypatch.delenv("ACCOUNT_ROUTER_STATE_URL", raising=False)
    monkeypatch.setenv("ACCOUNT_ROUTER_VISIBILITY_TIMEOUT", "1")  # waits 0.6 s
    calls = 0

    def body() -> None:
        nonlocal calls
        calls += 1
        raise redis.exceptions.ConnectionError("Redis went away")

    with pytest.raises(Reject) as rejected:
        worker._outlasting_redis_outages(FakeTask(), body)  # type: ignore[arg-type]
    assert rejected.value.requeue is True  # back to the queue, never acknowledged as done
    assert calls == 1


def test_given_redis_drops_under_every_run_when_it_answers_each_time_then_three_runs_and_requeue(
        redis_url, monkeypatch):
    from celery.exceptions import Reject

    from tasks import worker

    monkeypatch.setenv("ACCOUNT_ROUTER_REDIS_URL", redis_url)
    monkeypatch.delenv("ACCOUNT_ROUTER_STATE_URL", raising=False)
    calls = 0

    def body() -> None:
        nonlocal calls
        calls += 1
        raise redis.exceptions.TimeoutError("Redis stalled")

    with pytest.raises(Reject) as rejected:
        worker._outlasting_redis_outages(FakeTask(), body)  # type: ignore[arg-type]
    assert rejected.value.requeue is True
    assert calls == worker.OUTAGE_ATTEMPTS == 3  # at most three runs per delivery


def test_given_a_bug_in_the_body_when_the_task_runs_then_it_is_not_mistaken_for_an_outage(
        redis_url, monkeypatch):
    from tasks import worker

    monkeypatch.setenv("ACCOUNT_ROUTER_REDIS_URL", redis_url)

    def body() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        worker._outlasting_redis_outages(FakeTask(), body)  # type: ignore[arg-type]
