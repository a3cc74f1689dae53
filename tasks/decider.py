"""Pool turns for requests that arrive one record at a time (`POST /route`), taken by one thread
per process in batches: whatever queued while the previous batch committed is decided together.

One record per `route_batch` costs the state store's round trips (snapshot, pauses, commit) per
record, and under load those serialize: at 200 requests/s over Redis the queue grew without end.
A batch pays them once, so the busier the process, the larger the batch and the cheaper each
turn; when idle a batch is one record and nothing waits. Other processes still meet this one
only in the compare-and-set.

A request may hand its own store work around the turn to this thread too (a `Turn`: POST
/route's claim on its key before, its answer after): it then waits for this one thread, with
no worker thread of its own, and the decisions are counted together (metrics).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sync.compiler import CompiledRouting
from sync.engine import route_batch
from sync.models import Decision, Record, TraceStep
from sync.state.base import StateStore

log = logging.getLogger(__name__)

# A batch's records are decided in one pass over one snapshot: the bound keeps one batch's
# commit (and a retry after a lost compare-and-set) short whatever the backlog.
MAX_BATCH = 64
# An idle thread ends after this long; the next request starts another (tests and short-lived
# apps leave no thread behind for long).
IDLE_SECONDS = 2.0


@dataclass(frozen=True)
class Prepared:
    """A turn's record, ready to decide with `routing` for `crm`, and what enrichment found
    for it."""

    record: Record
    routing: CompiledRouting
    crm: str
    enriched: tuple[TraceStep, ...] = ()


class Turn(Protocol):
    """A request's own store work around its pool turn, run on the decider's thread with the
    batch (a request then waits for one thread, not two: `POST /route`)."""

    def prepare(self) -> Prepared | Any:
        """The record to decide; anything else is the request's answer without a turn."""

    def settle(self, decision: Decision) -> Any:
        """The request's answer, once its decision is committed."""

    def abandon(self) -> None:
        """Undo `prepare`: the batch failed (never raises)."""


@dataclass(eq=False)
class _Job:
    record: Record | None  # None until its `turn` prepared it
    routing: CompiledRouting | None  # likewise
    crm: str
    trigger: str
    enriched: tuple[TraceStep, ...]
    # Owner id by domain of the accounts the record may follow (`account_owner` rules), as
    # read from the CRM for it (POST /route with company_match); empty when none was read.
    account_owners: Mapping[str, str] = field(default_factory=dict)
    done: Future[Any] = field(default_factory=Future)
    turn: Turn | None = None


class Decider:
    """Decides records with real pool turns on `store`, one batch at a time, in one thread."""

    def __init__(self, store: StateStore, clock: Callable[[], float], *,
                 max_batch: int = MAX_BATCH, idle_seconds: float = IDLE_SECONDS,
                 count: Callable[[Sequence[Decision]], None] | None = None,
                 count_every: float = 0.0) -> None:
        self.store = store
        self.clock = clock
        # Committed decisions are counted (metrics) together, at most once every
        # `count_every` seconds (0: each batch before its answers): each count is a round
        # trip when the metrics are in Redis. Those not counted yet are, at the latest,
        # `count_every` after the last batch, and on `flush`.
        self.count = count
        self.count_every = count_every
        self._uncounted: list[Decision] = []
        self._counted_at = time.monotonic()
        self._count_lock = threading.Lock()
        self.max_batch = max_batch
        self.idle_seconds = idle_seconds
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False

    def submit(self, record: Record, routing: CompiledRouting, *, crm: str, trigger: str,
               enriched: Mapping[str, tuple[TraceStep, ...]] | None = None,
               account_owners: Mapping[str, str] | None = None) -> Future[Decision]:
        """The decision for `record`, once its batch committed (or the batch's error)."""
        job = _Job(record, routing, crm, trigger, (enriched or {}).get(record.id, ()),
                   dict(account_owners or {}))
        self._queue(job)
        return job.done

    def submit_turn(self, turn: Turn, *, trigger: str) -> Future[Any]:
        """`turn`'s answer: its `prepare` and `settle` run on this thread, around the batch
        its record is decided in (or the error of either, or of the batch)."""
        job = _Job(None, None, "", trigger, (), turn=turn)
        self._queue(job)
        return job.done

    def _queue(self, job: _Job) -> None:
        # Queued and the thread checked under one lock: the thread ends only under it, after
        # seeing the queue empty, so no job is ever left without a thread to take it.
        with self._lock:
            self._jobs.put(job)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="decider", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                first = self._jobs.get(timeout=min(self.count_every, self.idle_seconds)
                                       if self._uncounted else self.idle_seconds)
            except queue.Empty:
                if self._uncounted:
                    self.flush()
                    continue
                with self._lock:
                    if self._jobs.empty():
                        self._running = False
                        return
                continue
            jobs = [first]
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            # One routing file version, CRM and trigger per `route_batch` call.
            groups: dict[tuple[int, str, str], list[_Job]] = {}
            for job in jobs:
                if not job.done.set_running_or_notify_cancel() or not self._prepared(job):
                    continue  # given up by its request, or answered without a turn
                groups.setdefault((id(job.routing), job.crm, job.trigger), []).append(job)
            for group in groups.values():
                self._decide(group)

    def flush(self) -> None:
        """Count the decisions not counted yet (also called when the app stops)."""
        with self._count_lock:
            uncounted, self._uncounted = self._uncounted, []
            self._counted_at = time.monotonic()
        if uncounted:
            self._count(uncounted)

    def _count(self, decisions: Sequence[Decision]) -> None:
        if self.count is None:
            return
        try:
            self.count(decisions)
        except Exception:  # noqa: BLE001 - a count lost, never the thread every request needs
            log.exception("could not count %d decisions", len(decisions))

    @staticmethod
    def _prepared(job: _Job) -> bool:
        """Whether `job` has a record to decide; if not, its answer (or error) is set."""
        if job.turn is None:
            return True
        try:
            prepared = job.turn.prepare()
        except Exception as exc:  # noqa: BLE001 - the request's own answer (e.g. a 4xx)
            job.done.set_exception(exc)
            return False
        if not isinstance(prepared, Prepared):
            job.done.set_result(prepared)
            return False
        job.record, job.routing = prepared.record, prepared.routing
        job.crm, job.enriched = prepared.crm, prepared.enriched
        return True

    def _decide(self, jobs: list[_Job]) -> None:
        head = jobs[0]
        now = datetime.fromtimestamp(self.clock(), UTC)
        # One CRM's account owners by domain: what one request read is true for the others.
        owners: dict[str, str] = {}
        for job in jobs:
            for domain, owner in job.account_owners.items():
                owners.setdefault(domain, owner)
        records = [j.record for j in jobs if j.record is not None]
        assert head.routing is not None  # prepared
        try:
            decisions = route_batch(
                records, head.routing, self.store, now, trigger=head.trigger, crm=head.crm,
                enriched={r.id: j.enriched for j, r in zip(jobs, records, strict=True)
                          if j.enriched},
                account_owners=owners)
        except Exception as exc:  # noqa: BLE001 - handed to the requests, which answer it
            # Every request of the batch answers it (a store outage is all of theirs; deciding
            # each alone again would multiply the wait on a store that hangs).
            for job in jobs:
                if job.turn is not None:
                    job.turn.abandon()
                job.done.set_exception(exc)
            return
        if self.count is not None:
            if not self.count_every:
                self._count(decisions)  # before the answers: a request answered is counted
            else:
                with self._count_lock:
                    self._uncounted.extend(decisions)
        for job, decision in zip(jobs, decisions, strict=True):
            if job.turn is None:
                job.done.set_result(decision)
                continue
            try:
                job.done.set_result(job.turn.settle(decision))
            except Exception as exc:  # noqa: BLE001 - the request answers it
                job.done.set_exception(exc)
        if self._uncounted and time.monotonic() - self._counted_at >= self.count_every:
            self.flush()
