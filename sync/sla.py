"""First-touch SLA, the pure part: was a watched record touched, and where a breach goes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from sync.decide import RoutingContext
from sync.models import Decision, Outcome, PoolTurn, TraceStep
from sync.normalize import id_key
from sync.state.base import PoolChange, WatchEntry

# The trigger of a decision an SLA breach re-routed (docs/operations.md#first-touch-sla).
TRIGGER = "sla"
REROUTE = "reroute"
NOTIFY_MANAGER = "notify_manager"

_DIGITS = re.compile(r"^\d{10,16}$")


class SlaTerms(Protocol):
    """What the watch needs of a routing file's `sla:` (config.routing.Sla)."""

    @property
    def first_touch(self) -> timedelta: ...

    @property
    def on_breach(self) -> str: ...

    @property
    def max_reroutes(self) -> int: ...


class Verdict(StrEnum):
    """What a check found about a watched record."""

    TOUCHED = "touched"  # the owner worked it: the watch ends, speed to first touch recorded
    OVERRIDDEN = "overridden"  # a person gave it to someone else: not ours to judge any more
    GONE = "gone"  # deleted from the CRM
    BREACHED = "breached"  # untouched past the deadline


@dataclass(frozen=True, slots=True)
class Check:
    entry: WatchEntry
    verdict: Verdict
    touched_at: datetime | None = None  # TOUCHED: when (the field's instant, else the check's)
    owner: str | None = None  # the CRM owner id read (OVERRIDDEN: the person's choice)

    @property
    def seconds_to_touch(self) -> float | None:
        if self.touched_at is None:
            return None
        return max(0.0, (self.touched_at - self.entry.written_at).total_seconds())


def deadline(written_at: datetime, sla: SlaTerms) -> datetime:
    return written_at + sla.first_touch


def parse_touch(value: str) -> datetime | date | None:
    """A touch field's value as an instant (ISO 8601, or epoch milliseconds as HubSpot may
    send them), a date (Salesforce `LastActivityDate`), or None for any other value (a
    status)."""
    text = value.strip()
    try:
        if _DIGITS.match(text):
            return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
        if len(text) == 10:
            return date.fromisoformat(text)
        # Salesforce writes offsets as +0000, which fromisoformat reads from Python 3.11 on.
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        # Not a time (or one past the calendar's end, from a hostile value): compared as text.
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def touched_at(entry: WatchEntry, value: object, checked_at: datetime) -> datetime | None:
    """When the record was first touched after the assignment, None if it was not: the touch
    field changed from its value at assignment, and, when it holds a time, to one after the
    write (a date: the write's day or later). The instant is the field's own when it is one,
    else the check's (the change happened at the latest then)."""
    # Compared as the routed record held it: trimmed, inner whitespace collapsed.
    text = None if value is None else " ".join(str(value).split()) or None
    if text is None or text == (entry.touch_value or None):
        return None
    parsed = parse_touch(text)
    if isinstance(parsed, datetime):
        return parsed if parsed > entry.written_at else None
    if isinstance(parsed, date):
        return checked_at if parsed >= entry.written_at.astimezone(UTC).date() else None
    return checked_at


def judge(entry: WatchEntry, properties: Mapping[str, object] | None, owner_field: str | None,
          now: datetime) -> Check:
    """The verdict on one due entry from the record as read now (None: gone)."""
    if properties is None:
        return Check(entry, Verdict.GONE)
    owner = properties.get(owner_field) if owner_field else None
    owner_text = None if owner is None else str(owner)
    if owner_field and id_key(owner_text or "") != id_key(entry.owner_crm_id):
        return Check(entry, Verdict.OVERRIDDEN, owner=owner_text)
    at = touched_at(entry, properties.get(entry.touch_field), now)
    if at is not None:
        return Check(entry, Verdict.TOUCHED, touched_at=at, owner=owner_text)
    return Check(entry, Verdict.BREACHED, owner=owner_text)


def breach_action(entry: WatchEntry, sla: SlaTerms | None, ctx: RoutingContext
                  ) -> tuple[str, PoolTurn | None, str]:
    """(action, the re-route's pool turn or None, why) for a breached entry: `reroute` to the
    next eligible member of the same pool, never back to the rep who breached nor any earlier
    breacher of this record, while re-routes remain; else `notify_manager` (also when the
    assignment was not through a pool or nobody in it is eligible). Takes the turn in `ctx`."""
    if sla is None or sla.on_breach != REROUTE:
        return NOTIFY_MANAGER, None, "on_breach is notify_manager"
    if entry.reroutes >= sla.max_reroutes:
        return NOTIFY_MANAGER, None, f"re-routed {entry.reroutes} of {sla.max_reroutes} times"
    if entry.pool is None or entry.pool not in ctx.routing.pools:
        return NOTIFY_MANAGER, None, "not assigned through a pool"
    turn, note = ctx.choose(entry.pool, exclude={*entry.breached, entry.owner})
    if turn is None:
        return NOTIFY_MANAGER, None, f"pool {entry.pool} has nobody else eligible ({note})"
    ctx.apply(turn)
    return REROUTE, turn, note


def reroute_decision(entry: WatchEntry, kind: str, turn: PoolTurn, ctx: RoutingContext,
                     sla: SlaTerms, note: str = "") -> Decision:
    """The decision a re-route writes: the pool's next member, audited with trigger `sla`."""
    rep = ctx.routing.reps.get(turn.member)
    passed = f" (passed over: {note})" if note else ""
    reason = (f"first-touch SLA {duration_text(sla.first_touch)} breached by {entry.owner}; "
              f"pool {entry.pool} -> {turn.member}{passed}")
    return Decision(
        record_id=entry.record_id, object=kind, crm=entry.crm, outcome=Outcome.ASSIGNED,
        previous_owner=entry.owner, owner=turn.member,
        owner_crm_id=rep.crm_ids.get(entry.crm) if rep is not None else None,
        rule=entry.rule, reason=reason,
        trace=(TraceStep(entry.rule or "(sla)", "won", reason),), trigger=TRIGGER,
        pool=entry.pool, decided_at=ctx.now, turn=turn)


def moved_counts(ctx: RoutingContext, rerouted: list[WatchEntry]) -> list[PoolChange]:
    """The pool changes of the re-routes taken in `ctx` with each breacher's count given back
    in the window its assignment was counted in: the pool counts follow the final owner."""
    changes = {c.pool: c for c in ctx.pending_changes()}
    out: list[PoolChange] = []
    back: dict[str, dict[tuple[str, str], int]] = {}
    for entry in rerouted:
        if entry.pool is not None and entry.window is not None:
            slot = back.setdefault(entry.pool, {})
            key = (entry.owner, entry.window)
            slot[key] = slot.get(key, 0) - 1
    for pool, change in changes.items():
        increments = dict(change.increments)
        for key, n in back.get(pool, {}).items():
            increments[key] = increments.get(key, 0) + n
        out.append(PoolChange(pool, change.last_served, change.credits, increments))
    return out


def duration_text(value: timedelta) -> str:
    """`15m`, `4h`, `1d`, `90s`: as a routing file writes durations."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
