"""Value types of the routing core: normalized records, decisions and their traces."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple


class Outcome(StrEnum):
    """How a record ended (docs/routing-file.md#the-decision)."""

    ASSIGNED = "assigned"
    FALLBACK = "fallback"
    KEPT_EXISTING = "kept_existing"
    UNASSIGNED = "unassigned"
    SKIPPED = "skipped"
    # A reviewer approves or reassigns it before anything is written (the pool turn is taken).
    PENDING_REVIEW = "pending_review"


# Normalized record fields rules may name (docs/routing-file.md#fields); `fields.<x>` reaches raw
# CRM/CSV columns.
RECORD_FIELDS = (
    "id", "object", "name", "domain", "email", "industry", "employees", "annual_revenue",
    "country", "state", "city", "postal_code", "lead_source", "website", "owner", "phone",
)
NUMERIC_FIELDS = frozenset({"employees", "annual_revenue"})
OBJECTS = ("account", "lead", "contact")


@dataclass(frozen=True, slots=True)
class Record:
    """A CRM or CSV record, normalized once so that rules compare cheap, ready-made values.

    `raw` holds every present value trimmed with inner whitespace collapsed, keyed by normalized
    field name or `fields.<column>`; `folded` holds the lower-cased form used by string operators
    (for `industry` the word-folded form, for `domain` the normalized domain, for `country` the raw
    country folded). Absent or blank values are absent from both maps.
    """

    id: str
    object: str = "account"
    crm: str = "file"
    owner: str | None = None
    domain: str | None = None
    # The domain and its parents up to the registered domain: eu.acme.com, acme.com.
    domain_keys: tuple[str, ...] = ()
    freemail: bool = False
    country: str | None = None  # ISO 3166 alpha-2 when the raw value resolves
    industry: str | None = None  # folded word sequence
    employees: float | None = None
    annual_revenue: float | None = None
    raw: Mapping[str, str] = field(default_factory=dict)
    folded: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One rule tried: `result` is `no_match`, `no_assignee` or `won`; `detail` says why."""

    rule: str
    result: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "result": self.result, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class PoolTurn:
    """The pool state change a decision implies; applied by the caller, never by `decide`."""

    pool: str
    member: str
    window: str  # the member's cap window key, e.g. `day:2026-11-25`
    last_served: str | None  # new round-robin cursor (unchanged for other strategies)
    credits: Mapping[str, float] | None  # new smooth-weighted credits (weighted pools only)


class Decision(NamedTuple):
    """Where a record went and why (docs/routing-file.md#the-decision).

    Immutable like the other values here, but a NamedTuple rather than a frozen dataclass: one
    is built per record on the hot path, and a frozen dataclass's `__init__` measured 2.4 µs
    against 0.45 µs here (16 fields), half the budget of a decision. Copy with `_replace`.
    """

    record_id: str
    object: str
    crm: str
    outcome: Outcome
    previous_owner: str | None = None  # rep id when the owner maps to a rep, else the raw id
    owner: str | None = None  # rep id, queue id, or a kept unknown owner's raw id
    owner_crm_id: str | None = None  # what is written to the CRM
    rule: str | None = None
    reason: str = ""
    trace: tuple[TraceStep, ...] = ()
    trigger: str = "file"
    pool: str | None = None
    created_at: datetime | None = None
    decided_at: datetime | None = None
    written_at: datetime | None = None
    turn: PoolTurn | None = None
    write_error: str | None = None  # why the owner write failed (then written_at is None)
    # Every rule whose `when` the record matched, in routing-file order, the winner's and the
    # later ones' included (what `overlaps` counts; docs/operations.md#territory-overlap).
    # None: not known (a decision not made by the rules: an SLA re-route, a review answer, a
    # POST /route decision written later, or one recorded before the set was kept); () for a
    # record that reached no rule (skipped) or matched none.
    matched: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, the shape of `GET /decisions/{record_id}` and of `audit`."""
        return {
            "record_id": self.record_id,
            "crm": self.crm,
            "object": self.object,
            "previous_owner": self.previous_owner,
            "owner": self.owner,
            "owner_crm_id": self.owner_crm_id,
            "outcome": str(self.outcome),
            "rule": self.rule,
            "reason": self.reason,
            "trace": [s.to_dict() for s in self.trace],
            "trigger": self.trigger,
            "pool": self.pool,
            "created_at": _iso(self.created_at),
            "decided_at": _iso(self.decided_at),
            "written_at": _iso(self.written_at),
            "write_error": self.write_error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        return cls(
            record_id=data["record_id"],
            object=data["object"],
            crm=data["crm"],
            outcome=Outcome(data["outcome"]),
            previous_owner=data.get("previous_owner"),
            owner=data.get("owner"),
            owner_crm_id=data.get("owner_crm_id"),
            rule=data.get("rule"),
            reason=data.get("reason", ""),
            trace=tuple(TraceStep(**s) for s in data.get("trace", ())),
            trigger=data.get("trigger", "file"),
            pool=data.get("pool"),
            created_at=_parse(data.get("created_at")),
            decided_at=_parse(data.get("decided_at")),
            written_at=_parse(data.get("written_at")),
            write_error=data.get("write_error"),
            # Not in `to_dict` (the fixed shape of `GET /decisions` and `audit`): the outbox
            # entry adds it (sync/state/redis.py `encode_entry`).
            matched=None if data.get("matched") is None
            else tuple(str(name) for name in data["matched"]),
        )


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """Something that happened to a record after (or besides) its decision: written, notified,
    sla_breach, rerouted, override, review. Idempotent by `id` (see `event_id`)."""

    id: int
    decision_id: int | None
    record_id: str
    crm: str
    object: str
    kind: str
    at: datetime
    data: Mapping[str, Any] = field(default_factory=dict)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def event_id(kind: str, *key: str) -> int:
    """A positive 63-bit id derived from an event's natural key (kind plus whatever identifies
    it, e.g. a `decision_key` and a channel): a task redelivered after a crash records the same
    event under the same id, and the history keeps it once. 63 bits: PostgreSQL's BIGINT is
    signed; the chance of two distinct keys colliding stays below 1e-9 until about 10^5
    million events."""
    digest = hashlib.blake2b("\x1f".join((kind, *key)).encode("utf-8", "surrogatepass"),
                             digest_size=8).digest()
    return (int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF) or 1


def decision_key(decision: Decision) -> str:
    """A decision's natural identity, `crm:object:record_id:decided_at-µs`: the pipeline never
    learns the id the history gives a decision (the Redis commit assigns it), and a record is
    decided at most once per routing instant."""
    at = decision.decided_at
    micros = "" if at is None else str((at - _EPOCH) // timedelta(microseconds=1))
    return f"{decision.crm}:{decision.object}:{decision.record_id}:{micros}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# Review items (docs/operations.md#review-before-writing): open until a reviewer or the timeout
# acts; `claimed` is never stored as a status: a claim is a lease beside the item.
REVIEW_OPEN = "open"
REVIEW_CLOSED = ("approved", "reassigned", "superseded")


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """A decision held for review: the proposal, and where its pool turn was counted."""

    id: str  # short, stable, URL-safe: `review_id(decision_key)`
    record_id: str
    crm: str
    object: str  # the CRM's object name (`companies`, `Lead`): what the write names
    proposed_owner: str  # rep id (or queue id)
    proposed_crm_id: str | None
    rule: str | None
    pool: str | None
    window: str | None  # the pool turn's window key: a reassignment moves the count there
    reason: str
    previous_owner: str | None  # the CRM owner id when decided: approval re-checks it
    created_at: datetime
    deadline: datetime
    status: str = REVIEW_OPEN
    escalated: bool = False
    by: str | None = None  # who closed it
    closed_at: datetime | None = None
    final_owner: str | None = None  # rep id written (approved, reassigned) or found (superseded)

    @property
    def record_key(self) -> str:
        """`crm:object:record_id`, the key its record is locked and indexed under."""
        return f"{self.crm}:{self.object}:{self.record_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "record_id": self.record_id, "crm": self.crm,
            "object": self.object, "proposed_owner": self.proposed_owner,
            "proposed_crm_id": self.proposed_crm_id, "rule": self.rule, "pool": self.pool,
            "window": self.window, "reason": self.reason,
            "previous_owner": self.previous_owner, "created_at": _iso(self.created_at),
            "deadline": _iso(self.deadline), "status": self.status,
            "escalated": self.escalated, "by": self.by, "closed_at": _iso(self.closed_at),
            "final_owner": self.final_owner,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReviewItem:
        created = _parse(data["created_at"])
        deadline = _parse(data["deadline"])
        assert created is not None and deadline is not None  # written by `to_dict`
        return cls(
            id=data["id"], record_id=data["record_id"], crm=data["crm"],
            object=data["object"], proposed_owner=data["proposed_owner"],
            proposed_crm_id=data.get("proposed_crm_id"), rule=data.get("rule"),
            pool=data.get("pool"), window=data.get("window"), reason=data.get("reason", ""),
            previous_owner=data.get("previous_owner"), created_at=created, deadline=deadline,
            status=data.get("status", REVIEW_OPEN), escalated=bool(data.get("escalated")),
            by=data.get("by"), closed_at=_parse(data.get("closed_at")),
            final_owner=data.get("final_owner"),
        )


def review_id(key: str) -> str:
    """A review item's id from its decision's natural key: 16 lower-case base32 characters
    (URL-safe, no padding), the same for the same decision, so a redelivered batch that
    records the item again finds it already there."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=10).digest()
    return base64.b32encode(digest).decode("ascii").lower()
