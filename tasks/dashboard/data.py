"""What each dashboard page shows, computed from the history, the state store and the routing
file at one instant; plain values for the templates (no I/O beyond the calls named here)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Protocol

from sync.compiler import CompiledRouting
from sync.decide import RoutingContext
from sync.models import Decision, HistoryEvent, Outcome, decision_key
from sync.state.base import LoadRow, PoolSnapshot, StateStore

if TYPE_CHECKING:  # SQLAlchemy loads only when a page reads the history
    from sync.history.overrides import Override, OverrideRate

# The window selector: name -> label. "today" starts at midnight in the routing file's timezone.
WINDOWS = {"today": "Today", "7d": "7 days", "30d": "30 days"}
DEFAULT_WINDOW = "7d"
# Speed-to-lead points per window: hours today, 6-hour steps over a week, days over a month.
BUCKETS = {"today": 24, "7d": 28, "30d": 30}
OUTCOMES = ("assigned", "fallback", "kept_existing", "unassigned", "skipped",
            "pending_review")
PAGE_SIZE = 50
MAX_OFFSET = 100_000  # 2,000 pages: deeper than anyone pages by hand; an OFFSET scans that far
MAX_FAILED_SHOWN = 500  # ids listed per CRM object on the failed-writes page
MAX_FAILED_EXPLAINED = 100  # of those, how many get their last write error looked up


class SpeedPointLike(Protocol):
    """`sync.history.SpeedPoint`: one bucket of speed to lead, seconds."""

    @property
    def start(self) -> datetime: ...
    @property
    def count(self) -> int: ...
    @property
    def p50(self) -> float | None: ...
    @property
    def p95(self) -> float | None: ...


class FirstTouchLike(Protocol):
    """`sync.history.FirstTouchRow`: speed to first touch of one rep under one rule."""

    @property
    def rep(self) -> str: ...
    @property
    def rule(self) -> str | None: ...
    @property
    def touched(self) -> int: ...
    @property
    def p50(self) -> float | None: ...
    @property
    def p95(self) -> float | None: ...
    @property
    def breaches(self) -> int: ...
    @property
    def reroutes(self) -> int: ...


class MatchedGroupLike(Protocol):
    """`sync.history.store.MatchedGroup`: decisions by matched rules, winning rule, outcome."""

    @property
    def matched(self) -> tuple[str, ...] | None: ...
    @property
    def rule(self) -> str | None: ...
    @property
    def outcome(self) -> Outcome: ...
    @property
    def count(self) -> int: ...


class HistoryReader(Protocol):
    """The part of `sync.history.History` the dashboard reads (docs/operations.md)."""

    def decision_ids(self, record_id: str | None = None, rep: str | None = None,
                     rule: str | None = None, outcome: str | None = None,
                     since: datetime | None = None, until: datetime | None = None,
                     limit: int | None = None, offset: int = 0) -> list[tuple[int, Decision]]:
        ...

    def decision(self, id: int) -> Decision | None: ...

    def events(self, decision_id: int | None = None, record_id: str | None = None,
               kind: str | None = None, since: datetime | None = None,
               until: datetime | None = None, limit: int | None = None
               ) -> list[HistoryEvent]: ...

    def load(self, since: datetime | None = None,
             until: datetime | None = None) -> list[LoadRow]: ...

    def outcome_counts(self, since: datetime, until: datetime) -> dict[str, int]: ...

    def rule_hits(self, since: datetime, until: datetime) -> dict[str, int]: ...

    def speed_to_lead(self, since: datetime, until: datetime,
                      buckets: int) -> Sequence[SpeedPointLike]: ...

    def first_touch(self, since: datetime | None = None,
                    until: datetime | None = None) -> Sequence[FirstTouchLike]: ...

    def matched_groups(self, since: datetime | None = None,
                       until: datetime | None = None) -> Sequence[MatchedGroupLike]: ...


def window_bounds(window: str, now: datetime, zone: tzinfo) -> tuple[datetime, datetime]:
    """[since, until) of a window ending now; ValueError for a name not in WINDOWS."""
    if window == "today":
        local = now.astimezone(zone)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
        # At midnight itself the day so far is empty; the history wants since < until.
        return min(start, now - timedelta(microseconds=1)), now
    if window == "7d":
        return now - timedelta(days=7), now
    if window == "30d":
        return now - timedelta(days=30), now
    raise ValueError(f"window must be one of: {', '.join(WINDOWS)}")


# --- overview ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Share:
    name: str
    count: int
    percent: float


@dataclass(frozen=True, slots=True)
class Overview:
    outcomes: list[Share]
    total: int
    speed: list[SpeedPointLike]
    rules: list[Share]  # winning rule -> decisions, most first; "" = no rule
    speed_total: int
    # Speed to first touch per rep and rule, with first-touch SLA breaches and re-routes.
    first_touch: list[FirstTouchLike] = field(default_factory=list)

    @property
    def breaches(self) -> int:
        return sum(r.breaches for r in self.first_touch)

    @property
    def reroutes(self) -> int:
        return sum(r.reroutes for r in self.first_touch)

    @property
    def latest_speed(self) -> SpeedPointLike | None:
        """The most recent interval with records (the headline figure)."""
        return next((p for p in reversed(self.speed) if p.count), None)


def overview(history: HistoryReader, since: datetime, until: datetime,
             buckets: int) -> Overview:
    counts = history.outcome_counts(since, until)
    total = sum(counts.values())
    names = list(OUTCOMES) + sorted(k for k in counts if k not in OUTCOMES)
    outcomes = [Share(n, counts.get(n, 0), _pct(counts.get(n, 0), total)) for n in names]
    hits = history.rule_hits(since, until)
    hit_total = sum(hits.values())
    rules = [Share(rule, n, _pct(n, hit_total))
             for rule, n in sorted(hits.items(), key=lambda kv: (-kv[1], kv[0]))]
    speed = list(history.speed_to_lead(since, until, buckets))
    return Overview(outcomes, total, speed, rules, sum(p.count for p in speed),
                    list(history.first_touch(since, until)))


def _pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


# --- balance -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberLoad:
    rep: str
    assigned: int  # pool turns in the chosen window (from the history)
    cap_count: int  # assignments in the current cap window (from the state store)
    cap_max: int | None
    cap_percent: float | None


@dataclass(frozen=True, slots=True)
class PoolBalance:
    name: str
    strategy: str
    cap: str  # "40 / day", or "" without a cap
    members: list[MemberLoad]
    spread: int  # max - min of `assigned` over members, as `stats` computes it
    total: int


@dataclass(frozen=True, slots=True)
class RepLoad:
    rep: str
    assigned: int
    fallback: int

    @property
    def total(self) -> int:
        return self.assigned + self.fallback


@dataclass(frozen=True, slots=True)
class Balance:
    pools: list[PoolBalance]
    reps: list[RepLoad]


def balance(history: HistoryReader, store: StateStore, routing: CompiledRouting | None,
            since: datetime, until: datetime, now: datetime) -> Balance:
    rows = history.load(since=since, until=until)
    per_pool: dict[str, Counter[str]] = {}
    per_rep: dict[str, Counter[str]] = {}
    for row in rows:
        per_rep.setdefault(row.rep, Counter())[row.outcome] += row.count
        # Pool turns only: an overflow (outcome `fallback`) names the pool but is no member's
        # turn and must not count in the pool's spread (as `stats`).
        if row.pool is not None and row.outcome == "assigned":
            per_pool.setdefault(row.pool, Counter())[row.rep] += row.count
    snapshots = {}
    members: dict[str, list[str]] = {name: sorted(c) for name, c in per_pool.items()}
    if routing is not None:
        members.update({name: list(p.members) for name, p in routing.pools.items()})
        snapshots = store.load_pools(RoutingContext.pool_windows(routing, now))
    pools = []
    for name in sorted(members):
        pool = routing.pools.get(name) if routing is not None else None
        cap = pool.cap if pool is not None else None
        counts = per_pool.get(name, Counter())
        snapshot = snapshots.get(name)
        loads = []
        for rep in members[name]:
            now_count = _count(snapshot, rep)
            loads.append(MemberLoad(
                rep, counts.get(rep, 0), now_count, cap.max if cap else None,
                _pct(now_count, cap.max) if cap and cap.max else None))
        values = [m.assigned for m in loads]
        pools.append(PoolBalance(
            name, pool.strategy if pool is not None else "(no longer in the routing file)",
            f"{cap.max:,} / {cap.per}" if cap else "", loads,
            max(values) - min(values) if values else 0, sum(values)))
    reps = [RepLoad(rep, c.get("assigned", 0), c.get("fallback", 0))
            for rep, c in sorted(per_rep.items())]
    return Balance(pools, reps)


# --- reps --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RepStatus:
    id: str
    name: str
    email: str
    status: str  # available | paused | out_of_office | off_hours | inactive | at_cap
    detail: str
    paused: bool
    paused_until: datetime | None
    capped_in: list[str] = field(default_factory=list)


STATUS_LABELS = {"available": "Available", "paused": "Paused", "out_of_office": "Out of office",
                 "off_hours": "Outside hours", "inactive": "Inactive", "at_cap": "At cap"}


def reps(store: StateStore, routing: CompiledRouting, now: datetime) -> list[RepStatus]:
    pauses = store.pauses(now)
    snapshots = store.load_pools(RoutingContext.pool_windows(routing, now))
    ctx = RoutingContext(routing, now, paused=pauses, pools=snapshots)
    out = []
    for rep_id, rep in routing.reps.items():
        why = ctx.status(rep_id)
        capped = [name for name, pool in routing.pools.items()
                  if rep_id in pool.members and pool.cap is not None
                  and _count(snapshots.get(name), rep_id) >= pool.cap.max]
        if why is None:
            status = "at_cap" if capped else "available"
            detail = f"at cap in {', '.join(capped)}" if capped else ""
        elif why.startswith("paused"):
            status, detail = "paused", "until resumed" if why == "paused" else why
        elif why.startswith("out of office"):
            status, detail = "out_of_office", why
        elif why.startswith("outside working hours"):
            status, detail = "off_hours", why
        else:
            status, detail = "inactive", why
        # `pauses(now)` holds only the pauses in force at `now`.
        out.append(RepStatus(rep_id, rep.name or rep_id, rep.email or "", status, detail,
                             rep_id in pauses, pauses.get(rep_id), capped))
    return out


def _count(snapshot: PoolSnapshot | None, rep: str) -> int:
    """A member's assignments in its current cap window (0 for a pool never written)."""
    return snapshot.counts.get(rep, 0) if snapshot is not None else 0


# --- a decision's events ----------------------------------------------------------------

MAX_EVENTS_SHOWN = 50  # per decision page; a record's events are few (notices, a breach...)


@dataclass(frozen=True, slots=True)
class EventRow:
    kind: str
    at: datetime
    summary: str  # channel and recipient of a notice, or the event's data in short
    error: str | None


def decision_events(history: HistoryReader, decision_id: int,
                    decision: Decision) -> list[EventRow]:
    """Events about one decision, newest first: those stored with its id, and those naming
    it by its natural key (the pipeline's followers never learn the id, see
    `sync.models.decision_key`)."""
    key = decision_key(decision)
    rows = []
    for event in history.events(record_id=decision.record_id, limit=MAX_EVENTS_SHOWN * 4):
        if event.crm != decision.crm or event.object != decision.object:
            continue
        if event.decision_id != decision_id and event.data.get("decision") != key:
            continue
        rows.append(EventRow(event.kind, event.at, _summary(event.data),
                             str(event.data["error"]) if event.data.get("error") else None))
        if len(rows) >= MAX_EVENTS_SHOWN:
            break
    return rows


def _summary(data: Mapping[str, object]) -> str:
    if "channel" in data:
        to = f" ({data['to']})" if data.get("to") else ""
        role = " (manager)" if data.get("role") == "manager" else ""
        return f"{data['channel']} to {data.get('recipient', '?')}{role}{to}"
    shown = ", ".join(f"{k}: {v}" for k, v in data.items() if k not in ("decision", "error"))
    return shown[:300]


# --- failed writes -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FailedRow:
    record_id: str
    decision_id: int | None
    decided_at: datetime | None
    error: str | None


@dataclass(frozen=True, slots=True)
class FailedGroup:
    crm: str
    object: str
    total: int
    rows: list[FailedRow]


def failed_writes(store: StateStore, history: HistoryReader,
                  objects: Mapping[str, Collection[str]]) -> list[FailedGroup]:
    """What waits for a retried write per CRM object, with the last decision's write error."""
    groups = []
    for crm, names in objects.items():
        for obj in names:
            ids = store.failed(crm, obj)
            if not ids:
                continue
            rows = []
            for i, record_id in enumerate(ids[:MAX_FAILED_SHOWN]):
                found = _last_for(history, record_id, crm) if i < MAX_FAILED_EXPLAINED else None
                rows.append(FailedRow(record_id, found[0] if found else None,
                                      found[1].decided_at if found else None,
                                      found[1].write_error if found else None))
            groups.append(FailedGroup(crm, obj, len(ids), rows))
    return groups


def _last_for(history: HistoryReader, record_id: str,
              crm: str) -> tuple[int, Decision] | None:
    # Record ids of two CRMs can collide: the newest of this CRM's among the last few.
    for found in history.decision_ids(record_id=record_id, limit=5):
        if found[1].crm == crm:
            return found
    return None


# --- overrides ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OverridesView:
    """The overrides page: one page of the list (newest first) and the rates of the window."""

    rows: list[Override]
    total: int  # overrides in the window matching the filters
    more: bool  # a page follows
    by_rule: list[OverrideRate]
    by_rep: list[OverrideRate]


def overrides(history: HistoryReader, since: datetime, until: datetime, *,
              rule: str | None = None, rep: str | None = None,
              offset: int = 0) -> OverridesView:
    """Overrides with `at` in [since, until), filtered by rule and rep (either side of the
    change), PAGE_SIZE from `offset`; rates per rule and per rep over the whole window."""
    from sync.history import History
    from sync.history.overrides import list_overrides, override_rates

    if not isinstance(history, History):
        raise ValueError("the overrides page reads a SQL history (sync.history.History)")
    found = list_overrides(history, since, until, rule=rule, rep=rep)
    by_rule, by_rep = override_rates(history, since, until)
    return OverridesView(found[offset:offset + PAGE_SIZE], len(found),
                         len(found) > offset + PAGE_SIZE, by_rule, by_rep)
