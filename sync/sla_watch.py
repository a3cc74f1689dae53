"""First-touch SLA watch: entries from landed writes, and the pass that judges the due ones.

See docs/operations.md#first-touch-sla.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sync.compiler import CompiledRouting
from sync.decide import RoutingContext, window_key
from sync.engine import MAX_ATTEMPTS, CommitConflict
from sync.models import Decision, HistoryEvent, Outcome, decision_key, event_id
from sync.pipeline import Pipeline, RunReport
from sync.ports import CrmError, CrmRecord, Written
from sync.sla import (
    REROUTE,
    TRIGGER,
    Check,
    Verdict,
    breach_action,
    deadline,
    judge,
    moved_counts,
    reroute_decision,
)
from sync.state.base import PoolChange, StateStore, WatchEntry

log = logging.getLogger("account_router.sla")

CLAIM_BATCH = 200  # entries judged per batch read (Salesforce reads 200 ids a query)
# A pass holds its claimed entries this long; one that dies leaves them due again after it.
# Far longer than judging a batch (one read, one write), so a live pass never loses its own.
LEASE_SECONDS = 300.0


class SlaMetrics(Protocol):
    """What the watch counts (tasks/metrics.py implements it)."""

    def sla_breach(self, action: str) -> None: ...

    def first_touch(self, seconds: float) -> None: ...


class BreachNotifier(Protocol):
    """Who hears about a breach: the manager (and, after a re-route, the rep who breached).
    The new owner of a re-route is told by the pipeline's own notify follower, like any
    write."""

    def breached(self, entry: WatchEntry, kind: str, name: str | None, action: str,
                 new_owner: str | None, at: datetime) -> None: ...


class FirstTouchWatch:
    """The pipeline follower (`sync.ports.AfterWrite`) that starts a watch for every landed
    write an SLA applies to (`CompiledRouting.sla_for`: rule, then pool, then the file), on
    every write path: sweep, webhook, reprocess, review approval, an SLA re-route. The touch
    field's value at assignment comes from the record as routed (the connector reads it)."""

    def __init__(self, routing: CompiledRouting, store: StateStore,
                 touch_fields: Mapping[str, str]) -> None:
        self.routing = routing
        self.store = store
        self.touch_fields = touch_fields  # CRM object -> its touch field

    def written(self, crm: str, obj: str, items: Sequence[Written]) -> None:
        touch = self.touch_fields.get(obj)
        if not touch:
            return
        entries = [e for e in (self.entry(crm, obj, touch, w.decision, w.record.raw)
                               for w in items) if e is not None]
        self.store.watch(entries)

    def entry(self, crm: str, obj: str, touch: str, d: Decision,
              raw: Mapping[str, str]) -> WatchEntry | None:
        if d.written_at is None or d.owner is None or d.owner_crm_id is None \
                or d.owner not in self.routing.reps:
            return None  # unwritten, or a queue: nobody to touch it
        sla = self.routing.sla_for(d.rule, d.pool)
        if sla is None:
            return None
        reroutes: int = 0
        breached: tuple[str, ...] = ()
        if d.trigger == TRIGGER:
            # A re-route carries the record's history on: how often it moved, and who let it
            # lapse before (the entry it replaces is still there: the pass ends it after).
            prior = self.store.watch_entry(f"{crm}:{obj}:{d.record_id}")
            reroutes = (prior.reroutes if prior else 0) + 1
            earlier = list(prior.breached) if prior else []
            if d.previous_owner:
                earlier.append(d.previous_owner)
            breached = tuple(dict.fromkeys(earlier))
        return WatchEntry(
            crm=crm, object=obj, record_id=d.record_id, owner=d.owner,
            owner_crm_id=d.owner_crm_id, pool=d.pool, rule=d.rule,
            decision_key=decision_key(d), written_at=d.written_at,
            # The clock starts when the owner is next in their working hours: a record
            # queued overnight is due the next morning, not at 2 am.
            deadline=deadline(self.routing.on_duty_from(d.owner, d.written_at), sla),
            touch_field=touch,
            touch_value=raw.get(f"fields.{touch}"),
            window=self._window(d), reroutes=reroutes, breached=breached)

    def _window(self, d: Decision) -> str | None:
        """The cap window the assignment was counted in: the pool turn's, else (a decision
        written after the fact, e.g. a review's approval) the pool's window at its routing
        instant; None outside pools (nothing to give back on a re-route)."""
        if d.turn is not None:
            return d.turn.window
        pool = self.routing.pools.get(d.pool or "")
        if pool is None or d.outcome != Outcome.ASSIGNED or d.owner not in pool.members:
            return None
        at = d.decided_at or d.written_at
        assert at is not None  # written: written_at is set
        return window_key(pool.cap.per if pool.cap else "day", at, self.routing.zones[d.owner])


@dataclass
class PassReport:
    """What one `sla-check` pass did."""

    due: int = 0  # entries claimed
    touched: int = 0
    breaches: Counter[str] = field(default_factory=Counter)  # by action
    rerouted: int = 0  # re-routes whose write landed
    ended: int = 0  # overridden by a person, or gone from the CRM: not judged
    unread: int = 0  # left for a later pass (CRM not configured or unavailable)
    first_touch: list[float] = field(default_factory=list)  # seconds, assignment -> touch

    def to_dict(self) -> dict[str, object]:
        return {"due": self.due, "touched": self.touched, "breaches": dict(self.breaches),
                "rerouted": self.rerouted, "ended": self.ended, "unread": self.unread}


class _NoMetrics:
    def sla_breach(self, action: str) -> None:
        return None

    def first_touch(self, seconds: float) -> None:
        return None


class SlaCheck:
    """One pass over the due watch entries (`account-router sla-check`, beat's `sla.check`).

    Entries are claimed atomically (`StateStore.claim_due`), so overlapping passes never judge
    one twice; each CRM object's are judged from one batch read of their records (the
    connector's batch read: no call per record)."""

    def __init__(self, routing: CompiledRouting, store: StateStore,
                 pipelines: Callable[[str], Pipeline | None], *,
                 metrics: SlaMetrics | None = None, notifier: BreachNotifier | None = None,
                 batch: int = CLAIM_BATCH, lease_seconds: float = LEASE_SECONDS) -> None:
        self.routing = routing
        self.store = store
        self.pipelines = pipelines  # CRM name -> its pipeline (None: not configured here)
        self.metrics: SlaMetrics = metrics or _NoMetrics()
        self.notifier = notifier
        self.batch = batch
        self.lease_seconds = lease_seconds

    def run(self, now: datetime) -> PassReport:
        report = PassReport()
        while True:
            claimed = self.store.claim_due(now, self.batch, self.lease_seconds)
            report.due += len(claimed)
            groups: dict[tuple[str, str], list[WatchEntry]] = {}
            for entry in claimed:
                groups.setdefault((entry.crm, entry.object), []).append(entry)
            for (crm, obj), entries in groups.items():
                self._judge(crm, obj, entries, now, report)
            # A claimed entry is not due again within its lease, so this ends.
            if len(claimed) < self.batch:
                return report

    def _judge(self, crm: str, obj: str, entries: list[WatchEntry], now: datetime,
               report: PassReport) -> None:
        pipeline = self.pipelines(crm)
        if pipeline is None:
            log.warning("first-touch SLA: %s is not configured here; %d entries wait",
                        crm, len(entries))
            report.unread += len(entries)
            return
        try:
            found = pipeline.connector.read_records(obj, [e.record_id for e in entries])
        except CrmError as exc:
            # The lease runs out and a later pass reads them again.
            log.warning("first-touch SLA: reading %s %s failed: %s", crm, obj, exc)
            report.unread += len(entries)
            return
        records = {r.id: r for r in found}
        owner_field = pipeline.spec.field_map(obj, self.routing.file.field_maps).get("owner")
        checks = [judge(e, records[e.record_id].properties if e.record_id in records else None,
                        owner_field, now) for e in entries]
        events: list[HistoryEvent] = []
        kind = pipeline.spec.kind(obj)
        done: list[WatchEntry] = []
        for check in checks:
            if check.verdict == Verdict.TOUCHED:
                seconds = check.seconds_to_touch or 0.0
                report.touched += 1
                report.first_touch.append(seconds)
                self.metrics.first_touch(seconds)
                events.append(_event("touched", check.entry, kind, check.touched_at or now, {
                    "rep": check.entry.owner, "rule": check.entry.rule,
                    "pool": check.entry.pool, "seconds": seconds,
                    "field": check.entry.touch_field}))
                done.append(check.entry)
            elif check.verdict in (Verdict.OVERRIDDEN, Verdict.GONE) or \
                    self.routing.sla_for(check.entry.rule, check.entry.pool) is None:
                # A person's choice (the overrides follower records it), a deleted record, or
                # an SLA the routing file no longer sets: nothing left to watch.
                report.ended += 1
                done.append(check.entry)
        if events:
            self.store.record_events(events)
        self.store.end_watch(done)
        ended = {id(e) for e in done}
        breached = [c for c in checks
                    if c.verdict == Verdict.BREACHED and id(c.entry) not in ended]
        if breached:
            self._breached(pipeline, obj, kind, breached, records, now, report)

    def _breached(self, pipeline: Pipeline, obj: str, kind: str, checks: list[Check],
                  records: Mapping[str, CrmRecord], now: datetime, report: PassReport) -> None:
        plans = self._plan([c.entry for c in checks], pipeline, now)
        rerouted = [(d, records[e.record_id]) for e, _, d in plans if d is not None]
        landed: set[str] = set()
        if rerouted:
            written = pipeline.write_decisions(obj, rerouted,
                                               report=RunReport(pipeline.crm, obj, settled=[]))
            landed = {d.record_id for d in written.settled or () if d.written_at is not None}
            self._give_back([(e, d) for e, _, d in plans
                             if d is not None and e.record_id not in landed])
        events: list[HistoryEvent] = []
        for entry, action, decision in plans:
            report.breaches[action] += 1
            self.metrics.sla_breach(action)
            # A re-route whose write did not land leaves the record with its owner.
            new_owner = decision.owner if decision is not None \
                and entry.record_id in landed else None
            events.append(_event("sla_breach", entry, kind, now, {
                "rep": entry.owner, "rule": entry.rule, "pool": entry.pool, "action": action,
                "deadline": entry.deadline.isoformat(), "reroutes": entry.reroutes,
                "to": new_owner}))
            if decision is not None and entry.record_id in landed:
                report.rerouted += 1
                events.append(_event("rerouted", entry, kind, now, {
                    "from": entry.owner, "to": decision.owner, "rule": entry.rule,
                    "pool": entry.pool, "reason": decision.reason}))
            elif decision is not None:
                log.warning("first-touch SLA: the re-route of %s %s to %s was not written",
                            pipeline.crm, entry.record_id, decision.owner)
            if self.notifier is not None:
                try:
                    self.notifier.breached(entry, kind, _name(pipeline, obj, records.get(
                        entry.record_id)), action, new_owner, now)
                except Exception:
                    # Telling people never undoes or blocks what the pass did.
                    log.exception("first-touch SLA: notifying a breach failed")
        self.store.record_events(events)
        # A landed re-route's follower replaced the entry (another decision key): it stays.
        self.store.end_watch([e for e, _, _ in plans])

    def _give_back(self, unwritten: list[tuple[WatchEntry, Decision]]) -> None:
        """Re-routes whose write did not land (another run held the record, the CRM refused):
        their counts go back from the would-be owner to the breacher, who still owns the
        record, so the pool counts keep matching the owners; the cursor stays where the turn
        left it (that member's turn was taken)."""
        by_pool: dict[str, dict[tuple[str, str], int]] = {}
        for entry, decision in unwritten:
            if decision.turn is None or entry.pool is None:
                continue
            moved = by_pool.setdefault(entry.pool, {})
            taken = (decision.turn.member, decision.turn.window)
            moved[taken] = moved.get(taken, 0) - 1
            if entry.window is not None:
                mine = (entry.owner, entry.window)
                moved[mine] = moved.get(mine, 0) + 1
        if not by_pool:
            return
        for _ in range(MAX_ATTEMPTS):
            snapshots = self.store.load_pools({pool: {} for pool in by_pool})
            changes = [PoolChange(pool, snapshots[pool].last_served, None, moved)
                       for pool, moved in by_pool.items()]
            if self.store.commit({pool: snapshots[pool].version for pool in by_pool},
                                 changes, []):
                return
        raise CommitConflict(f"gave up after {MAX_ATTEMPTS} conflicting commits")

    def _plan(self, entries: list[WatchEntry], pipeline: Pipeline, now: datetime
              ) -> list[tuple[WatchEntry, str, Decision | None]]:
        """Each breach's action, with the re-route decision when there is one; the pool turns
        and the counts moved from breacher to new owner commit together, compare-and-set like
        any batch of turns."""
        routing = self.routing
        kind = pipeline.spec.kind(entries[0].object)
        for _ in range(MAX_ATTEMPTS):
            snapshots = self.store.load_pools(RoutingContext.pool_windows(routing, now))
            ctx = RoutingContext(routing=routing, now=now, paused=self.store.pauses(now),
                                 pools=snapshots, users=pipeline.users(), crm=pipeline.crm)
            plans: list[tuple[WatchEntry, str, Decision | None]] = []
            moved: list[WatchEntry] = []
            for entry in entries:
                sla = routing.sla_for(entry.rule, entry.pool)
                action, turn, note = breach_action(entry, sla, ctx)
                if action == REROUTE and turn is not None and sla is not None:
                    moved.append(entry)
                    plans.append((entry, action, reroute_decision(entry, kind, turn, ctx, sla,
                                                                  note)))
                else:
                    plans.append((entry, action, None))
            changes = moved_counts(ctx, moved)
            if not changes or self.store.commit(
                    {c.pool: snapshots[c.pool].version for c in changes}, changes, []):
                return plans
        raise CommitConflict(f"gave up after {MAX_ATTEMPTS} conflicting commits")


def _event(kind: str, entry: WatchEntry, record_kind: str, at: datetime,
           data: Mapping[str, object]) -> HistoryEvent:
    # `decision` names the watched assignment by its natural key, as the notify events do: the
    # decision's page lists the events that name it.
    return HistoryEvent(id=event_id(kind, entry.decision_key), decision_id=None,
                        record_id=entry.record_id, crm=entry.crm, object=record_kind,
                        kind=kind, at=at, data={**data, "decision": entry.decision_key})


def _name(pipeline: Pipeline, obj: str, record: CrmRecord | None) -> str | None:
    """The record's name as routing normalized it, for messages; None when unreadable."""
    if record is None:
        return None
    try:
        return pipeline.to_record(obj, record).raw.get("name")
    except ValueError:
        return None
