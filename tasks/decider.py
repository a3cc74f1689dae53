"""Pool turns for requests that arrive one record at a time (`POST /route`), taken by one thread
per process in batches: whatever queued while the previous batch committed is decided together.

One record per `route_batch` costs the state store's round trips (snapshot, pauses, commit) per
record, and under load those serialize: at 200 requests/s over Redis the queue grew without end.
A batch pays them once, so the busier the process, the larger the batch and the cheaper each
turn; when idle a batch is one record and nothing waits. Other processes still meet this one
only in the compare-and-set.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime

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


@dataclass(eq=False)
class _Job:
    record: Record
    routing: CompiledRouting
    crm: str
    trigger: str
    enriched: tuple[TraceStep, ...]
    # Owner id by domain of the accounts the record may follow (`account_owner` rules), as
    # read from the CRM for it (POST /route with company_match); empty when none was read.
    account_owners: Mapping[str, str] = field(default_factory=dict)
    done: Future[Decision] = field(default_factory=Future)


class Decider:
    """Decides records with real pool turns on `store`, one batch at a time, in one thread."""

    def __init__(self, store: StateStore, clock: Callable[[], float], *,
                 max_batch: int = MAX_BATCH, idle_seconds: float = IDLE_SECONDS) -> None:
        self.store = store
        self.clock = clock
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
        # Queued and the thread checked under one lock: the thread ends only under it, after
        # seeing the queue empty, so no job is ever left without a thread to take it.
        with self._lock:
            self._jobs.put(job)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="decider", daemon=True).start()
        return job.done

    def _run(self) -> None:
        while True:
            try:
                first = self._jobs.get(timeout=self.idle_seconds)
            except queue.Empty:
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
                groups.setdefault((id(job.routing), job.crm, job.trigger), []).append(job)
            for group in groups.values():
                self._decide(group)

    def _decide(self, jobs: list[_Job]) -> None:
        head = jobs[0]
        now = datetime.fromtimestamp(self.clock(), UTC)
        # One CRM's account owners by domain: what one request read is true for the others.
        owners: dict[str, str] = {}
        for job in jobs:
            for domain, owner in job.account_owners.items():
                owners.setdefault(domain, owner)
        try:
            decisions = route_batch(
                [j.record for j in jobs], head.routing, self.store, now, trigger=head.trigger,
                crm=head.crm, enriched={j.record.id: j.enriched for j in jobs if j.enriched},
                account_owners=owners)
        except Exception as exc:  # noqa: BLE001 - handed to the requests, which answer it
            # Every request of the batch answers it (a store outage is all of theirs; deciding
            # each alone again would multiply the wait on a store that hangs).
            for job in jobs:
                job.done.set_exception(exc)
            return
        for job, decision in zip(jobs, decisions, strict=True):
            job.done.set_result(decision)
