"""Distributed proofs with real parts: redis-server (broker and shared state), the CRM simulator
and `celery -A tasks worker` subprocesses that are killed, raced and starved of quota."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from connectors.simulator import Simulator, serve
from sync.history import History
from sync.history.outbox import drain
from sync.models import Decision
from sync.state import StateStore, open_store
from sync.state.redis import RedisStateStore
from tasks.queue import enqueue_route, enqueue_sweep, flush
from tests.builders import unowned
from tests.tasks.test_celery import CHAIN_LOCK, CHECKPOINT, EXAMPLE, ROOT

OBJ = "companies"
LATENCY_MS = 20  # per simulator call, so a sweep of 2,000 companies takes a few seconds
VISIBILITY_SECONDS = 5  # ACCOUNT_ROUTER_VISIBILITY_TIMEOUT: a killed worker's page comes back
WAIT_SECONDS = 45.0


class WriteCounter:
    """Counts owner writes per company as the simulator's batch update applies them, and can
    SIGKILL a worker from inside a write call: before the update is applied (`before=True`) or
    after, so the worker dies holding its record locks, with the audit and ack not done."""

    def __init__(self, sim: Simulator) -> None:
        self.counts: Counter[str] = Counter()
        self.killed = threading.Event()
        self._victim: subprocess.Popen[bytes] | None = None
        self._before = False
        original = sim.hubspot_update

        def counting(obj: str, record_id: str | int, props: dict[str, object],
                     **how: Any) -> None:
            if self._victim is not None and self._before:
                self._kill()
                raise RuntimeError("the worker died before this write was applied")
            original(obj, record_id, props, **how)  # how: the change's source, as HubSpot logs
            if obj == OBJ and "hubspot_owner_id" in props:
                self.counts[str(record_id)] += 1
            if self._victim is not None:
                self._kill()

        sim.hubspot_update = counting  # type: ignore[method-assign]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def kill_in_next_write(self, proc: subprocess.Popen[bytes], *, before: bool = False) -> None:
        self.killed.clear()
        self._before = before
        self._victim = proc

    def _kill(self) -> None:
        # Called under the simulator's lock: the worker dies before it sees the response.
        victim, self._victim = self._victim, None
        if victim is not None:
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            self.killed.set()


class Workers:
    """Worker subprocesses (`--pool solo`, or prefork children with `concurrency` > 1), each
    with its own log; all stopped by `stop_all`."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, concurrency: int = 1) -> subprocess.Popen[bytes]:
        log = self.logs / f"worker-{len(self.procs)}.log"
        pool = "solo" if concurrency == 1 else "prefork"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool", pool,
                 "--concurrency", str(concurrency), "--loglevel", "WARNING",
                 "--hostname", f"w{len(self.procs)}@%h"],
                cwd=ROOT, env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def kill9(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def live(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def stop_all(self) -> None:
        for proc in self.live():
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def logs_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.logs.glob("worker-*.log")))


@contextmanager
def beat(logs: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`celery -A tasks beat` (exactly one, as in production), its schedule file in `logs`."""
    log = logs / "beat.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "beat", "--loglevel", "WARNING",
             "--schedule", str(logs / "beat-schedule")],
            cwd=ROOT, env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def running_crm(sim: Simulator, redis_url: str, monkeypatch: pytest.MonkeyPatch,
                database_url: str | None = None) -> Iterator[None]:
    """The simulator served in-process; workers and enqueuers share Redis state and broker.
    The decision history is `database_url`, else a SQLite file of its own (these tests are
    about Redis and the workers; tests/tasks/test_history_outbox.py is about PostgreSQL)."""
    with serve(sim) as served, tempfile.TemporaryDirectory() as tmp:
        if database_url is None:
            database_url = f"sqlite:///{Path(tmp) / 'history.db'}"
            with History(database_url) as history:
                history.upgrade()  # workers refuse to start on an out-of-date schema
        for name, value in {**served.env(), "ACCOUNT_ROUTER_REDIS_URL": redis_url,
                            "ACCOUNT_ROUTER_STATE_URL": redis_url,
                            "ACCOUNT_ROUTER_DATABASE_URL": database_url,
                            "ACCOUNT_ROUTER_CONFIG": str(EXAMPLE),
                            "ACCOUNT_ROUTER_VISIBILITY_TIMEOUT": str(VISIBILITY_SECONDS)}.items():
            monkeypatch.setenv(name, value)
        yield


def seeded(companies: int, seed: int) -> Simulator:
    sim = Simulator(seed=seed)
    sim.seed(companies=companies, contacts=0, accounts=0, leads=0, days=2)
    sim.configure_faults(latency_ms=LATENCY_MS)
    return sim


def wait_for(done: Callable[[], bool], workers: Workers, what: str,
             timeout: float = WAIT_SECONDS, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        if not workers.live():
            pytest.fail(f"no worker alive while waiting for {what}:\n{workers.logs_text()}")
        time.sleep(poll)
    pytest.fail(f"timed out waiting for {what}:\n{workers.logs_text()}")


def chain_finished(store: StateStore) -> bool:
    """The last page cleared the cursor and released the chain lock."""
    saved = json.loads(store.get_checkpoint(CHECKPOINT) or "{}")
    return saved.get("cursor") is None and chain_lock_free(store)


def chain_lock_free(store: StateStore) -> bool:
    """Nobody holds the chain lock. The probe gives it back at once: held, even for a second,
    it would make a sweep start arriving meanwhile drop itself as "already running"."""
    if not store.lock_records([CHAIN_LOCK], "probe", 1):
        return False
    store.unlock_records([CHAIN_LOCK], "probe")
    return True


def recorded(store: StateStore) -> list[Decision]:
    """Every decision recorded so far, newest first: the outbox is flushed into the history
    (`running_crm`'s database) first, as beat's `history.flush` would."""
    assert isinstance(store, RedisStateStore)
    with History(os.environ["ACCOUNT_ROUTER_DATABASE_URL"]) as history:
        drain(store, history, budget_seconds=60)
        return history.decisions()


def written_audit(store: StateStore) -> dict[str, list[Decision]]:
    """Audited decisions whose CRM write succeeded, per record."""
    out: dict[str, list[Decision]] = {}
    for d in recorded(store):
        if d.written_at is not None:
            out.setdefault(d.record_id, []).append(d)
    return out


def test_given_a_sweep_chain_when_its_worker_is_sigkilled_three_times_then_it_resumes_and_writes_each_record_once(  # noqa: E501
        redis_url, monkeypatch, tmp_path):
    # Given: 2,000 companies, most unowned, behind a slowed CRM; one worker and a sweep chain.
    sim = seeded(2000, seed=7)
    todo = set(unowned(sim))
    writes = WriteCounter(sim)
    workers = Workers(tmp_path)
    with running_crm(sim, redis_url, monkeypatch):
        store = open_store(redis_url)
        try:
            current = workers.start()
            enqueue_sweep("hubspot", OBJ)
            # When: three times, once more owners appeared, the worker is SIGKILLed inside a
            # CRM write (applied, unanswered: locks held, audit and ack not done) and a fresh
            # worker starts; the broker redelivers the page after the visibility timeout and
            # the chain resumes from its checkpoint.
            for kill in range(3):
                floor = writes.total + 150
                wait_for(lambda f=floor: writes.total >= f, workers, f"{floor} owner writes",
                         poll=0.02)
                writes.kill_in_next_write(current)
                assert writes.killed.wait(timeout=10), f"kill {kill + 1} did not happen"
                assert current.returncode == -signal.SIGKILL
                assert unowned(sim), "the sweep finished before the worker could be killed"
                current = workers.start()

            # Then: every company ends with an owner and the chain ends on its own.
            wait_for(lambda: not unowned(sim), workers, "every company to be owned")
            wait_for(lambda: chain_finished(store), workers, "the chain to finish")
            # Exactly once for writes: no company's owner was written twice ...
            twice = {i: n for i, n in writes.counts.items() if n > 1}
            assert not twice, f"written more than once: {twice}"
            assert todo <= set(writes.counts), "each unowned company was written by the sweep"
            # ... and the audit never claims two writes for one record (a killed worker's
            # audit row may be lost with it, never duplicated).
            audit = written_audit(store)
            assert all(len(ds) == 1 for ds in audit.values())
            assert set(audit) <= set(writes.counts)
        finally:
            workers.stop_all()
            store.close()


def test_given_a_worker_killed_before_its_crm_write_when_the_page_is_redelivered_then_no_record_is_stranded(  # noqa: E501
        redis_url, monkeypatch, tmp_path):
    # Given: 600 companies and a sweep chain on one worker.
    sim = seeded(600, seed=7)
    writes = WriteCounter(sim)
    workers = Workers(tmp_path)
    with running_crm(sim, redis_url, monkeypatch):
        store = open_store(redis_url)
        try:
            current = workers.start()
            enqueue_sweep("hubspot", OBJ)
            # When: after the first page, the worker dies inside a write, before the CRM
            # applied it (its record locks held), and a fresh worker takes the redelivery.
            wait_for(lambda: writes.total > 0, workers, "the first page's writes", poll=0.02)
            writes.kill_in_next_write(current, before=True)
            assert writes.killed.wait(timeout=10)
            workers.start()
            wait_for(lambda: chain_finished(store) and writes.total > 100, workers,
                     "the chain to finish")
            # Then: each company is owned, or at least parked for the next sweep's retry.
            parked = set(store.failed("hubspot", OBJ))
            stranded = [i for i in unowned(sim) if i not in parked]
            assert not stranded, f"{len(stranded)} companies left unowned and unparked"
        finally:
            workers.stop_all()
            store.close()


def test_given_two_workers_when_webhook_bursts_race_a_sweep_then_each_record_is_written_once_and_smb_stays_even(  # noqa: E501
        redis_url, monkeypatch, tmp_path):
    # Given: 1,000 companies and two worker processes sharing Redis state.
    sim = seeded(1000, seed=11)
    todo = unowned(sim)
    writes = WriteCounter(sim)
    workers = Workers(tmp_path)
    with running_crm(sim, redis_url, monkeypatch):
        store = open_store(redis_url)
        try:
            workers.start()
            workers.start()
            # When: a sweep chain starts while webhook-style bursts enqueue most of the same
            # records, out of order and overlapping, so route tasks and sweep pages race for
            # them. The last quarter only the sweep reaches: on a quiet machine the bursts
            # alone can win every record they name, and the sweep must still have won some
            # for the race to have been run at all.
            enqueue_sweep("hubspot", OBJ)
            raced = todo[:len(todo) * 3 // 4]
            for start in range(0, len(raced), 40):
                burst = raced[start:start + 60]
                enqueue_route("hubspot", OBJ, list(reversed(burst)), "webhook")
                if start % 200 == 0:
                    flush()
            flush()

            # Then: every company is owned, each written exactly once, audited exactly once.
            wait_for(lambda: not unowned(sim), workers, "every company to be owned")
            wait_for(lambda: chain_finished(store), workers, "the chain to finish")
            wait_for(lambda: set(written_audit(store)) >= set(todo), workers, "the audit")
            twice = {i: n for i, n in writes.counts.items() if n > 1}
            assert not twice, f"written more than once: {twice}"
            audit = written_audit(store)
            assert set(audit) == set(writes.counts)
            assert all(len(ds) == 1 for ds in audit.values())
            # Both triggers won some records: the sweep and the route tasks really raced.
            triggers = Counter(ds[0].trigger for ds in audit.values())
            assert triggers["sweep"] > 0 and triggers["webhook"] > 0, triggers
            # The round-robin pool: turns shared out evenly across both processes.
            smb = Counter(ds[0].owner for ds in audit.values() if ds[0].rule == "everyone-else")
            assert len(smb) == 3 and sum(smb.values()) > 100, smb
            assert max(smb.values()) - min(smb.values()) <= 1, smb
        finally:
            workers.stop_all()
            store.close()


def test_given_a_small_daily_quota_when_it_runs_out_mid_sweep_then_the_chain_stops_and_resumes_after_reset(  # noqa: E501
        redis_url, monkeypatch, tmp_path):
    # Given: 1,000 companies and a HubSpot daily quota of 12 calls: a few pages' worth.
    sim = seeded(1000, seed=13)
    todo = set(unowned(sim))
    sim.configure_limits(hubspot_daily=12)
    writes = WriteCounter(sim)
    workers = Workers(tmp_path)
    with running_crm(sim, redis_url, monkeypatch):
        store = open_store(redis_url)
        try:
            workers.start()
            # When: the sweep chain runs into the quota.
            enqueue_sweep("hubspot", OBJ)
            # Then: the chain stopped on its own: lock released, checkpoint kept, work left.
            wait_for(lambda: _stopped(store, sim), workers, "the chain to stop at the quota")
            before = writes.total
            time.sleep(1.0)
            assert writes.total == before, "nothing is written once the quota is spent"
            assert unowned(sim), "the quota stopped the sweep before the end"
            assert writes.total > 0

            # When: the daily window rolls over and the sweep is started again.
            sim.reset_daily()
            sim.configure_limits(hubspot_daily=250_000)
            enqueue_sweep("hubspot", OBJ)
            # Then: it resumes from the checkpoint; every record is owned and written once.
            wait_for(lambda: not unowned(sim), workers, "every company to be owned")
            wait_for(lambda: chain_finished(store), workers, "the chain to finish")
            twice = {i: n for i, n in writes.counts.items() if n > 1}
            assert not twice, f"written more than once: {twice}"
            assert todo <= set(writes.counts)
            audit = written_audit(store)
            assert set(audit) == set(writes.counts)
            assert all(len(ds) == 1 for ds in audit.values())
        finally:
            workers.stop_all()
            store.close()


def _stopped(store: StateStore, sim: Simulator) -> bool:
    """The quota was hit, the chain released its lock and the checkpoint still holds a cursor."""
    saved = json.loads(store.get_checkpoint(CHECKPOINT) or "{}")
    if sim.stats("hubspot")["daily_used"] < sim.hubspot_daily or not saved.get("cursor"):
        return False
    return chain_lock_free(store)


# --- R1: 10,000 records through faulty HubSpot and Celery workers ------------------------------

R1_COMPANIES = 10_000
# The simulator's HubSpot owners 100..108 are the active people of the example routing file
# (109 left, 190 is archived, 199 is a queue): one uncapped round-robin pool of all nine. The
# example file's daily caps (400/day for smb) would run out long before 10,000 records.
R1_REPS = {"maya": "100", "ava": "101", "ben": "102", "hana": "103", "eve": "104",
           "finn": "105", "cara": "106", "dev": "107", "eli": "108"}
R1_RULE = "everyone"
R1_ROUTING = """\
version: 1
timezone: UTC
respect_existing_owner: valid_only
reps:
{reps}
pools:
  everyone: {{members: [{members}], strategy: round_robin}}
rules:
  - name: everyone
    assign: {{pool: everyone}}
"""
# A stalled call answers after R1_STALL_SECONDS, past the workers' read timeout
# (ACCOUNT_ROUTER_CRM_TIMEOUT_SECONDS), so the client gives up and retries while the stalled
# request still applies its work; normal calls answer in milliseconds, far inside it.
R1_CRM_TIMEOUT_SECONDS = 1.0
R1_STALL_SECONDS = 1.5
R1_WAIT_SECONDS = 120.0


def r1_routing_file(tmp_path: Path) -> Path:
    reps = "\n".join(f"  - {{id: {rep}, name: {rep.title()}, email: {rep}@example.com, "
                     f"crm_ids: {{hubspot: \"{crm_id}\"}}}}" for rep, crm_id in R1_REPS.items())
    path = tmp_path / "routing.yaml"
    path.write_text(R1_ROUTING.format(reps=reps, members=", ".join(R1_REPS)))
    return path


class OwnerChanges:
    """Per company, how often an applied write CHANGED its owner, and how many writes applied.

    A timed-out write is applied by the simulator after the client gave up, and the transport
    re-sends it: the same owner lands twice. That is a harmless repeat, not a second
    assignment, so "written twice" is judged by distinct owner changes (and by the audit),
    never by raw applied calls."""

    def __init__(self, sim: Simulator) -> None:
        self.changes: Counter[str] = Counter()
        self.applied: Counter[str] = Counter()
        original = sim.hubspot_update

        def tracking(obj: str, record_id: str | int, props: dict[str, object],
                     **how: Any) -> None:
            if obj != OBJ or "hubspot_owner_id" not in props:
                original(obj, record_id, props, **how)
                return
            key = str(record_id)
            with sim.lock:  # re-entrant: the read and the write are one step for other calls
                before = sim.owner_of("hubspot", OBJ, key)
                original(obj, record_id, props, **how)
                after = sim.owner_of("hubspot", OBJ, key)
            self.applied[key] += 1
            if after != before:
                self.changes[key] += 1

        sim.hubspot_update = tracking  # type: ignore[method-assign]


class FaultLog:
    """Counts the faults the simulator injects (its own seeded draws), so the proof can show
    that timeouts really happened: a stalled call is logged by the simulator as answered."""

    def __init__(self, sim: Simulator) -> None:
        self.rolled: Counter[str | None] = Counter()
        original = sim.roll_fault

        def counting() -> str | None:
            fault = original()
            self.rolled[fault] += 1
            return fault

        sim.roll_fault = counting  # type: ignore[method-assign]


def broker_idle(redis_url: str) -> bool:
    """No message waits in the default queue, and none is held by a worker (kombu keeps a
    delivered, unacknowledged message in its `unacked` hash: running, or counting down a
    task retry)."""
    client = redis_lib.Redis.from_url(redis_url)
    try:
        return client.llen("celery") == 0 and client.hlen("unacked") == 0
    finally:
        client.close()


def sweep_done(store: StateStore) -> bool:
    """A sweep chain stored its checkpoint, reached the last page and released its lock."""
    return store.get_checkpoint(CHECKPOINT) is not None and chain_finished(store)


def test_given_10000_companies_and_a_faulty_crm_when_two_workers_route_them_then_every_record_is_routed_once_and_the_pool_stays_even(  # noqa: E501
        redis_url, monkeypatch, tmp_path):
    # Given: 10,000 HubSpot companies, most unowned, behind a CRM where 20% of calls answer
    # 429/500/503 and 1% stall past the client's read timeout (then apply their work anyway).
    sim = seeded(R1_COMPANIES, seed=21)
    sim.configure_faults(latency_ms=2, error_rate=0.2, timeout_rate=0.01,
                         timeout_sleep_s=R1_STALL_SECONDS)
    # The injected 429s report the burst window as their interval, which the connector waits
    # out and shares with every worker (a pause of the Redis limiter). HubSpot's real window is
    # 10 s; a 0.25 s window keeps the same behaviour at test speed. Its budget is set so high
    # that only injected faults refuse calls.
    sim.configure_limits(hubspot_burst=100_000, hubspot_burst_window_s=0.25)
    initial = {i: sim.owner_of("hubspot", OBJ, i) for i in sim.ids("hubspot", OBJ)}
    todo = set(unowned(sim))
    assert len(initial) == R1_COMPANIES and len(todo) > R1_COMPANIES // 2, len(todo)
    changes = OwnerChanges(sim)
    faults = FaultLog(sim)
    workers = Workers(tmp_path)
    with running_crm(sim, redis_url, monkeypatch):
        for name, value in {
                "ACCOUNT_ROUTER_CONFIG": str(r1_routing_file(tmp_path)),
                "ACCOUNT_ROUTER_CRM_TIMEOUT_SECONDS": str(R1_CRM_TIMEOUT_SECONDS),
                # Our own pacing is not under test here: HubSpot's (simulated) limits are.
                "ACCOUNT_ROUTER_HUBSPOT_CALLS_PER_10S": "100000",
                # Nobody is killed: the production visibility timeout, so a batch slowed by
                # retries is not re-delivered to the other worker while it still runs.
                "ACCOUNT_ROUTER_VISIBILITY_TIMEOUT": "60"}.items():
            monkeypatch.setenv(name, value)
        store = open_store(redis_url)
        try:
            workers.start(concurrency=2)
            workers.start(concurrency=2)
            # When: every company arrives as webhook-style ids, in a shuffled order, coalesced
            # into route tasks of up to 100 ids ...
            ids = list(initial)
            random.Random(21).shuffle(ids)
            for start in range(0, len(ids), 100):
                enqueue_route("hubspot", OBJ, ids[start:start + 100], "webhook")
            flush()
            wait_for(lambda: broker_idle(redis_url), workers, "the route tasks to drain",
                     timeout=R1_WAIT_SECONDS, poll=0.5)
            # ... and then, as production recovery does, a sweep routes what the route tasks
            # parked (ids whose CRM calls failed after every retry) and anything left unowned.
            parked = len(store.failed("hubspot", OBJ))
            enqueue_sweep("hubspot", OBJ)
            wait_for(lambda: sweep_done(store), workers, "the sweep to finish",
                     timeout=R1_WAIT_SECONDS, poll=0.5)

            # Then: the CRM really misbehaved, so nothing below holds vacuously.
            statuses = Counter[str]()
            for per_status in sim.stats("hubspot")["calls"].values():
                statuses.update(per_status)
            assert {"429", "500", "503"} <= set(statuses), statuses
            assert faults.rolled["timeout"] > 0 and faults.rolled["error"] > 0, faults.rolled

            # Every record routed, none lost: each initially unowned company is owned by a
            # rep, every other one by a valid owner, and nothing waits on the retry list.
            final = {i: sim.owner_of("hubspot", OBJ, i) for i in initial}
            rep_ids = set(R1_REPS.values())
            lost = sorted(i for i in todo if final[i] not in rep_ids)
            assert not lost, f"{len(lost)} unowned companies not routed (parked {parked}): " \
                             f"{lost[:10]}"
            valid = {o.id for o in sim.hubspot_owners.values()
                     if not o.archived and o.type == "PERSON"}
            invalid = {i: o for i, o in final.items() if o not in valid}
            assert not invalid, f"{len(invalid)} companies without a valid owner"
            assert store.failed("hubspot", OBJ) == []

            # Zero written twice: no company's owner changed twice, and the audit never claims
            # two successful writes for one record; what it claims is what the CRM holds.
            twice = {i: n for i, n in changes.changes.items() if n > 1}
            repeats = sum(1 for n in changes.applied.values() if n > 1)
            assert not twice, f"owner changed more than once: {twice} (and {repeats} " \
                              f"companies had the same owner applied again)"
            audit = written_audit(store)
            doubles = {i: len(ds) for i, ds in audit.items() if len(ds) > 1}
            assert not doubles, f"audited as written more than once: {doubles}"
            assert all(final[i] == ds[0].owner_crm_id for i, ds in audit.items())
            # Every owner change is audited: as a written decision or, for a write that timed
            # out, landed anyway and then failed its retries, as that decision with its error
            # (the sweep then keeps the owner it set).
            decisions = recorded(store)
            unwritten = {d.record_id: d.owner_crm_id for d in decisions if d.write_error}
            unaudited = set(changes.changes) - set(audit)
            assert all(unwritten.get(i) == final[i] for i in unaudited), unaudited

            # The round-robin pool: its turns (audited assignments) are shared out evenly, and
            # so are the owners written; a turn whose write failed is re-taken by the sweep,
            # the one way the written spread may exceed the turns' spread.
            turns = Counter(d.owner for d in decisions
                            if d.rule == R1_RULE and d.outcome == "assigned")
            written = Counter(ds[0].owner for ds in audit.values() if ds[0].rule == R1_RULE)
            assert set(turns) == set(R1_REPS) and sum(written.values()) >= len(todo), written
            assert max(turns.values()) - min(turns.values()) <= 1, turns
            assert max(written.values()) - min(written.values()) <= 1 + len(unwritten), written
        finally:
            workers.stop_all()
            store.close()
