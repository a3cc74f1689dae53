"""Property tests for pool fairness: rotation, weights, restarts.

See docs/routing-file.md#pool-strategies.
"""

from __future__ import annotations

import tempfile
import textwrap
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from config.routing import parse
from sync.compiler import CompiledRouting, compile_routing
from sync.decide import RoutingContext, decide
from sync.engine import route_batch
from sync.normalize import build_record
from sync.state.base import PoolSnapshot
from sync.state.sqlite import SqliteStateStore

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
RECORD = build_record({"id": "r"})
NAMES = ["m0", "m1", "m2", "m3", "m4", "m5"]

PROPERTY = settings(derandomize=True, max_examples=50, deadline=None)


# --- builders ----------------------------------------------------------------------------------


def pool_routing(members: Sequence[str], strategy: str = "round_robin",
                 weights: dict[str, int] | None = None, inactive: Sequence[str] = (),
                 cap: int | None = None) -> CompiledRouting:
    reps = "".join(f"  - {{id: {m}, active: {str(m not in inactive).lower()}}}\n"
                   for m in sorted({*members, *NAMES}))
    pool = f"    members: [{', '.join(members)}]\n    strategy: {strategy}\n"
    if weights:
        pool += f"    weights: {{{', '.join(f'{m}: {w}' for m, w in weights.items())}}}\n"
    if cap is not None:
        pool += f"    cap: {{max: {cap}, per: day}}\n"
    text = ("version: 1\nreps:\n" + reps + "  - {id: zed}\npools:\n  p:\n" + pool
            + "rules:\n  - {name: pool, assign: {pool: p}}\n"
            + "  - {name: rest, assign: {rep: zed}}\n")
    return compile_routing(parse(textwrap.dedent(text)))


class Pool:
    """Drives one pool turn by turn through `decide`, as the pipeline would, keeping a ledger."""

    def __init__(self, r: CompiledRouting) -> None:
        self.routing = r
        self.snap = PoolSnapshot(pool="p")
        self.owners: list[str | None] = []
        # Smooth weighted round robin bookkeeping: credit_i = w_i * (rounds i was eligible)
        # - sum of the round totals of the rounds i won. Exact iff nothing is ever reset.
        self.ledger: Counter[str] = Counter()

    def turn(self, paused: Sequence[str] = ()) -> str | None:
        ctx = RoutingContext(routing=self.routing, now=NOW, paused=dict.fromkeys(paused),
                             pools={"p": self.snap})
        eligible = [m for m in self.routing.pools["p"].members if ctx.status(m) is None]
        d = decide(RECORD, ctx)
        owner = d.owner if d.turn is not None else None
        if d.turn is not None:
            ctx.apply(d.turn)
            weights = self.routing.pools["p"].weights
            for m in eligible:
                if weights.get(m, 1) > 0:
                    self.ledger[m] += weights.get(m, 1)
            self.ledger[owner] -= sum(weights.get(m, 1) for m in eligible)
        self.snap = ctx.pools["p"]
        self.owners.append(owner)
        return owner

    def with_routing(self, r: CompiledRouting) -> Pool:
        self.routing = r
        return self


def spread(counts: Counter[str | None], members: Sequence[str]) -> int:
    values = [counts[m] for m in members]
    return max(values) - min(values) if values else 0


# Member lists in any order, so "member order" is never confused with name order.
member_orders = st.integers(2, 6).flatmap(lambda n: st.permutations(NAMES[:n]))


# --- round robin -------------------------------------------------------------------------------


@PROPERTY
@given(
    members=member_orders,
    stable=st.sets(st.integers(0, 5), min_size=1),
    initially_paused=st.sets(st.integers(0, 5)),
    ops=st.lists(st.integers(-1, 5), max_size=80),  # -1: a turn; i: toggle member i's pause
)
def test_given_random_eligibility_toggles_when_round_robin_then_fair_among_steady_members(
    members, stable, initially_paused, ops,
):
    n = len(members)
    steady = [members[i] for i in sorted(stable) if i < n] or [members[0]]
    paused = {m for i, m in enumerate(members) if i in initially_paused and m not in steady}
    never_eligible = set(paused)
    pool = Pool(pool_routing(members))
    counts: Counter[str | None] = Counter()

    for op in ops:
        if op >= 0 and op < n and members[op] not in steady:
            paused ^= {members[op]}
            never_eligible.discard(members[op])
            continue
        owner = pool.turn(sorted(paused))
        assert owner is not None  # steady members are always there to take it
        assert owner not in paused
        counts[owner] += 1

    assert spread(counts, steady) <= 1
    assert all(counts[m] == 0 for m in never_eligible)


@PROPERTY
@given(n=st.integers(2, 6), before=st.integers(0, 20), after=st.integers(1, 30),
       position=st.integers(0, 6))
def test_given_a_member_added_mid_way_when_round_robin_then_nobody_is_reset(
    n, before, after, position,
):
    members = NAMES[:n]
    pool = Pool(pool_routing(members))
    for _ in range(before):
        pool.turn()
    last = pool.snap.last_served
    grown = [*members[:position], "new", *members[position:]]
    pool.with_routing(pool_routing(grown))

    for _ in range(after):
        pool.turn()

    counts = Counter(pool.owners)
    assert spread(counts, members) <= 1  # a reset would hand someone a second turn early
    assert counts["new"] <= after // len(grown) + 1
    expected_first = grown[(grown.index(last) + 1) % len(grown)] if last else grown[0]
    assert pool.owners[before] == expected_first


@PROPERTY
@given(n=st.integers(2, 6), before=st.integers(0, 20), away=st.integers(0, 40),
       back=st.integers(1, 30), who=st.integers(0, 5))
def test_given_a_rep_back_from_leave_when_round_robin_then_no_catch_up_flood(
    n, before, away, back, who,
):
    members = NAMES[:n]
    returner = members[who % n]
    pool = Pool(pool_routing(members))
    for _ in range(before):
        pool.turn()
    for _ in range(away):
        assert pool.turn([returner]) != returner

    for _ in range(back):
        pool.turn()

    after = Counter(pool.owners[before + away:])
    assert spread(after, members) <= 1
    assert after[returner] <= -(-back // n)


# --- weighted ----------------------------------------------------------------------------------

weights_strategy = st.lists(st.integers(0, 5), min_size=2, max_size=5).filter(any)


@PROPERTY
@given(ws=weights_strategy, inactive=st.sets(st.integers(0, 4)), turns=st.integers(1, 80))
def test_given_weights_when_routing_then_every_prefix_is_within_one_of_the_ideal_share(
    ws, inactive, turns,
):
    members = NAMES[:len(ws)]
    weights = dict(zip(members, ws, strict=True))
    away = {m for i, m in enumerate(members) if i in inactive}
    total = sum(w for m, w in weights.items() if m not in away)
    pool = Pool(pool_routing(members, "weighted", weights, inactive=sorted(away)))
    counts: Counter[str | None] = Counter()

    for t in range(1, turns + 1):
        owner = pool.turn()
        counts[owner] += 1
        if total == 0:
            assert owner is None
            continue
        for m in members:
            ideal = 0 if m in away else t * weights[m] / total
            assert abs(counts[m] - ideal) <= 1, (t, m, counts)

    assert all(counts[m] == 0 for m in members if m in away or weights[m] == 0)


@PROPERTY
@given(ws=st.lists(st.integers(1, 5), min_size=2, max_size=5), before=st.integers(0, 20),
       away=st.integers(0, 40), back=st.integers(1, 40), who=st.integers(0, 4))
def test_given_a_rep_back_from_leave_when_weighted_then_credit_frozen_and_no_flood(
    ws, before, away, back, who,
):
    members = NAMES[:len(ws)]
    weights = dict(zip(members, ws, strict=True))
    returner = members[who % len(members)]
    pool = Pool(pool_routing(members, "weighted", weights))
    for _ in range(before):
        pool.turn()
    frozen = pool.snap.credits.get(returner, 0.0)
    for _ in range(away):
        assert pool.turn([returner]) != returner
        assert pool.snap.credits.get(returner, 0.0) == frozen

    for _ in range(back):
        pool.turn()

    after = Counter(pool.owners[before + away:])
    ideal = back * weights[returner] / sum(ws)
    # Its frozen credit is worth at most one extra turn; a catch-up would grow with `away`.
    assert after[returner] <= ideal + 2
    assert pool.snap.credits == {m: float(pool.ledger[m]) for m in members}


@PROPERTY
@given(ws=st.lists(st.integers(0, 5), min_size=2, max_size=5).filter(any),
       added=st.integers(0, 5), before=st.integers(0, 20), after=st.integers(1, 30),
       position=st.integers(0, 5))
def test_given_a_member_added_when_weighted_then_existing_credits_carry_on(
    ws, added, before, after, position,
):
    members = NAMES[:len(ws)]
    weights = dict(zip(members, ws, strict=True))
    pool = Pool(pool_routing(members, "weighted", weights))
    for _ in range(before):
        pool.turn()
    grown = [*members[:position], "new", *members[position:]]
    pool.with_routing(pool_routing(grown, "weighted", {**weights, "new": added}))

    for _ in range(after):
        pool.turn()

    # The ledger only holds if no member's credit was ever reset.
    assert {m: c for m, c in pool.snap.credits.items() if c} == \
        {m: float(c) for m, c in pool.ledger.items() if c}
    total = sum(ws) + added
    assert Counter(pool.owners[before:])["new"] <= after * added / total + 1


# --- least loaded ------------------------------------------------------------------------------


@PROPERTY
@given(members=member_orders, inactive=st.sets(st.integers(0, 5)), turns=st.integers(1, 60))
def test_given_least_loaded_when_routing_then_loads_never_differ_by_more_than_one(
    members, inactive, turns,
):
    away = sorted(m for i, m in enumerate(members) if i in inactive)
    pool = Pool(pool_routing(members, "least_loaded", inactive=away))

    for _ in range(turns):
        pool.turn()

    counts = Counter(pool.owners)
    present = [m for m in members if m not in away]
    assert spread(counts, present) <= 1
    assert all(counts[m] == 0 for m in away)
    if present:  # ties go in member order: the extra turns went to the earliest members
        low = min(counts[m] for m in present)
        ahead = [counts[m] > low for m in present]
        assert ahead == sorted(ahead, reverse=True)


# --- restarts ----------------------------------------------------------------------------------


@PROPERTY
@given(
    strategy=st.sampled_from(["round_robin", "weighted", "least_loaded"]),
    ws=st.lists(st.integers(0, 4), min_size=2, max_size=5).filter(any),
    inactive=st.sets(st.integers(0, 4), max_size=2),
    cap=st.none() | st.integers(0, 6),
    kept=st.lists(st.booleans(), min_size=1, max_size=30),
    cuts=st.lists(st.integers(1, 29), max_size=4),
)
def test_given_batches_through_fresh_stores_when_routing_then_same_owners_as_one_go(
    strategy, ws, inactive, cap, kept, cuts,
):
    members = NAMES[:len(ws)]
    weights = dict(zip(members, ws, strict=True)) if strategy == "weighted" else None
    away = sorted(m for i, m in enumerate(members) if i in inactive)
    r = pool_routing(members, strategy, weights, inactive=away, cap=cap)
    records = [build_record({"id": f"r{i}", "owner": "zed" if k else None})
               for i, k in enumerate(kept)]
    bounds = sorted({0, *(c for c in cuts if c < len(records)), len(records)})

    with tempfile.TemporaryDirectory() as tmp:
        with SqliteStateStore(Path(tmp) / "one.db") as store:
            one_go = route_batch(records, r, store, NOW)
        batched = []
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            with SqliteStateStore(Path(tmp) / "batched.db") as store:  # a restart each time
                batched += route_batch(records[lo:hi], r, store, NOW)
        with SqliteStateStore(Path(tmp) / "one.db") as a, \
                SqliteStateStore(Path(tmp) / "batched.db") as b:
            windows = RoutingContext.pool_windows(r, NOW)
            snap_a, snap_b = a.load_pools(windows)["p"], b.load_pools(windows)["p"]

    assert [d.owner for d in batched] == [d.owner for d in one_go]
    assert [d.outcome for d in batched] == [d.outcome for d in one_go]
    assert (snap_b.last_served, snap_b.credits, snap_b.counts) == \
        (snap_a.last_served, snap_a.credits, snap_a.counts)
