"""The state-store port: pool cursors, credits and window counters, pauses, and bookkeeping."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, Self, runtime_checkable

from sync.models import Decision, HistoryEvent, ReviewItem

# How long a closed review item stays readable in the state store (`review ID` answers 409
# rather than 404 for it meanwhile); its events are in the history.
CLOSED_REVIEW_DAYS = 30


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
class WatchEntry:
    """A written assignment whose first touch is watched (docs/routing-file.md#sla): the
    record, who got it and through which pool and rule, when the write landed, when the SLA
    runs out, and the touch field's value at assignment. `reroutes` counts the SLA re-routes
    before this owner; `breached` names every earlier owner of this record who let the SLA
    run out (a re-route never goes back to one of them)."""

    crm: str
    object: str  # the CRM's own object name (`companies`, `Lead`)
    record_id: str
    owner: str  # rep id
    owner_crm_id: str  # the owner id written to the CRM
    pool: str | None
    rule: str | None
    decision_key: str  # `sync.models.decision_key` of the decision that wrote it
    written_at: datetime
    deadline: datetime
    touch_field: str
    touch_value: str | None  # the touch field's value when the owner was written
    window: str | None = None  # the pool cap window the assignment was counted in
    reroutes: int = 0
    breached: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """One watch per record: a later write of the record replaces it."""
        return f"{self.crm}:{self.object}:{self.record_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "crm": self.crm, "object": self.object, "record_id": self.record_id,
            "owner": self.owner, "owner_crm_id": self.owner_crm_id, "pool": self.pool,
            "rule": self.rule, "decision_key": self.decision_key,
            "written_at": self.written_at.isoformat(), "deadline": self.deadline.isoformat(),
            "touch_field": self.touch_field, "touch_value": self.touch_value,
            "window": self.window, "reroutes": self.reroutes, "breached": list(self.breached),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WatchEntry:
        return cls(
            crm=data["crm"], object=data["object"], record_id=data["record_id"],
            owner=data["owner"], owner_crm_id=data["owner_crm_id"], pool=data.get("pool"),
            rule=data.get("rule"), decision_key=data["decision_key"],
            written_at=datetime.fromisoformat(data["written_at"]),
            deadline=datetime.fromisoformat(data["deadline"]),
            touch_field=data["touch_field"], touch_value=data.get("touch_value"),
            window=data.get("window"), reroutes=int(data.get("reroutes", 0)),
            breached=tuple(data.get("breached", ())),
        )


@dataclass(frozen=True, slots=True)
class LoadRow:
    """Assignments to one rep through one pool (None: outside pools) by outcome, for `stats`."""

    rep: str
    pool: str | None
    outcome: str
    count: int


@dataclass(frozen=True, slots=True)
class OwnerMark:
    """An own-write mark: the owner the router last wrote to one record, and what it knew then,
    so a later owner change by anyone else is told apart from our own write's echo
    (docs/operations.md#overrides). `overridden_*` are set once a person changed it."""

    crm: str
    object: str  # the CRM's object name, e.g. `companies`, `Lead`
    record_id: str
    owner: str  # the CRM owner id written
    written_at: datetime
    decision: str = ""  # the decision's natural key (`sync.models.decision_key`)
    kind: str = "account"  # the record kind (`account`, `lead`, `contact`), as decisions say
    rep: str | None = None  # the rep id written, when the owner is a rep
    rule: str | None = None
    pool: str | None = None
    overridden_to: str | None = None  # the owner a person set instead (CRM id)
    overridden_at: datetime | None = None
    overridden_by: str | None = None  # who, when the CRM said

    @property
    def overridden(self) -> bool:
        return self.overridden_at is not None

    def to_json(self) -> str:
        return json.dumps({
            "crm": self.crm, "object": self.object, "record_id": self.record_id,
            "owner": self.owner, "written_at": self.written_at.isoformat(),
            "decision": self.decision, "kind": self.kind, "rep": self.rep, "rule": self.rule,
            "pool": self.pool,
            "overridden_to": self.overridden_to,
            "overridden_at": self.overridden_at.isoformat() if self.overridden_at else None,
            "overridden_by": self.overridden_by,
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> OwnerMark:
        data = json.loads(text)
        at = data.get("overridden_at")
        return cls(crm=data["crm"], object=data["object"], record_id=data["record_id"],
                   owner=data["owner"], written_at=datetime.fromisoformat(data["written_at"]),
                   decision=data.get("decision", ""), kind=data.get("kind", "account"),
                   rep=data.get("rep"),
                   rule=data.get("rule"), pool=data.get("pool"),
                   overridden_to=data.get("overridden_to"),
                   overridden_at=datetime.fromisoformat(at) if at else None,
                   overridden_by=data.get("overridden_by"))


@dataclass(frozen=True, slots=True)
class Precreated:
    """A decision `POST /route` made for a record not in the CRM yet, waiting for it to appear
    (docs/operations.md#post-route): matched by `email` (folded), else by `domain` (registered,
    never free mail), on the same CRM object, from `decided_at` until `expires_at`."""

    id: str  # the digest of the request's idempotency key
    crm: str
    object: str  # the CRM's object name (`contacts`, `Lead`)
    email: str | None
    domain: str | None
    decided_at: datetime
    expires_at: datetime
    decision: Decision  # as answered (record id `api:...`, trigger `api`)
    # The pool turn's window key (`Decision.turn` is not kept): a decision held for review
    # carries it to its review item, so a reassignment moves the count out of that window.
    window: str | None = None

    def to_json(self) -> str:
        return json.dumps({
            "id": self.id, "crm": self.crm, "object": self.object, "email": self.email,
            "domain": self.domain, "decided_at": self.decided_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            # Seconds since the epoch, for the Redis script's comparisons.
            "decided_ts": self.decided_at.timestamp(),
            "expires_ts": self.expires_at.timestamp(),
            "decision": self.decision.to_dict(),
            "window": self.window,
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Precreated:
        data = json.loads(text)
        return cls(id=data["id"], crm=data["crm"], object=data["object"],
                   email=data.get("email"), domain=data.get("domain"),
                   decided_at=datetime.fromisoformat(data["decided_at"]),
                   expires_at=datetime.fromisoformat(data["expires_at"]),
                   decision=Decision.from_dict(data["decision"]), window=data.get("window"))


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

    def load_pools_and_pauses(self, windows: Mapping[str, Mapping[str, str]], now: datetime
                              ) -> tuple[dict[str, PoolSnapshot], dict[str, datetime | None]]:
        """`load_pools(windows)` and `pauses(now)` in one step (over Redis, one round trip:
        a batch's snapshot, `sync.engine.route_batch`)."""

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

    # --- first-touch SLA watch (docs/operations.md#first-touch-sla) ----------------------

    def watch(self, entries: Sequence[WatchEntry]) -> None:
        """Start watching each entry; an entry replaces the record's earlier one (a later
        write of the record is what counts). Durable once this returns."""

    def watch_entry(self, key: str) -> WatchEntry | None:
        """The record's current watch (`WatchEntry.key`), claimed or not; None if none."""

    def claim_due(self, now: datetime, limit: int, lease_seconds: float) -> list[WatchEntry]:
        """Atomically take up to `limit` entries whose deadline is at or before `now`, oldest
        deadline first, and hide them from other claims for `lease_seconds` (after `now`): of
        two overlapping passes each entry goes to one. An entry neither ended nor replaced
        within its lease is due again (the pass that took it died)."""

    def end_watch(self, entries: Sequence[WatchEntry]) -> int:
        """Stop watching these entries; one that was replaced meanwhile (another decision
        key: the record was written again) stays. Returns how many ended."""

    def watching(self) -> int:
        """How many entries are watched, claimed or not."""
    # --- own-write marks (docs/operations.md#overrides) ---------------------------------

    def set_owner_marks(self, marks: Sequence[OwnerMark], ttl_seconds: float) -> None:
        """Remember the owners the router wrote, one mark per record, for `ttl_seconds`. A
        mark replaces the record's mark (and its override) unless the stored one was written
        later (a redelivered follower never turns a record's mark back)."""

    def owner_marks(self, crm: str, object: str, ids: Sequence[str]) -> dict[str, OwnerMark]:
        """The live marks of these records, by record id (absent: the router wrote none)."""

    def mark_overridden(self, mark: OwnerMark, to: str, at: datetime,
                        by: str | None = None) -> bool:
        """Record that a person set owner `to` instead of `mark.owner`: True for exactly one
        caller, when the stored mark is still `mark`'s write (same decision and owner) and
        not overridden yet; otherwise change nothing and return False. Atomic across
        processes, so a change seen twice (a webhook and a sweep) counts once."""
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
        """Store `item` (status approved, reassigned or superseded, `closed_at` set) as
        closed: it leaves the queue and its record is no longer under review. Closed items are
        kept CLOSED_REVIEW_DAYS after they closed (the history keeps their events for good);
        older ones are dropped as others close."""

    def escalate_review(self, id: str) -> bool:
        """Mark an open item escalated; True for the one call that did (escalate once)."""

    # --- decisions made before the CRM record (docs/operations.md#post-route) ------------

    def put_answer(self, key: str, answer: str, ttl_seconds: float,
                   entry: Precreated | None = None) -> None:
        """Remember the answer given under an idempotency key for `ttl_seconds` (replacing
        any earlier one); with `entry`, keep it too, as `put_precreated(entry, ttl_seconds)`
        does, in the same step (one round trip)."""

    def answer(self, key: str) -> str | None:
        """The answer remembered under `key`, None when none is live."""

    def claim_answer(self, key: str, claim: str, claim_seconds: float
                     ) -> tuple[bool, str | None]:
        """In one atomic step: `(False, answer)` when an answer is remembered under `key`;
        else mark `claim` exactly as `seen(claim, claim_seconds)` does and return
        `(True, None)` to the one caller that marked it, `(False, None)` to the others while
        the mark lives (`forget(claim)` takes it back)."""

    def put_precreated(self, entry: Precreated, ttl_seconds: float) -> None:
        """Keep `entry` for its record to claim, for `ttl_seconds` of wall-clock time at most
        (the instants in the entry decide whether it still matches; see `take_precreated`).
        An entry with the same id replaces the earlier one."""

    def take_precreated(self, crm: str, object: str, email: str | None, domain: str | None,
                        now: datetime) -> Precreated | None:
        """Atomically take (remove and return) the oldest entry of this CRM object whose
        email is `email`, else the oldest whose domain is `domain`, among those with
        `decided_at <= now < expires_at`; None when none matches. Of concurrent callers,
        each entry goes to one: a decision is given to one record."""

    def take_precreated_many(self, crm: str, object: str,
                             keys: Sequence[tuple[str | None, str | None]], now: datetime
                             ) -> list[Precreated | None]:
        """`take_precreated` for each (email, domain) in turn, in one round trip: a batch of
        records asks once. Two keys that match the same entry: the first takes it."""

    def close(self) -> None: ...
