"""Moves decisions and events from the Redis outboxes to the SQL history: in batches,
idempotent by id."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

from config.display import shorten
from config.urls import redact_urls
from sync.models import Decision, HistoryEvent

log = logging.getLogger("account_router.history")

# One flusher at a time, so two do not read, store and acknowledge the same batch. Correctness
# does not hang on it (the history skips ids it holds, and acknowledging an id twice removes
# nothing more), so a lock lapsing under a stalled flusher only costs repeated work. It is
# taken again before each batch, which keeps it alive while the outbox drains.
FLUSH_LOCK = "history:flush"
FLUSH_LOCK_TTL_SECONDS = 60.0
DEFAULT_BATCH = 1000


class OutboxStore(Protocol):
    """What the flusher needs of the state store (sync.state.redis.RedisStateStore)."""

    def outbox(self, n: int) -> list[tuple[int, Decision]]: ...

    def outbox_ack(self, ids: Sequence[int]) -> int: ...

    def outbox_size(self) -> int: ...

    def outbox_bury(self, id: int, why: str) -> bool: ...

    def event_outbox(self, n: int) -> list[tuple[str, HistoryEvent]]: ...

    def event_outbox_ack(self, entries: Sequence[str]) -> None: ...

    def event_outbox_bury(self, entry: str, why: str) -> None: ...

    def legacy_audit(self, n: int) -> list[tuple[int, Decision]]: ...

    def legacy_audit_ack(self, ids: Sequence[int]) -> None: ...

    def lock_records(self, keys: Sequence[str], token: str, ttl_seconds: float) -> set[str]: ...

    def unlock_records(self, keys: Sequence[str], token: str) -> None: ...


class HistorySink(Protocol):
    """What the flusher needs of the history (sync.history.History)."""

    def record(self, rows: Sequence[tuple[int, Decision]]) -> int: ...

    def record_events(self, events: Sequence[HistoryEvent]) -> int: ...


class FlushError(RuntimeError):
    """The history database did not take a batch; the batch is still in the outbox."""


def flush(store: OutboxStore, history: HistorySink, batch: int = DEFAULT_BATCH) -> int:
    """Move one batch (at most `batch` decisions) to the history; returns how many left the
    outbox (stored now or found already stored), 0 when it is empty or another flusher holds
    the lock. A database error raises `FlushError` and leaves the batch where it was."""
    return drain(store, history, batch=batch, budget_seconds=0.0)


def drain(store: OutboxStore, history: HistorySink, *, batch: int = DEFAULT_BATCH,
          budget_seconds: float = 5.0, clock: Callable[[], float] = time.monotonic) -> int:
    """Move batches until the outbox is empty or `budget_seconds` have passed (at least one
    batch is tried); returns how many decisions left the outbox. Decisions an older version
    kept in Redis (`audit:*`) go first, so the upgrade needs no step of its own."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    token = uuid.uuid4().hex
    deadline = clock() + budget_seconds
    moved = 0
    try:
        while True:
            if FLUSH_LOCK not in store.lock_records([FLUSH_LOCK], token, FLUSH_LOCK_TTL_SECONDS):
                log.debug("history flush: another flusher holds the lock")
                return moved
            n = _move(store, history, batch)
            moved += n
            if n == 0 or clock() >= deadline:
                return moved
    finally:
        store.unlock_records([FLUSH_LOCK], token)


def _move(store: OutboxStore, history: HistorySink, batch: int) -> int:
    legacy = store.legacy_audit(batch)
    rows = legacy or store.outbox(batch)
    if not rows:
        # Events after decisions: an event about a decision (notified, sla_breach...) then
        # never lands in SQL before the decision it is about.
        return _move_events(store, history, batch)
    new = _record(store, history, rows, isolate=not legacy)
    ids = [i for i, _ in rows]
    if legacy:
        store.legacy_audit_ack(ids)
    else:
        store.outbox_ack(ids)
    if new < len(rows):
        # A batch stored before its acknowledgement was lost (a killed flusher): skipped by id.
        log.info("history flush: %d of %d decisions were already stored", len(rows) - new,
                 len(rows))
    return len(rows)


def _move_events(store: OutboxStore, history: HistorySink, batch: int) -> int:
    entries = store.event_outbox(batch)
    if not entries:
        return 0
    _record_events(store, history, entries)
    store.event_outbox_ack([entry for entry, _ in entries])
    return len(entries)


def _record_events(store: OutboxStore, history: HistorySink,
                   entries: Sequence[tuple[str, HistoryEvent]]) -> int:
    """`history.record_events`, isolating an event the database refuses for its content as
    `_record` isolates a decision."""
    try:
        return history.record_events([event for _, event in entries])
    except Exception as exc:
        if not refused_content(exc):
            raise FlushError(describe(exc)) from None
        if len(entries) == 1:
            cause = getattr(exc, "orig", None) or exc
            store.event_outbox_bury(entries[0][0], type(cause).__name__)
            return 0
        half = len(entries) // 2
        return (_record_events(store, history, entries[:half])
                + _record_events(store, history, entries[half:]))


def _record(store: OutboxStore, history: HistorySink, rows: Sequence[tuple[int, Decision]],
            *, isolate: bool) -> int:
    """`history.record(rows)`. A batch the database refuses for its content (not for being
    down) is halved until the refused decision is alone; that one moves to `history:dead`,
    so one bad entry cannot hold up every decision behind it."""
    try:
        return history.record(rows)
    except Exception as exc:
        if not (isolate and refused_content(exc)):
            raise FlushError(describe(exc)) from None
        if len(rows) == 1:
            # The error's class only: a driver's message may quote the refused value.
            cause = getattr(exc, "orig", None) or exc
            store.outbox_bury(rows[0][0], type(cause).__name__)
            return 0
        half = len(rows) // 2
        return (_record(store, history, rows[:half], isolate=True)
                + _record(store, history, rows[half:], isolate=True))


def refused_content(exc: BaseException) -> bool:
    """The database (or the encoding before it) rejected a value, e.g. an id beyond BIGINT;
    unlike a lost connection or a missing table, retrying the same rows can never succeed."""
    cause = getattr(exc, "orig", None) or exc
    # DB-API 2 names the class for "a problem with the processed data" DataError in every
    # driver (psycopg's NumericValueOutOfRange is one), wrapped by SQLAlchemy or not.
    return any(kind.__name__ == "DataError" for kind in (*type(exc).__mro__,
                                                          *type(cause).__mro__)) \
        or isinstance(cause, (ValueError, TypeError, OverflowError))


def describe(exc: BaseException) -> str:
    """A database error in one short line with any URL's password masked. The driver's own
    first line only: SQLAlchemy appends the statement and its parameters (customer data)."""
    cause = getattr(exc, "orig", None) or exc
    first = next(iter(str(cause).strip().splitlines()), "")
    return shorten(redact_urls(f"history database unavailable: {type(cause).__name__}: {first}"),
                   300)
