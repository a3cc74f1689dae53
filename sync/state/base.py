"""The state-store port: pool cursors, credits and window counters, pauses, and bookkeeping."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, Self, runtime_checkable

from sync.models import Decision, HistoryEvent, ReviewItem


@dataclass(slots=True)
class PoolSnapshot:
    """A pool's persisted state as read at one instant; `version` guards the compare-and-set."""

    pool: str
    version: int = 0  # 0 = never written
    last_served: str | None = None
    credits: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # member -> load in the requested window


@dataclass(frozen=True, slots=True)
class PoolChange:
    """What one committed batch does to one pool."""

    pool: str
    last_served: str | None
    credits: Mapping[str, float] | None  # None: leave credits as they are
    increments: Mapping[tuple[str, str], int]  # (member, window key) -> assignments added


@dataclass(frozen=True, slots=True)
class LoadRow:
    """Assignments to one rep through one pool (None: outside pools) by outcome, for `stats`."""

    rep: str
    pool: str | None
    outcome: str
    count: int


class ClosesOnExit:
    """`with store:` closes the store on the way out; shared by both implementations."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Each store closes its own connection."""
        raise NotImplementedError


@runtime_checkable
class StateStore(Protocol):
    """One contract, two implementations (SQLite embedded, Redis distributed)."""

    def load_pools(self, windows: Mapping[str, Mapping[str, str]]) -> dict[str, PoolSnapshot]:
        """Read pools: `{pool: {member: window_key}}` -> snapshot with each member's count."""

    def commit(
        self,
        expected: Mapping[str, int],
        changes: Sequence[PoolChange],
        decisions: Sequence[Decision],
    ) -> bool:
        """Atomically: if every pool in `expected` is still at that version, apply `changes`
        (bumping each changed pool's version by one) and record `decisions` (embedded: into the
        history tables of the same file; service: into the outbox the history is fed from),
        then return True; otherwise change nothing and return False. Reading decisions back is
        the history's job (`sync.history.History`), not the state store's."""

    def record_events(self, events: Sequence[HistoryEvent]) -> None:
        """Record events about decisions or records (notified, sla_breach, override...) in the
        history: embedded, into the file's history tables; service, into the events outbox the
        history is fed from. Durable once this returns; idempotent by event id (`event_id`).
        ValueError, before anything is stored, for data that is not JSON or a naive instant."""

    def pauses(self, now: datetime) -> dict[str, datetime | None]:
        """Reps paused at `now`: rep id -> until (None = until resumed)."""

    def pause(self, rep: str, until: datetime | None = None) -> None: ...

    def resume(self, rep: str) -> bool:
        """Lift a pause; False when the rep was not paused."""

    # --- pipeline bookkeeping: checkpoints, record locks, failed writes ----------------
    # (docs/operations.md#the-pipeline)

    def get_checkpoint(self, name: str) -> str | None:
        """A named checkpoint (e.g. a sweep's watermark and cursor, as JSON); None if unset."""

    def set_checkpoint(self, name: str, value: str | None) -> None:
        """Store a checkpoint (None deletes it); durable once this returns."""

    def lock_records(self, keys: Sequence[str], token: str, ttl_seconds: float) -> set[str]:
        """Take the per-record locks that are free (or expired, or already `token`'s); return
        the keys now held by `token`. Locks expire after `ttl_seconds` so a killed worker's
        records are not locked forever."""

    def unlock_records(self, keys: Sequence[str], token: str) -> None:
        """Release the locks `token` holds among `keys`; others' locks are untouched."""

    def add_failed(self, crm: str, object: str, ids: Sequence[str]) -> None:
        """Remember records whose owner write failed, to retry them on the next run."""

    def failed(self, crm: str, object: str) -> list[str]:
        """Records awaiting a retried write, oldest first."""

    def remove_failed(self, crm: str, object: str, ids: Sequence[str]) -> None: ...

    def seen(self, key: str, ttl_seconds: float) -> bool:
        """True if the key was already marked within its TTL, else marks it and returns False;
        atomic across processes, so of two concurrent callers exactly one gets False (webhook
        dedupe: HubSpot delivers at least once)."""

    def forget(self, key: str) -> None:
        """Take a `seen` mark back (the work it guarded could not be handed over)."""

    # --- review items (docs/operations.md#review-before-writing) ------------------------

    def add_reviews(self, items: Sequence[ReviewItem]) -> None:
        """Open these items, except where the record already has an open item (the first one
        stays: a record is under review once) or the id is already known (a redelivered
        batch recording the same decision again)."""

    def reviews(self, *, closed: bool = False, limit: int | None = None) -> list[ReviewItem]:
        """Open items, oldest first (`closed`: closed items instead, newest first)."""

    def review(self, id: str) -> ReviewItem | None:
        """One item, open or closed; None for an unknown id."""

    def under_review(self, crm: str, object: str, ids: Sequence[str]) -> set[str]:
        """Which of these records have an open item (the pipeline leaves them alone)."""

    def claim_review(self, id: str, ttl_seconds: float) -> ReviewItem | None:
        """Lease an open item to one caller: of concurrent callers exactly one gets the item,
        the others None (so do callers on a closed or unknown id). The lease lapses after
        `ttl_seconds` so a reviewer killed mid-approval does not hold it forever."""

    def release_review(self, id: str) -> None:
        """Give a claimed item back to the queue (its write could not be made now)."""

    def close_review(self, item: ReviewItem) -> None:
        """Store `item` (status approved, reassigned or superseded) as closed: it leaves the
        queue and its record is no longer under review."""

    def escalate_review(self, id: str) -> bool:
        """Mark an open item escalated; True for the one call that did (escalate once)."""

    def close(self) -> None: ...
