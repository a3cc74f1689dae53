"""The pure routing decision: record, rules and a snapshot in, Decision out.

See docs/routing-file.md#routing-semantics.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import NamedTuple

from config.hours import describe, leave_bounds
from config.routing import Rep
from sync.compiler import CompiledRouting, CompiledRule
from sync.models import Decision, Outcome, PoolTurn, Record, TraceStep
from sync.normalize import id_key
from sync.state.base import PoolChange, PoolSnapshot


@dataclass(frozen=True, slots=True)
class OwnerInfo:
    """What a CRM says about a user id: active, and a person rather than a queue."""

    active: bool
    person: bool = True


def window_key(per: str, now: datetime, zone: tzinfo) -> str:
    """The cap window containing `now` in a rep's timezone: day, week (from Monday), month."""
    local = now.astimezone(zone)
    day = local.date()
    if per == "day":
        return f"day:{day.isoformat()}"
    if per == "week":
        return f"week:{(day - timedelta(days=day.weekday())).isoformat()}"
    return f"month:{day.year:04d}-{day.month:02d}"


@dataclass(frozen=True, slots=True)
class _Chain:
    """The result of trying [rep, backup, manager]: who (if anyone) and the story."""

    assignee: str | None
    via: str | None  # None: the rep itself; else "backup" or "manager"
    notes: str  # why earlier candidates were passed over


class _Resolved(NamedTuple):
    """One rule's answer: who and how, or (`assignee` None) nobody, and why in `reason`."""

    assignee: str | None
    reason: str
    outcome: Outcome = Outcome.ASSIGNED
    pool: str | None = None  # the pool that took a turn, or whose overflow answered
    turn: PoolTurn | None = None


class _FastWin(NamedTuple):
    """A memoized win of a rep or queue rule met first: the decision minus the record."""

    assignee: str
    outcome: Outcome
    rule: str
    reason: str
    trace: tuple[TraceStep, ...]
    crm_ids: Mapping[str, str] | None  # the assignee's; None for a queue


class _PathWin(NamedTuple):
    """A memoized whole answer for a path of rules whose answers are all memoized: the
    decision minus the record. `assignee` None: nobody (unassigned)."""

    assignee: str | None
    outcome: Outcome
    rule: str | None
    pool: str | None
    reason: str
    trace: tuple[TraceStep, ...]
    crm_ids: Mapping[str, str] | None  # the assignee's when a rep; None for a queue or nobody


class _Owner(NamedTuple):
    """What an existing owner means under the routing file's policy, memoized per owner."""

    previous: str
    rep_id: str | None
    kept_reason: str | None  # None: not kept, route it


@dataclass
class _PendingChange:
    """What the batch so far does to one pool (becomes a `PoolChange`)."""

    last_served: str | None = None
    credits: dict[str, float] | None = None  # None: leave the stored credits as they are
    increments: dict[tuple[str, str], int] = field(default_factory=dict)


# `RoutingContext.traces`: a trace by the rules tried and their answers, and whether it won.
Traces = dict[tuple[tuple[int, ...], tuple[str, ...], bool], tuple[TraceStep, ...]]
_TRACES_KEPT = 4096


@dataclass
class RoutingContext:
    """A snapshot of everything variable a decision depends on, taken once per batch.

    `pools` is the caller's working copy: `decide` only reads it; `apply` advances it after each
    decision so the next record in the batch sees the turn taken.
    """

    routing: CompiledRouting
    now: datetime
    paused: Mapping[str, datetime | None] = field(default_factory=dict)
    pools: dict[str, PoolSnapshot] = field(default_factory=dict)
    users: Mapping[str, OwnerInfo] | None = None  # CRM directory by id key; None in file mode
    account_owners: Mapping[str, str] = field(default_factory=dict)  # domain -> owner id
    # The CRM being routed, with `users`: a rep is then only eligible as an active user there.
    crm: str | None = None
    # Records whose current owner a person chose over the router's (an override): id -> the
    # reason to keep it, under every `respect_existing_owner` policy.
    chosen: Mapping[str, str] = field(default_factory=dict)
    # What enrichment did to each record before the rules (record id -> its trace steps,
    # sync/enrich.py): put at the front of the record's trace. Empty: no enrichment.
    enriched: Mapping[str, tuple[TraceStep, ...]] = field(default_factory=dict)
    # Whether decisions carry `matched` (every rule the record matches: the history keeps it
    # for the dashboard's overlap page). Off where nothing is recorded (a dry run): outside
    # route-file, whose workers have the matches already, it evaluates every rule's `when`.
    track_matched: bool = True
    _status: dict[str, str | None] = field(default_factory=dict, init=False)
    # Reps unavailable only because the routing instant is outside their working hours:
    # rep id -> when their hours start again (for a pool with `outside_hours: queue`).
    _off_hours: dict[str, str] = field(default_factory=dict, init=False)
    _chains: dict[str, _Chain] = field(default_factory=dict, init=False)
    _windows: dict[str, dict[str, str]] = field(default_factory=dict, init=False)
    _changes: dict[str, _PendingChange] = field(default_factory=dict, init=False)
    # Memoized per snapshot: the outcome of rep and queue rules (they depend on availability
    # only, not on the record), and the whole answer when such a rule is the first match.
    _static: dict[int, _Resolved] = field(default_factory=dict, init=False)
    _fast: dict[int, _FastWin] = field(default_factory=dict, init=False)
    # Memoized until the next turn taken (`apply`): pool answers that took no turn (a pool
    # whose members are all at cap answers the same until a count changes), and whole answers
    # by the path of rules tried, when every rule on it is memoized. A long file past its
    # caps is almost all such rows.
    _pooled: dict[int, _Resolved] = field(default_factory=dict, init=False)
    _paths: dict[tuple[int, ...], _PathWin] = field(default_factory=dict, init=False)
    _pool_paths: list[tuple[int, ...]] = field(default_factory=list, init=False)
    _owners: dict[str, _Owner] = field(default_factory=dict, init=False)
    # Traces by rules tried and their answers (`trace`): this snapshot's, or the caller's for
    # many snapshots (route-file keeps one for a run, so a trace stays one object throughout).
    traces: Traces = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("the routing instant must be timezone-aware")
        routing = self.routing
        for rep_id, rep in routing.reps.items():
            self._status[rep_id] = self._unavailable(rep_id, rep)
        for name, pool in routing.pools.items():
            per = pool.cap.per if pool.cap else "day"
            self._windows[name] = {m: window_key(per, self.now, routing.zones[m])
                                   for m in pool.members}
            self.pools.setdefault(name, PoolSnapshot(pool=name))

    @staticmethod
    def pool_windows(routing: CompiledRouting, now: datetime) -> dict[str, dict[str, str]]:
        """`{pool: {member: window key}}` for `StateStore.load_pools` at this instant."""
        out: dict[str, dict[str, str]] = {}
        for name, pool in routing.pools.items():
            per = pool.cap.per if pool.cap else "day"
            out[name] = {m: window_key(per, now, routing.zones[m]) for m in pool.members}
        return out

    def _unavailable(self, rep_id: str, rep: Rep) -> str | None:
        if not rep.active:
            return "inactive"
        if self.users is not None and self.crm is not None:
            # Writing an archived or unknown user as owner would fail (or worse, succeed):
            # in a CRM, a rep is routable only as an active person there.
            crm_id = rep.crm_ids.get(self.crm)
            if crm_id is None:
                return f"has no {self.crm} id in crm_ids"
            user = self.users.get(id_key(crm_id))
            if user is None or not user.active or not user.person:
                return f"is not an active {self.crm} user ({crm_id})"
        if rep_id in self.paused:
            until = self.paused[rep_id]
            if until is None:
                return "paused"
            if until > self.now:
                return f"paused until {until.isoformat()}"
        zone = self.routing.zones[rep_id]
        # Leave and working hours are wall-clock times in the rep's timezone, taken at the
        # routing instant (never the machine's clock): docs/routing-file.md#working-hours.
        local = self.now.astimezone(zone).replace(tzinfo=None)
        for leave in rep.out_of_office:
            since, until = leave_bounds(leave.start, leave.end)
            if since <= local < until:
                back = leave.end.isoformat(sep=" ", timespec="minutes") \
                    if isinstance(leave.end, datetime) else leave.end.isoformat()
                return f"out of office until {back}"
        schedule = self.routing.schedules.get(rep_id)
        if schedule is not None and not schedule.contains(local):
            self._off_hours[rep_id] = describe(schedule.next_start(local), zone.key)
            return f"outside working hours ({describe(local, zone.key)})"
        return None

    def status(self, rep_id: str) -> str | None:
        """None when the rep can take a record now, else why not."""
        return self._status[rep_id]

    def chain(self, rep_id: str) -> _Chain:
        """Try exactly [rep, rep.backup, rep.manager]: direct links only
        (docs/routing-file.md#rep-chain)."""
        cached = self._chains.get(rep_id)
        if cached is not None:
            return cached
        rep = self.routing.reps[rep_id]
        notes: list[str] = []
        result = None
        for via, candidate in ((None, rep_id), ("backup", rep.backup), ("manager", rep.manager)):
            if candidate is None:
                continue
            why = self._status[candidate]
            if why is None:
                result = _Chain(candidate, via, "; ".join(notes))
                break
            label = candidate if via is None else f"{via} {candidate}"
            notes.append(f"{label} {why}")
        if result is None:
            if rep.backup is None and rep.manager is None:
                notes.append("no backup or manager")
            result = _Chain(None, None, "; ".join(notes))
        self._chains[rep_id] = result
        return result

    # -- pools ---------------------------------------------------------------------------

    def choose(self, pool_name: str, exclude: Container[str] = ()
               ) -> tuple[PoolTurn | None, str]:
        """The pool's next turn under its strategy, or None and why nobody is eligible.
        Members in `exclude` are passed over (a first-touch SLA re-route never goes back to a
        rep who let it run out)."""
        pool = self.routing.pools[pool_name]
        snap = self.pools[pool_name]
        eligible: list[str] = []
        passed: list[str] = []
        cap = pool.cap
        for member in pool.members:
            why = "breached the first-touch SLA" if member in exclude else self._status[member]
            if why is None and cap is not None and snap.counts.get(member, 0) >= cap.max:
                why = f"at cap {cap.max}/{cap.per}"
            if why is None and pool.strategy == "weighted" and pool.weights.get(member, 1) == 0:
                why = "weight 0"
            if why is None:
                eligible.append(member)
            else:
                passed.append(f"{member} {why}")
        note = "; ".join(passed)
        if not eligible and pool.outside_hours == "queue":
            # Nobody is in hours: the turn stays in the pool, among the members who are only
            # outside their hours (caps and weights still hold), and the record waits in the
            # chosen rep's queue until their hours start (docs/routing-file.md#pools).
            for member in pool.members:
                if member in exclude or member not in self._off_hours:
                    continue
                if cap is not None and snap.counts.get(member, 0) >= cap.max:
                    continue
                if pool.strategy == "weighted" and pool.weights.get(member, 1) == 0:
                    continue
                eligible.append(member)
            if eligible:
                turn = self._turn(pool_name, eligible)
                starts = self._off_hours[turn.member]
                return turn, (f"{note}; every member outside working hours, queued for "
                              f"{turn.member} (hours start {starts})")
        if not eligible:
            return None, note or "no members"
        return self._turn(pool_name, eligible), note

    def _turn(self, pool_name: str, eligible: list[str]) -> PoolTurn:
        """The pool strategy's pick among `eligible` (non-empty, in member order)."""
        pool = self.routing.pools[pool_name]
        snap = self.pools[pool_name]
        windows = self._windows[pool_name]
        if pool.strategy == "round_robin":
            members = pool.members
            last = snap.last_served
            # The cursor remembers the last member served; the next eligible member after it in list
            # order takes the turn, so an added member takes its listed place
            # (docs/routing-file.md#edge-cases-pools-and-windows).
            start = members.index(last) + 1 if last in members else 0
            chosen = eligible[0]
            for k in range(len(members)):
                candidate = members[(start + k) % len(members)]
                if candidate in eligible:
                    chosen = candidate
                    break
            return PoolTurn(pool_name, chosen, windows[chosen], chosen, None)
        if pool.strategy == "weighted":
            # Smooth weighted round robin (nginx): eligible members gain their weight, the
            # richest takes the turn and pays the total. Away members' credit stays frozen, so a
            # returning rep gets no catch-up flood.
            credits = {m: snap.credits.get(m, 0.0) for m in pool.members}
            total = 0.0
            best: str | None = None
            for member in eligible:
                weight = float(pool.weights.get(member, 1))
                credits[member] += weight
                total += weight
                if best is None or credits[member] > credits[best]:
                    best = member
            assert best is not None
            credits[best] -= total
            return PoolTurn(pool_name, best, windows[best], snap.last_served, credits)
        # least_loaded: fewest assignments in the window, ties in member order.
        chosen = min(eligible, key=lambda m: (snap.counts.get(m, 0), pool.members.index(m)))
        return PoolTurn(pool_name, chosen, windows[chosen], chosen, None)

    def apply(self, turn: PoolTurn) -> None:
        """Advance the working copy after a decision that took a pool turn."""
        if self._pooled:
            self._pooled.clear()
        if self._pool_paths:
            for path in self._pool_paths:
                del self._paths[path]
            self._pool_paths.clear()
        snap = self.pools[turn.pool]
        snap.last_served = turn.last_served
        if turn.credits is not None:
            snap.credits = dict(turn.credits)
        snap.counts[turn.member] = snap.counts.get(turn.member, 0) + 1
        change = self._changes.setdefault(turn.pool, _PendingChange())
        change.last_served = turn.last_served
        if turn.credits is not None:
            change.credits = snap.credits
        key = (turn.member, turn.window)
        change.increments[key] = change.increments.get(key, 0) + 1

    def trace(self, path: list[int], reasons: list[str], *, won: bool) -> tuple[TraceStep, ...]:
        """`_steps`, one tuple per distinct trace in this snapshot: a pool turn's answer is a
        new string each time, yet the trace it makes repeats, and the history stores a trace
        once per identity it sees (and builds no steps here for a trace made before)."""
        key = (tuple(path), tuple(reasons), won)
        traces = self.traces
        trace = traces.get(key)
        if trace is None:
            if len(traces) >= _TRACES_KEPT:
                traces.clear()  # answers that name a record (an account's domain) never repeat
            trace = traces[key] = _steps(self.routing, path, reasons, won)
        return trace

    def _remember(self, path: list[int], pooled: bool, win: _PathWin) -> None:
        key = tuple(path)
        self._paths[key] = win
        if pooled:
            self._pool_paths.append(key)

    def pending_changes(self) -> list[PoolChange]:
        """The pool changes applied since the snapshot, for `StateStore.commit`."""
        return [
            PoolChange(pool=name, last_served=c.last_served, credits=c.credits,
                       increments=dict(c.increments))
            for name, c in self._changes.items()
        ]

    # -- owners --------------------------------------------------------------------------

    def owner_valid(self, owner: str, policy: str) -> tuple[bool, str]:
        """Is an existing owner to be kept under `policy`? (docs/routing-file.md#existing-owner)."""
        routing = self.routing
        key = id_key(owner)
        if key in routing.ignore_keys:
            return False, f"owner {owner} is in ignore_owners"
        if policy == "never":
            return False, "respect_existing_owner is never"
        user = self.users.get(key) if self.users is not None else None
        is_queue = key.startswith("00G") or key in routing.queue_keys or (
            user is not None and not user.person)
        if policy == "always":
            return True, "respect_existing_owner is always"
        if is_queue:
            return False, f"owner {owner} is a queue"
        rep_id = routing.owner_to_rep.get(key)
        if rep_id is not None and not routing.reps[rep_id].active:
            return False, f"owner {rep_id} is inactive"
        if self.users is not None:
            if user is None:
                return False, f"owner {owner} is not a CRM user"
            if not user.active:
                return False, f"owner {owner} is an inactive CRM user"
        return True, "valid owner"


_REVIEWABLE = (Outcome.ASSIGNED, Outcome.FALLBACK)


def decide(record: Record, ctx: RoutingContext, trigger: str = "file") -> Decision:
    """Route one record. Pure: reads the context, never changes it; see `RoutingContext.apply`.

    A decision that would write but is held for review (a rule's `review: true`, or the
    top-level `review_when`) comes out `pending_review`: same owner, same pool turn (the turn
    is taken; docs/routing-file.md#review), nothing to write."""
    decision = _decide(record, ctx, trigger)
    if ctx.enriched:
        notes = ctx.enriched.get(record.id)
        if notes:
            decision = decision._replace(trace=notes + decision.trace)
    routing = ctx.routing
    if routing.reviews and decision.outcome in _REVIEWABLE:
        why = routing.review_reason(decision.rule, record)
        if why is not None:
            return decision._replace(outcome=Outcome.PENDING_REVIEW,
                                     reason=f"{decision.reason}; held for review ({why})")
    return decision


def _decide(record: Record, ctx: RoutingContext, trigger: str) -> Decision:
    routing = ctx.routing
    now = ctx.now
    # Every rule the record matches, not only up to the winner (`overlaps` on the dashboard):
    # route-file's rows carry them from its workers; else the rules tried on the way are
    # known, and only those past the winner are evaluated (`_matched`), once it is known.
    track = ctx.track_matched
    matched: tuple[str, ...] | None = None
    known = routing.known_matches if track else None
    if known is not None:
        indexes = known(record)
        matched = routing.match_names.get(indexes)
        if matched is None:
            matched = routing.matched_names(indexes)
        track = False  # done
    owner = record.owner
    previous = None
    if owner is not None:
        owned = ctx._owners.get(owner)
        if owned is None:
            owned = ctx._owners[owner] = _owner(owner, ctx)
        previous = owned.previous
        if ctx.chosen and record.id in ctx.chosen and \
                id_key(owner) not in routing.ignore_keys:
            return Decision(
                record_id=record.id, object=record.object, crm=record.crm,
                outcome=Outcome.KEPT_EXISTING, previous_owner=previous,
                owner=owned.rep_id or owner, owner_crm_id=owner, rule=None,
                reason=ctx.chosen[record.id], trigger=trigger,
                created_at=record.created_at, decided_at=now,
                matched=_matched(routing, record, (), 0) if track else matched,
            )
        if owned.kept_reason is not None:
            return Decision(
                record_id=record.id, object=record.object, crm=record.crm,
                outcome=Outcome.KEPT_EXISTING, previous_owner=previous,
                owner=owned.rep_id or owner, owner_crm_id=owner, rule=None,
                reason=owned.kept_reason, trigger=trigger,
                created_at=record.created_at, decided_at=now,
                matched=_matched(routing, record, (), 0) if track else matched,
            )

    rules = routing.rules
    first = routing.first_match
    i = first(record, 0)
    fast = ctx._fast.get(i)
    if fast is not None:
        # The common case, kept lean: the first matching rule is a rep or queue rule that
        # yields someone, so the answer is the memoized one with this record's identity.
        assignee, outcome, rule_name, reason, trace, crm_ids = fast
        if track:
            matched = _matched(routing, record, (i,), i + 1)
        return Decision(record.id, record.object, record.crm, outcome, previous, assignee,
                        crm_ids.get(record.crm) if crm_ids is not None else assignee,
                        rule_name, reason, trace, trigger, None, record.created_at, now,
                        None, None, None, matched)
    if ctx._paths:
        known_path = _known_path(record, i, ctx)
        hit = None if known_path is None else ctx._paths.get(known_path)
        if hit is not None:
            # Every rule on this record's way has a memoized answer: so has the whole.
            won, crm_ids = hit.assignee, hit.crm_ids
            if track:
                assert known_path is not None  # else no hit
                # The path's rules all matched; past a winning rule, the later ones may too
                # (without one, the walk found every match: a fallback or nobody).
                matched = _matched(routing, record, known_path,
                                   -1 if hit.rule is None else known_path[-1] + 1)
            return Decision(record.id, record.object, record.crm, hit.outcome, previous, won,
                            None if won is None else
                            crm_ids.get(record.crm) if crm_ids is not None else won,
                            hit.rule, hit.reason, hit.trace, trigger, hit.pool,
                            record.created_at, now, None, None, None, matched)
    reasons: list[str] = []  # each tried rule's answer, in `path` order: the trace's makings
    path: list[int] = []
    memo = True  # every answer on the path is memoized (none read the record)
    pooled = False  # some answer on the path came from a pool's state
    while i >= 0:
        rule = rules[i]
        kind = rule.kind
        path.append(i)
        if kind in _STATIC_KINDS:
            result = ctx._static.get(i)
            if result is None:
                result = ctx._static[i] = _resolve(rule, record, ctx)
        elif kind == "pool":
            pooled = True
            result = ctx._pooled.get(i)
            if result is None:
                result = _resolve(rule, record, ctx)
                if result.turn is None:
                    ctx._pooled[i] = result
                else:
                    memo = False  # a turn: never the same twice
        else:
            memo = False
            result = _resolve(rule, record, ctx)
        reasons.append(result.reason)
        won = result.assignee
        if won is not None:
            trace = ctx.trace(path, reasons, won=True)
            full_reason = f"rule {rule.name}: {result.reason}"
            rep = routing.reps.get(won)
            if kind in _STATIC_KINDS and len(path) == 1:
                ctx._fast[i] = _FastWin(won, result.outcome, rule.name, full_reason, trace,
                                        rep.crm_ids if rep is not None else None)
            elif memo:
                ctx._remember(path, pooled, _PathWin(
                    won, result.outcome, rule.name, result.pool, full_reason, trace,
                    rep.crm_ids if rep is not None else None))
            if track:
                matched = _matched(routing, record, tuple(path), i + 1)
            return _assigned(record, ctx, won, result.outcome, rule.name, result.pool,
                             result.turn, full_reason, trace, previous, trigger, matched)
        i = first(record, i + 1)
    if track:
        matched = _matched(routing, record, tuple(path), -1)  # the walk found every match
    decision = _after_rules(record, ctx, ctx.trace(path, reasons, won=False), previous, trigger,
                            matched)
    if memo:
        ctx._remember(path, pooled, _PathWin(
            decision.owner, decision.outcome, None, None, decision.reason, decision.trace,
            None if decision.owner is None or decision.owner not in routing.reps
            else routing.reps[decision.owner].crm_ids))
    return decision


def _steps(routing: CompiledRouting, path: Sequence[int], reasons: Sequence[str],
           won: bool) -> tuple[TraceStep, ...]:
    """The trace of trying the rules at `path` (their answers `reasons`), in rule order: every
    rule between them did not match; the last won (`won`), or every rule after it was tried."""
    rules = routing.rules
    steps: list[TraceStep] = []
    done = 0  # rules before this index are already in `steps`
    last = len(path) - 1
    for k, (i, reason) in enumerate(zip(path, reasons, strict=True)):
        if i > done:
            steps.extend(routing.no_match_steps[done:i])
        steps.append(TraceStep(rules[i].name, "won" if won and k == last else "no_assignee",
                               reason))
        done = i + 1
    if not won and done < len(rules):
        steps.extend(routing.no_match_steps[done:])
    return tuple(steps)


def _owner(owner: str, ctx: RoutingContext) -> _Owner:
    routing = ctx.routing
    rep_id = routing.owner_to_rep.get(id_key(owner))
    previous = rep_id or owner
    keep, why = ctx.owner_valid(owner, routing.policy)
    return _Owner(previous, rep_id, f"kept existing owner {previous} ({why})" if keep else None)


def _known_path(record: Record, i: int, ctx: RoutingContext) -> tuple[int, ...] | None:
    """The rules `record` would try from rule `i` on, when each has a memoized answer."""
    static = ctx._static
    pooled = ctx._pooled
    first = ctx.routing.first_match
    path: list[int] = []
    while i >= 0:
        path.append(i)
        result = static.get(i) or pooled.get(i)
        if result is None:
            return None
        if result.assignee is not None:
            break
        i = first(record, i + 1)
    return tuple(path)


def _matched(routing: CompiledRouting, record: Record, tried: tuple[int, ...],
             start: int) -> tuple[str, ...]:
    """`Decision.matched`: the rules `tried` (each matched), then every rule from `start` on
    whose `when` holds (none when `start` is -1), as names, one tuple object per set."""
    indexes = tried
    if start >= 0:
        later = routing.later_matches
        if later is not None:
            indexes += later(record, start)
        else:
            first = routing.first_match
            found: list[int] = []
            i = first(record, start)
            while i >= 0:
                found.append(i)
                i = first(record, i + 1)
            indexes += tuple(found)
    names = routing.match_names.get(indexes)
    return names if names is not None else routing.matched_names(indexes)


def _after_rules(record: Record, ctx: RoutingContext, trace: tuple[TraceStep, ...],
                 previous: str | None, trigger: str, matched: tuple[str, ...] | None
                 ) -> Decision:
    """No rule assigned anyone: the fallback, or nobody."""
    routing = ctx.routing
    steps = trace

    fallback = routing.file.fallback
    if fallback is not None:
        if fallback.queue is not None:
            return _assigned(record, ctx, fallback.queue, Outcome.FALLBACK, None, None, None,
                             f"no rule assigned anyone; fallback queue {fallback.queue}",
                             steps, previous, trigger, matched)
        backstop = fallback.rep
        assert backstop is not None  # the loader takes exactly one of `rep` or `queue`
        chain = ctx.chain(backstop)
        if chain.assignee is not None:
            story = _story(backstop, chain)
            return _assigned(record, ctx, chain.assignee, Outcome.FALLBACK, None, None, None,
                             f"no rule assigned anyone; fallback {story}", steps,
                             previous, trigger, matched)
        reason = f"no rule assigned anyone; fallback {backstop} unavailable ({chain.notes})"
    else:
        reason = "no rule assigned anyone and there is no fallback"
    return Decision(
        record_id=record.id, object=record.object, crm=record.crm, outcome=Outcome.UNASSIGNED,
        previous_owner=previous, owner=None, owner_crm_id=None, rule=None, reason=reason,
        trace=steps, trigger=trigger, created_at=record.created_at, decided_at=ctx.now,
        matched=matched,
    )


_STATIC_KINDS = frozenset({"rep", "queue"})


def _story(rep_id: str, chain: _Chain) -> str:
    if chain.via is None:
        return str(chain.assignee)
    return f"{rep_id} unavailable ({chain.notes}) -> {chain.via} {chain.assignee}"


def _resolve(rule: CompiledRule, record: Record, ctx: RoutingContext) -> _Resolved:
    kind = rule.kind
    if kind in ("rep", "queue", "pool"):
        target = rule.target
        assert target is not None  # the compiler gives these kinds their rep, queue or pool id
        if kind == "rep":
            chain = ctx.chain(target)
            if chain.assignee is None:
                return _Resolved(None, f"rep {target}: nobody available ({chain.notes})")
            outcome = Outcome.ASSIGNED if chain.via is None else Outcome.FALLBACK
            return _Resolved(chain.assignee, f"rep {_story(target, chain)}", outcome)
        if kind == "queue":
            return _Resolved(target, f"queue {target}")
        return _resolve_pool(target, ctx)
    # account_owner: leads and contacts follow the owner of the account with their domain.
    if record.object == "account":
        return _Resolved(None, "account_owner applies to leads and contacts only")
    if record.domain is None or record.freemail:
        return _Resolved(None, "no company domain to match an account")
    for domain in record.domain_keys:
        owner = ctx.account_owners.get(domain)
        if owner is None:
            continue
        valid, why = ctx.owner_valid(owner, "valid_only")
        if not valid:
            return _Resolved(None, f"account {domain} owner not valid ({why})")
        rep_id = ctx.routing.owner_to_rep.get(id_key(owner)) or owner
        return _Resolved(rep_id, f"owner of account {domain}: {rep_id}")
    return _Resolved(None, f"no account with domain {record.domain}")


def _resolve_pool(name: str, ctx: RoutingContext) -> _Resolved:
    turn, note = ctx.choose(name)
    pool = ctx.routing.pools[name]
    if turn is not None:
        skipped = f" (passed over: {note})" if note else ""
        return _Resolved(turn.member, f"pool {name} {pool.strategy} -> {turn.member}{skipped}",
                         Outcome.ASSIGNED, name, turn)
    overflow = pool.overflow
    if overflow is not None:
        nobody = f"pool {name} has nobody eligible ({note})"
        if overflow.queue is not None:
            return _Resolved(overflow.queue, f"{nobody} -> overflow queue {overflow.queue}",
                             Outcome.FALLBACK, name)
        backstop = overflow.rep
        assert backstop is not None  # the loader takes exactly one of `rep` or `queue`
        chain = ctx.chain(backstop)
        if chain.assignee is not None:
            return _Resolved(chain.assignee, f"{nobody} -> overflow {_story(backstop, chain)}",
                             Outcome.FALLBACK, name)
        note += f"; overflow {backstop} unavailable ({chain.notes})"
    return _Resolved(None, f"pool {name}: nobody eligible ({note})")


def _assigned(record: Record, ctx: RoutingContext, assignee: str, outcome: Outcome,
              rule: str | None, pool: str | None, turn: PoolTurn | None, reason: str,
              trace: tuple[TraceStep, ...], previous: str | None, trigger: str,
              matched: tuple[str, ...] | None) -> Decision:
    rep = ctx.routing.reps.get(assignee)
    crm_id = rep.crm_ids.get(record.crm) if rep is not None else assignee
    return Decision(
        record_id=record.id, object=record.object, crm=record.crm, outcome=outcome,
        previous_owner=previous, owner=assignee, owner_crm_id=crm_id, rule=rule, reason=reason,
        trace=trace, trigger=trigger, pool=pool, created_at=record.created_at,
        decided_at=ctx.now, turn=turn, matched=matched,
    )
