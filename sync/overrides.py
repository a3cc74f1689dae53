"""Overrides: a person's owner change on a record the router assigned, told from our own writes.

See docs/operations.md#overrides. The router marks every owner write it lands (`OwnWrites`, a
pipeline follower); a later owner change that is not that write's echo, and that the CRM saw
after it, is a person's choice: recorded once as an `override` event, counted, and kept by the
pipeline from then on (`Overrides.chosen`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sync.metrics import Metrics, NullMetrics
from sync.models import Decision, HistoryEvent, decision_key, event_id
from sync.normalize import id_key
from sync.ports import Written
from sync.state.base import OwnerMark, StateStore

OVERRIDE = "override"  # the history event kind
# How long a mark lives unless the caller says (ACCOUNT_ROUTER_HISTORY_RETENTION_DAYS' default):
# past the history's retention there is no decision left to link an override to.
DEFAULT_MARK_TTL = timedelta(days=90)


class Verdict(StrEnum):
    """What an observed owner change means (`judge`)."""

    UNMARKED = "unmarked"  # the router never wrote this record's owner (or the mark expired)
    ECHO = "echo"  # the owner is the one we wrote: our own write seen again
    STALE = "stale"  # the CRM saw this change before our last write (it was overwritten)
    CLEARED = "cleared"  # the owner was emptied: the record is routed again like a new one
    OVERRIDE = "override"  # a person chose another owner: recorded now
    ALREADY = "already"  # a person had already overridden our write (counted once per write)


@dataclass(frozen=True, slots=True)
class OwnerChange:
    """A record's owner as a trigger saw it: a HubSpot `hubspot_owner_id` change event, a
    Salesforce Outbound Message, a record read by a sweep."""

    record_id: str
    owner: str | None  # the CRM owner id now; None: no owner
    at: datetime | None = None  # when the CRM says it changed (None: not said)
    by: str | None = None  # who (HubSpot `sourceId`, Salesforce `LastModifiedById`)
    source: str | None = None  # how (HubSpot `changeSource`, else the trigger: sweep...)


def judge(mark: OwnerMark | None, change: OwnerChange) -> Verdict:
    """Pure: the verdict on `change` given the record's own-write mark.

    A change the CRM dates before our last write is stale: webhooks arrive unordered and a
    sweep's page may have been read before our write, and either way our write replaced it."""
    if mark is None:
        return Verdict.UNMARKED
    if change.owner is None or not change.owner.strip():
        return Verdict.CLEARED
    if id_key(change.owner) == id_key(mark.owner):
        return Verdict.ECHO
    # Whole seconds: Salesforce stamps SystemModstamp to the second, so a person's change in
    # the second of our write may carry a stamp just before it; judged by its value then.
    if change.at is not None and change.at < mark.written_at.replace(microsecond=0):
        return Verdict.STALE
    if mark.overridden:
        return Verdict.ALREADY
    return Verdict.OVERRIDE


def override_event(mark: OwnerMark, change: OwnerChange, at: datetime,
                   to_rep: str | None = None) -> HistoryEvent:
    """The `override` event of a person's change to `mark`'s write; one per write (its id is
    derived from the write's decision), so seeing the change twice stores it once."""
    after = max(0.0, (at - mark.written_at).total_seconds())
    return HistoryEvent(
        id=event_id(OVERRIDE, mark.decision or
                    f"{mark.crm}:{mark.object}:{mark.record_id}:{mark.written_at.isoformat()}"),
        decision_id=None, record_id=mark.record_id, crm=mark.crm, object=mark.kind,
        kind=OVERRIDE, at=at,
        data={"from": mark.rep or mark.owner, "from_crm_id": mark.owner,
              "to": to_rep or change.owner, "to_crm_id": change.owner, "by": change.by,
              "source": change.source, "after_seconds": round(after, 3), "rule": mark.rule,
              "pool": mark.pool, "decision": mark.decision, "crm_object": mark.object})


def kept_reason(mark: OwnerMark, owner: str) -> str:
    """Why the pipeline keeps a record a person took over (the decision's `reason`)."""
    when = mark.overridden_at.isoformat() if mark.overridden_at else "after our write"
    by = f" by {mark.overridden_by}" if mark.overridden_by else ""
    return (f"kept existing owner {owner} (a person chose it{by} over "
            f"{mark.rep or mark.owner} at {when}; kept until the owner is cleared or the "
            "record is reprocessed)")


class OwnWrites:
    """A pipeline follower (`sync.ports.AfterWrite`): marks each landed owner write, so its
    echo is never taken for a person's change. Every write path of the pipeline ends here:
    sweeps, webhooks, reprocessing, retries, SLA re-routes, review approvals."""

    def __init__(self, store: StateStore, ttl: timedelta = DEFAULT_MARK_TTL) -> None:
        self.store = store
        self.ttl_seconds = ttl.total_seconds()

    def written(self, crm: str, obj: str, items: Sequence[Written]) -> None:
        marks = [mark_of(crm, obj, item.decision) for item in items
                 if item.decision.owner_crm_id and item.decision.written_at is not None]
        if marks:
            self.store.set_owner_marks(marks, self.ttl_seconds)


def mark_of(crm: str, obj: str, decision: Decision) -> OwnerMark:
    """The mark of one landed write (`written_at` and `owner_crm_id` set)."""
    if decision.owner_crm_id is None or decision.written_at is None:
        raise ValueError(f"decision for {decision.record_id} wrote no owner")
    return OwnerMark(crm=crm, object=obj, record_id=decision.record_id,
                     owner=decision.owner_crm_id, written_at=decision.written_at,
                     decision=decision_key(decision), kind=decision.object,
                     rep=decision.owner, rule=decision.rule, pool=decision.pool)


class Overrides:
    """Judges owner changes from any trigger against the marks, and records each override
    once: the event (durable first), then the mark's compare-and-set, then the counter."""

    def __init__(self, store: StateStore, *, metrics: Metrics | None = None,
                 rep_of: Callable[[str], str | None] = lambda _: None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.metrics: Metrics = metrics or NullMetrics()
        self.rep_of = rep_of  # CRM owner id -> rep id, for the event's `to`
        self.clock = clock

    def observe(self, crm: str, obj: str, changes: Sequence[OwnerChange],
                marks: Mapping[str, OwnerMark] | None = None) -> dict[str, Verdict]:
        """The verdict per record id; overrides are recorded and counted before this returns.
        `marks`: the records' marks when the caller has read them already."""
        if marks is None:
            marks = self.store.owner_marks(crm, obj, [c.record_id for c in changes])
        verdicts: dict[str, Verdict] = {}
        found: list[tuple[OwnerMark, OwnerChange, HistoryEvent]] = []
        for change in changes:
            mark = marks.get(change.record_id)
            verdict = judge(mark, change)
            verdicts[change.record_id] = verdict
            if verdict is Verdict.OVERRIDE and mark is not None and change.owner:
                at = change.at or self.clock()
                found.append((mark, change, override_event(
                    mark, change, at, self.rep_of(change.owner))))
        if found:
            # Durable before the mark flips: a crash in between records the event again
            # (same id, stored once) when the change is seen again, never loses it.
            self.store.record_events([event for _, _, event in found])
        for mark, change, event in found:
            assert change.owner is not None
            if self.store.mark_overridden(mark, change.owner, event.at, change.by):
                self.metrics.override(mark.rule)
            else:  # another worker saw the same change first (it counted it)
                verdicts[change.record_id] = Verdict.ALREADY
        return verdicts
