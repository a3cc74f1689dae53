"""Review before writing: approve, reassign and time out held decisions (see docs/operations.md)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sync.compiler import CompiledRouting
from sync.decide import RoutingContext, window_key
from sync.models import REVIEW_OPEN, Decision, HistoryEvent, Outcome, ReviewItem, event_id
from sync.pipeline import Pipeline
from sync.state.base import PoolChange, StateStore

log = logging.getLogger("account_router.review")

# Why review items live in the state store rather than being derived from the history: the
# queue must be fresh (a Redis-backed history only sees a decision once `history.flush` has
# moved it out of the outbox) and approval must be exactly once across processes, which needs
# an atomic claim where the coordination lives (Redis or the SQLite file). The history still
# gets every decision (pending_review, then the reviewed write) and every review event.

# A reviewer's lease on an item while its write is made: as long as the record lock the write
# takes (Pipeline.lock_ttl), so a reviewer killed mid-approval frees the item as it frees the
# record.
CLAIM_SECONDS = 120.0
# Compare-and-set attempts when moving a pool count (another worker may take a turn between).
MOVE_ATTEMPTS = 50
TIMEOUT_REVIEWER = "review_timeout"


class ReviewError(Exception):
    """A review action refused: `status` is `unknown` (404), `decided` (409: closed, or being
    decided by someone else right now), `ineligible` (422) or `unavailable` (503: the CRM or
    the record is busy; the item stays open)."""

    def __init__(self, status: str, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Reviewed:
    """What one action did: the item as it is now, and the decision audited (None if none)."""

    item: ReviewItem
    decision: Decision | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.item.id, "status": self.item.status,
                "owner": self.item.final_owner, "proposed_owner": self.item.proposed_owner,
                "decision": None if self.decision is None else self.decision.to_dict()}


# Escalation of an item past its deadline: (item, the proposed owner's manager or None).
Escalate = Callable[[ReviewItem, str | None], None]


@dataclass
class ExpireReport:
    """What one `review.expire` pass did."""

    approved: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    escalated: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # left open: retried next pass

    def to_dict(self) -> dict[str, list[str]]:
        return {"approved": self.approved, "superseded": self.superseded,
                "escalated": self.escalated, "failed": self.failed}


def listed(item: ReviewItem) -> dict[str, Any]:
    """An item as `GET /review` and `review list --json` show it (DESIGN.md §8: fixed)."""
    return {"id": item.id, "record_id": item.record_id, "crm": item.crm, "object": item.object,
            "proposed_owner": item.proposed_owner, "rule": item.rule, "reason": item.reason,
            "created_at": item.created_at.isoformat()}


def open_item(store: StateStore, item_id: str) -> ReviewItem:
    """The item if it is still open; ReviewError `unknown` or `decided` otherwise."""
    item = store.review(item_id)
    if item is None:
        raise ReviewError("unknown", f"no review item {item_id!r}")
    if item.status != REVIEW_OPEN:
        raise ReviewError("decided", f"review item {item_id} is already {item.status}"
                          + (f" by {item.by}" if item.by else ""))
    return item


def approve(pipeline: Pipeline, item_id: str, *, by: str, now: datetime) -> Reviewed:
    """Write the proposal, once: the item is claimed first, so of concurrent approvals one
    writes and the others get `decided`. If the record's owner changed while it waited, it
    is not overwritten: the item closes `superseded`."""
    item = open_item(pipeline.store, item_id)
    proposed = pipeline.routing.reps.get(item.proposed_owner)
    if proposed is not None and not proposed.active:
        # Marked as gone since the proposal: writing them would hand the record to nobody.
        raise ReviewError("ineligible", f"the proposed owner {item.proposed_owner} is "
                          "inactive in the routing file now; reassign it")
    if item.proposed_crm_id is None:
        raise ReviewError("ineligible", f"the proposed owner {item.proposed_owner} has no "
                          f"{item.crm} id in crm_ids; reassign it")
    return _decide(pipeline, item, item.proposed_owner, item.proposed_crm_id, by=by, now=now)


def reassign(pipeline: Pipeline, item_id: str, rep: str, *, by: str,
             now: datetime) -> Reviewed:
    """Write `rep` instead of the proposal: an override of the proposal (recorded), and the
    pool count moves from the proposed member to `rep`."""
    item = open_item(pipeline.store, item_id)
    crm_id = eligible_crm_id(pipeline, item, rep, now)
    return _decide(pipeline, item, rep, crm_id, by=by, now=now)


def known_crm_id(routing: CompiledRouting, item: ReviewItem, rep: str) -> str:
    """`rep`'s CRM id for the item's CRM, from the routing file alone (no CRM call); else
    ReviewError `ineligible`: not a rep of the file, marked inactive, or no id in that CRM."""
    found = routing.reps.get(rep)
    if found is None:
        raise ReviewError("ineligible", f"unknown rep {rep!r}: not in the routing file")
    if not found.active:
        raise ReviewError("ineligible", f"rep {rep} is inactive in the routing file")
    crm_id = found.crm_ids.get(item.crm)
    if crm_id is None:
        raise ReviewError("ineligible", f"rep {rep} has no {item.crm} id in crm_ids")
    return crm_id


def eligible_crm_id(pipeline: Pipeline, item: ReviewItem, rep: str, now: datetime) -> str:
    """`rep`'s CRM id if it may take the record now (a rep of the routing file, active,
    available, a user of the CRM), else ReviewError `ineligible` saying why."""
    routing = pipeline.routing
    crm_id = known_crm_id(routing, item, rep)
    ctx = RoutingContext(routing=routing, now=now, paused=pipeline.store.pauses(now),
                         users=pipeline.users(), crm=item.crm)
    why = ctx.status(rep)
    if why is not None:
        raise ReviewError("ineligible", f"rep {rep} cannot take it now: {why}")
    return crm_id


def expire(pipeline_for: Callable[[str], Pipeline], store: StateStore, *, now: datetime,
           action: str, escalate: Escalate | None = None,
           managers: Callable[[str], str | None] = lambda rep: None) -> ExpireReport:
    """Act on open items past their deadline: `approve` them, or `escalate` each once (the
    hook tells the proposed owner's manager; the item stays in the queue). `pipeline_for`
    gives the pipeline of an item's CRM (approvals write through it)."""
    report = ExpireReport()
    for item in store.reviews():
        if item.deadline > now:
            continue
        if action == "approve":
            try:
                pipeline = pipeline_for(item.crm)
                _record(store, [_event(item, "expired", TIMEOUT_REVIEWER, now,
                                       kind=pipeline.spec.kind(item.object))])
                done = approve(pipeline, item.id, by=TIMEOUT_REVIEWER, now=now)
            except ReviewError as exc:
                if exc.status == "decided":  # a reviewer got there first: nothing to do
                    continue
                if exc.status != "ineligible":
                    log.warning("review item %s not approved at its deadline: %s", item.id,
                                exc)
                    report.failed.append(item.id)  # the CRM: the next pass tries again
                    continue
                # The proposal cannot be written (its rep left): a person has to choose, so
                # it is escalated (once) like under `on_review_timeout: escalate`.
            except Exception:
                # One CRM down (or no longer configured) must not stop the others' items.
                log.exception("review item %s not approved at its deadline", item.id)
                report.failed.append(item.id)
                continue
            else:
                (report.approved if done.item.status == "approved" else
                 report.superseded).append(item.id)
                continue
        if item.escalated or not store.escalate_review(item.id):
            continue  # escalated once, already
        manager = managers(item.proposed_owner)
        kind = _kind(pipeline_for, item)
        _record(store, [_event(item, "escalated", TIMEOUT_REVIEWER, now, kind=kind,
                               manager=manager)])
        if escalate is not None:
            try:
                escalate(item, manager)
            except Exception:
                # Telling the manager is best effort; the item stays visible in the queue.
                log.exception("escalating review item %s failed", item.id)
        report.escalated.append(item.id)
    return report


def _kind(pipeline_for: Callable[[str], Pipeline], item: ReviewItem) -> str:
    try:
        return pipeline_for(item.crm).spec.kind(item.object)
    except Exception:  # the CRM is not configured here any more: keep its own object name
        return item.object


def _decide(pipeline: Pipeline, item: ReviewItem, rep: str, crm_id: str, *, by: str,
            now: datetime) -> Reviewed:
    store = pipeline.store
    claimed = store.claim_review(item.id, CLAIM_SECONDS)
    if claimed is None:
        raise ReviewError("decided", f"review item {item.id} is already decided or being "
                          "decided")
    kind = pipeline.spec.kind(item.object)
    reassigned = rep != item.proposed_owner
    routing = pipeline.routing
    verb = f"reassigned by {by} from {item.proposed_owner}" if reassigned else \
        f"approved by {by}"
    proposal = Decision(
        record_id=item.record_id, object=kind, crm=item.crm,
        # A person chose `rep`; an approval keeps the proposal's own rule (the top-level
        # fallback has none).
        outcome=Outcome.FALLBACK if item.rule is None and not reassigned else Outcome.ASSIGNED,
        previous_owner=routing.rep_for_owner(item.previous_owner) or item.previous_owner,
        owner=rep, owner_crm_id=crm_id, rule=item.rule,
        reason=f"review {verb}; proposed: {item.reason}", trigger="review",
        pool=item.pool if not reassigned else None, decided_at=now)
    try:
        decision = pipeline.write_decided(item.object, proposal,
                                          expect_owner=item.previous_owner, now=now)
    except BaseException as exc:
        store.release_review(item.id)
        if isinstance(exc, Exception):
            raise ReviewError("unavailable", f"not written: {exc}") from exc
        raise
    final: str | None
    if decision.outcome == Outcome.ASSIGNED or decision.outcome == Outcome.FALLBACK:
        if decision.written_at is None:
            store.release_review(item.id)  # stays open: approve again when the CRM answers
            raise ReviewError("unavailable", f"not written: {decision.write_error}")
        status, final = ("reassigned" if reassigned else "approved"), rep
    elif decision.outcome == Outcome.KEPT_EXISTING and decision.owner == rep:
        # The CRM already has the chosen owner: this very action's earlier attempt, killed
        # after its write and before closing the item (its lease lapsed), or a person who
        # chose the same. Nothing to write again; the item closes as what it was.
        status, final = ("reassigned" if reassigned else "approved"), rep
    else:
        # Someone else set the owner meanwhile (kept_existing) or the record is gone
        # (skipped): nothing written, and the pool count follows the owner it really has.
        status, final = "superseded", decision.owner if decision.outcome == \
            Outcome.KEPT_EXISTING else None
    closed = replace(claimed, status=status, by=by, closed_at=now, final_owner=final)
    events = [_event(closed, status, by, now, kind=kind, owner=final)]
    if status == "reassigned":
        # The reviewer overrode the proposal (the overrides report reads these events).
        events.append(HistoryEvent(
            id=event_id("override", "review", item.id), decision_id=None,
            record_id=item.record_id, crm=item.crm, object=kind, kind="override", at=now,
            data={"from": item.proposed_owner, "to": rep, "by": by, "rule": item.rule,
                  "after_seconds": max(0.0, (now - item.created_at).total_seconds()),
                  "pool": item.pool, "source": "review", "review": item.id}))
        # account_router_overrides_total{rule}: a reviewer's choice over the proposal counts.
        pipeline.metrics.override(item.rule)
    # Events first, then the close: a crash between them leaves the item open, and acting on
    # it again finds the owner written and closes it (the same event ids, stored once). The
    # count moves last; a crash just before it leaves that one count unmoved.
    _record(store, events)
    store.close_review(closed)
    if final != item.proposed_owner:
        move_count(store, pipeline, item, final, now)
    return Reviewed(closed, decision)


def move_count(store: StateStore, pipeline: Pipeline, item: ReviewItem, to: str | None,
               now: datetime) -> None:
    """Pool counts follow the final owner: the proposal's turn counted one for the proposed
    member in its window; that one moves to `to` when `to` is a member (its window now), so
    spread stays <= 1. The round-robin cursor is left where it is (the turn was taken)."""
    pool_name, window = item.pool, item.window
    if pool_name is None or window is None:
        return
    pool = pipeline.routing.pools.get(pool_name)
    increments: dict[tuple[str, str], int] = {(item.proposed_owner, window): -1}
    if pool is not None and to is not None and to in pool.members:
        per = pool.cap.per if pool.cap else "day"
        key = (to, window_key(per, now, pipeline.routing.zones[to]))
        increments[key] = increments.get(key, 0) + 1
    for _ in range(MOVE_ATTEMPTS):
        snap = store.load_pools({pool_name: {}})[pool_name]
        change = PoolChange(pool=pool_name, last_served=snap.last_served, credits=None,
                            increments=increments)
        if store.commit({pool_name: snap.version}, [change], []):
            return
    log.warning("pool count of review item %s not moved: the pool kept changing", item.id)


def _event(item: ReviewItem, action: str, by: str, at: datetime, *, kind: str,
           **data: Any) -> HistoryEvent:
    body: dict[str, Any] = {"action": action, "review": item.id, "by": by,
                            "proposed": item.proposed_owner, "rule": item.rule}
    body.update({k: v for k, v in data.items() if v is not None})
    return HistoryEvent(id=event_id("review", item.id, action), decision_id=None,
                        record_id=item.record_id, crm=item.crm, object=kind, kind="review",
                        at=at, data=body)


def _record(store: StateStore, events: Sequence[HistoryEvent]) -> None:
    store.record_events(events)
