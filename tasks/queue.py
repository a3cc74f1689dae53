"""Enqueueing: a micro-batcher coalesces ids into `route` tasks, or local runs when embedded."""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

from celery import Celery

from connectors.registry import canonical_object
from connectors.settings import Settings
from tasks.celery_app import (
    ROUTE_PRIORITY,
    ROUTE_TASK,
    SWEEP_PAGE_TASK,
    SWEEP_PRIORITY,
    make_app,
)

log = logging.getLogger(__name__)

# A webhook burst (HubSpot sends up to 100 events per request, often for many records) becomes
# one CRM batch call instead of one task per record. The deployed window comes from
# ACCOUNT_ROUTER_BATCH_WINDOW_MS (default 100 ms); this is the Batcher's own default.
WINDOW_SECONDS = 0.25
MAX_IDS = 100  # the CRMs' batch read/write size: one task = one batch
# How long `enqueue_route` waits for its batch to reach the broker. A webhook must be answered
# within HubSpot's 5 s; past this the caller answers 503 and the CRM delivers again.
PUBLISH_WAIT_SECONDS = 4.0

# (crm, object, ids, trigger) -> None: where a finished batch goes.
Sink = Callable[[str, str, list[str], str], None]
Key = tuple[str, str, str]  # crm, object, trigger: a batch is audited under one trigger


@dataclass
class _Batch:
    opened: float
    ids: dict[str, None] = field(default_factory=dict)  # ordered set: duplicates collapse
    # Resolved once the batch is handed to the sink (the broker holds it), or failed with the
    # sink's error: callers that acknowledge a CRM wait on it, so nothing acknowledged is lost.
    sent: Future[None] = field(default_factory=Future)


class Batcher:
    """Coalesces ids per (crm, object, trigger): a batch goes to the sink `window` seconds
    after its first id arrived, or at once when it reaches `max_ids`. Thread-safe; the timer
    thread (`start`) only calls `flush_due`, so tests drive it with a fake clock instead.

    With `leading` (the default) a key's batch is due one window after its previous batch went
    out, so an id arriving when nothing went out for its key in the last `window` goes at once:
    a lone webhook (the usual case) waits for nobody, while a burst still coalesces, since the
    ids behind the first wait for the next window."""

    def __init__(self, sink: Sink, *, window: float = WINDOW_SECONDS, max_ids: int = MAX_IDS,
                 clock: Callable[[], float] = time.monotonic, leading: bool = True) -> None:
        if window <= 0 or max_ids < 1:
            raise ValueError("window must be > 0 and max_ids >= 1")
        self._sink = sink
        self._window = window
        self._max_ids = max_ids
        self._clock = clock
        self._leading = leading
        self._batches: dict[Key, _Batch] = {}
        self._last_sent: dict[Key, float] = {}  # when a batch of this key last went out
        self._lock = threading.Lock()
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, crm: str, object: str, ids: Iterable[str], trigger: str
            ) -> list[Future[None]]:
        """Queue ids; full batches (and batches whose window has passed) go out now. Returns
        the futures of the batches now holding these ids: done once they reached the sink."""
        key = (crm, object, trigger)
        holding: list[Future[None]] = []
        with self._lock:
            now = self._clock()
            # Batches whose window passed close before these ids arrive: ids a window apart
            # never share a task.
            ready = self._take(lambda b: now - b.opened >= self._window)
            opened = False
            for raw in ids:
                record_id = raw.strip()
                if not record_id:
                    continue
                batch = self._batches.get(key)
                if batch is None:
                    opened_at = now
                    if self._leading:
                        # Due one window after the last batch of this key went out: at once
                        # for an idle key (it leaves with this call), and never more than one
                        # batch per window for a busy one.
                        last = self._last_sent.get(key)
                        opened_at = now - self._window if last is None else \
                            max(now - self._window, last)
                    batch = self._batches[key] = _Batch(opened_at)
                    opened = True
                batch.ids[record_id] = None
                if not holding or holding[-1] is not batch.sent:
                    holding.append(batch.sent)
                if len(batch.ids) >= self._max_ids:
                    ready.append((key, self._batches.pop(key)))
                    self._last_sent[key] = now
            # An idle key's new batch is due already (leading edge): it goes with this call.
            ready += self._take(lambda b: now - b.opened >= self._window)
        if opened:
            self._kick.set()  # the timer thread has a new deadline to wait for
        self._emit(ready)
        return holding

    def flush_due(self) -> int:
        """Send the batches whose window has passed; how many were sent."""
        with self._lock:
            now = self._clock()
            ready = self._take(lambda b: now - b.opened >= self._window)
        return self._emit(ready)

    def flush(self) -> int:
        """Send every open batch now (shutdown, tests, a CLI that exits next)."""
        with self._lock:
            ready = self._take(lambda _: True)
        return self._emit(ready)

    def next_due(self) -> float | None:
        """When the oldest open batch is due, on the batcher's clock; None when none is open."""
        with self._lock:
            if not self._batches:
                return None
            return min(b.opened for b in self._batches.values()) + self._window

    def start(self) -> None:
        """Start the daemon timer thread that sends batches when their window passes."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="account-router-batcher",
                                            daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the timer thread and send what is still open."""
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            due = self.next_due()
            self._kick.wait(None if due is None else max(0.0, due - self._clock()))
            self._kick.clear()
            try:
                self.flush_due()
            except Exception as exc:  # noqa: BLE001 - the timer must survive a broker hiccup
                # The callers waiting on the batch get the error too (and answer 503).
                log.error("sending a route batch failed: %r", exc)

    def _take(self, due: Callable[[_Batch], bool]) -> list[tuple[Key, _Batch]]:
        # Caller holds the lock; the sink is called outside it so a slow broker never blocks
        # producers adding ids.
        keys = [k for k, b in self._batches.items() if due(b)]
        now = self._clock()
        for k in keys:
            self._last_sent[k] = now
        return [(k, self._batches.pop(k)) for k in keys]

    def _emit(self, ready: list[tuple[Key, _Batch]]) -> int:
        error: Exception | None = None
        for (crm, obj, trigger), batch in ready:
            try:
                self._sink(crm, obj, list(batch.ids), trigger)
            except Exception as exc:  # noqa: BLE001 - send the other batches, then raise
                batch.sent.set_exception(exc)
                error = error or exc
            else:
                batch.sent.set_result(None)
        if error is not None:
            raise error
        return len(ready)


class _Remote:
    """Redis mode: batches and sweep starts become Celery messages for the workers."""

    def __init__(self, settings: Settings) -> None:
        self.app: Celery = make_app(settings, current=False)

    def route(self, crm: str, obj: str, ids: list[str], trigger: str) -> None:
        self.app.send_task(ROUTE_TASK, args=(crm, obj, ids, trigger), priority=ROUTE_PRIORITY)

    def sweep(self, crm: str, obj: str) -> None:
        self.app.send_task(SWEEP_PAGE_TASK, args=(crm, obj), priority=SWEEP_PRIORITY)


class _Local:
    """Embedded mode: the same work on a background thread of this process."""

    def __init__(self) -> None:
        # One thread: one pipeline per CRM serves every run, and runs in order never race each
        # other for the same pool turn within this process.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="account-router")

    def route(self, crm: str, obj: str, ids: list[str], trigger: str) -> None:
        self.executor.submit(_logged, "route", _run_route, crm, obj, ids, trigger)

    def sweep(self, crm: str, obj: str) -> None:
        self.executor.submit(_logged, "sweep", _run_sweep, crm, obj)


def _run_route(crm: str, obj: str, ids: list[str], trigger: str) -> None:
    from tasks.worker import run_route

    run_route(crm, obj, ids, trigger)


def _run_sweep(crm: str, obj: str) -> None:
    from tasks.worker import pipeline_for

    report = pipeline_for(crm).sweep(obj)
    if report.stopped:
        log.warning("sweep of %s %s stopped: %s", crm, obj, report.stopped)


def _logged(what: str, fn: Callable[..., None], *args: object) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - nobody awaits the future: log instead of losing it
        log.exception("embedded %s %s failed", what, args[:2])


@dataclass
class _Backend:
    runner: _Remote | _Local
    batcher: Batcher


# Per process and per broker URL: the timer thread and the broker connection pool are reused by
# every enqueue instead of being set up per webhook.
_backends: dict[str, _Backend] = {}
_backends_lock = threading.Lock()


def _backend(settings: Settings) -> _Backend:
    key = settings.redis_url or ""
    with _backends_lock:
        found = _backends.get(key)
        if found is None:
            runner: _Remote | _Local = _Remote(settings) if settings.redis_url else _Local()
            batcher = Batcher(runner.route, window=settings.batch_window_ms / 1000)
            batcher.start()
            atexit.register(batcher.close)  # ids still in a window are sent, not dropped
            found = _backends[key] = _Backend(runner, batcher)
        return found


def enqueue_route(crm: str, object: str, ids: list[str], trigger: str, *,
                  wait: float | None = PUBLISH_WAIT_SECONDS) -> None:
    """Route these ids soon: coalesced with others for the same CRM object within the batch
    window (ACCOUNT_ROUTER_BATCH_WINDOW_MS, or 100 ids) into one `route` task, or one
    background run when embedded (no Redis).

    Returns once the broker holds the batch (so a webhook acknowledged after this call is never
    lost with this process) and raises what the broker raised, or TimeoutError after `wait`
    seconds; `wait=None` returns at once, leaving the ids in this process's window."""
    obj = canonical_object(crm, object)  # a bad object fails here, in the caller, not later
    holding = _backend(Settings()).batcher.add(crm, obj, ids, trigger)
    if wait is None:
        return
    deadline = time.monotonic() + wait
    for sent in holding:
        try:
            sent.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            raise TimeoutError(f"the broker did not take {crm} {obj} ids within {wait:g} s"
                               ) from None


def enqueue_sweep(crm: str, object: str) -> None:
    """Start a sweep: a `sweep_page` chain on the workers, or a background run when embedded."""
    _backend(Settings()).runner.sweep(crm, canonical_object(crm, object))


def flush() -> None:
    """Send every open batch of this process now."""
    with _backends_lock:
        backends = list(_backends.values())
    for backend in backends:
        backend.batcher.flush()
