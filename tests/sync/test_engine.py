"""Tests for sync.engine: snapshot, decide, compare-and-set commit through the state store."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sync import engine
from sync.compiler import CompiledRouting
from sync.decide import OwnerInfo, RoutingContext
from sync.engine import CommitConflict, route_batch, skipped
from sync.models import Decision, Outcome, Record
from sync.normalize import id_key
from sync.state import open_store
from sync.state.base import PoolChange, PoolSnapshot, StateStore
from sync.state.sqlite import SqliteStateStore
from tests.builders import rec, routing
from tests.sync.state.test_contract import recorded

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # a Wednesday
AVA_SF = "005000000000001AAA"


# --- builders ----------------------------------------------------------------------------------




def recs(n: int, prefix: str = "r") -> list[Record]:
    return [rec(id=f"{prefix}{i}") for i in range(n)]


def owners(decisions: Sequence[Decision]) -> list[str | None]:
    return [d.owner for d in decisions]


def pool_routing(strategy: str = "round_robin", extra: str = "") -> CompiledRouting:
    return routing(f"""
        version: 1
        reps:
          - {{id: cara, crm_ids: {{salesforce: "{AVA_SF}"}}}}
          - {{id: dev}}
          - {{id: eli}}
          - {{id: zed}}
        pools:
          p:
            members: [cara, dev, eli]
            strategy: {strategy}
        {extra}
        rules:
          - {{name: pool, assign: {{pool: p}}}}
          - {{name: rest, assign: {{rep: zed}}}}
    """)


def snapshot(store: StateStore, r: CompiledRouting, now: datetime = NOW) -> PoolSnapshot:
    return store.load_pools(RoutingContext.pool_windows(r, now))["p"]


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def sqlite_store(sqlite_path: Path) -> Iterator[SqliteStateStore]:
    with SqliteStateStore(sqlite_path) as s:
        yield s


# --- commits -----------------------------------------------------------------------------------


def test_given_a_batch_when_routed_then_pool_turns_and_audit_decisions_are_committed(store):
    r = pool_routing()

    decisions = route_batch(recs(4), r, store, NOW, trigger="sweep")

    assert owners(decisions) == ["cara", "dev", "eli", "cara"]
    snap = snapshot(store, r)
    assert (snap.version, snap.last_served) == (1, "cara")
    assert snap.counts == {"cara": 2, "dev": 1, "eli": 1}
    audited = recorded(store)
    assert sorted(d.record_id for d in audited) == ["r0", "r1", "r2", "r3"]
    assert {d.record_id: d.owner for d in audited} == {"r0": "cara", "r1": "dev", "r2": "eli",
                                                        "r3": "cara"}
    assert {d.trigger for d in audited} == {"sweep"}
    assert all(d.decided_at == NOW for d in audited)


def test_given_round_robin_when_routed_in_several_calls_then_the_cursor_persists(store_url):
    r = pool_routing()
    first = open_store(store_url)
    try:
        a = route_batch(recs(2, "a"), r, first, NOW)
        b = route_batch(recs(2, "b"), r, first, NOW)
    finally:
        first.close()
    restarted = open_store(store_url)  # a fresh instance on the same data: a restart
    try:
        c = route_batch(recs(3, "c"), r, restarted, NOW)
    finally:
        restarted.close()

    assert owners(a) + owners(b) + owners(c) == ["cara", "dev", "eli", "cara", "dev", "eli",
                                                 "cara"]


def test_given_a_sqlite_file_when_reopened_then_rotation_continues_where_it_stopped(sqlite_path):
    r = pool_routing()
    with SqliteStateStore(sqlite_path) as s:
        before = route_batch(recs(2, "a"), r, s, NOW)
    with SqliteStateStore(sqlite_path) as s:
        after = route_batch(recs(2, "b"), r, s, NOW)

    assert owners(before) + owners(after) == ["cara", "dev", "eli", "cara"]


def test_given_a_member_added_between_batches_when_routing_then_nobody_is_reset(sqlite_store):
    old = pool_routing()
    new = routing("""
        version: 1
        reps: [{id: cara}, {id: dev}, {id: fay}, {id: eli}]
        pools:
          p: {members: [cara, dev, fay, eli]}
        rules:
          - {name: pool, assign: {pool: p}}
    """)

    before = route_batch(recs(2, "a"), old, sqlite_store, NOW)
    after = route_batch(recs(5, "b"), new, sqlite_store, NOW)

    assert owners(before) == ["cara", "dev"]
    assert owners(after) == ["fay", "eli", "cara", "dev", "fay"]


def test_given_the_last_served_member_removed_when_routing_then_the_first_member(sqlite_store):
    route_batch(recs(2, "a"), pool_routing(), sqlite_store, NOW)  # cara, dev
    smaller = routing("""
        version: 1
        reps: [{id: cara}, {id: eli}]
        pools:
          p: {members: [cara, eli]}
        rules:
          - {name: pool, assign: {pool: p}}
    """)

    after = route_batch(recs(2, "b"), smaller, sqlite_store, NOW)

    assert owners(after) == ["cara", "eli"]


def test_given_a_weighted_pool_when_routed_across_restarts_then_the_nginx_sequence(sqlite_path):
    r = pool_routing("weighted", "    weights: {cara: 5, dev: 1, eli: 1}")
    got: list[str | None] = []
    for batch in (2, 3, 2):
        with SqliteStateStore(sqlite_path) as s:
            got += owners(route_batch(recs(batch, f"b{len(got)}-"), r, s, NOW))

    assert got == ["cara", "cara", "dev", "cara", "eli", "cara", "cara"]


def test_given_least_loaded_when_a_new_local_day_starts_then_loads_start_over(sqlite_store):
    r = pool_routing("least_loaded")

    today = route_batch(recs(4, "a"), r, sqlite_store, NOW)
    later_today = route_batch(recs(2, "b"), r, sqlite_store, NOW + timedelta(hours=3))
    tomorrow = route_batch(recs(1, "c"), r, sqlite_store, NOW + timedelta(days=1))

    assert owners(today) == ["cara", "dev", "eli", "cara"]
    assert owners(later_today) == ["dev", "eli"]
    assert owners(tomorrow) == ["cara"]


def test_given_kept_records_when_routed_then_audited_but_no_load_counted(sqlite_store):
    r = pool_routing("least_loaded")

    decisions = route_batch([rec(id="k1", owner="cara"), rec(id="k2", owner=AVA_SF),
                             rec(id="n1")], r, sqlite_store, NOW)

    assert [d.outcome for d in decisions] == [Outcome.KEPT_EXISTING, Outcome.KEPT_EXISTING,
                                              Outcome.ASSIGNED]
    assert snapshot(sqlite_store, r).counts == {"cara": 1, "dev": 0, "eli": 0}
    assert {d.record_id: d.outcome for d in sqlite_store.decisions()}["k1"] is \
        Outcome.KEPT_EXISTING


def test_given_a_daily_cap_when_the_members_local_day_rolls_over_then_the_cap_resets(
    sqlite_store,
):
    r = routing("""
        version: 1
        reps: [{id: ny, timezone: America/New_York}, {id: zed}]
        pools:
          p: {members: [ny], cap: {max: 1, per: day}}
        rules:
          - {name: pool, assign: {pool: p}}
          - {name: rest, assign: {rep: zed}}
    """)
    evening = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)  # 18:00 in New York
    utc_next_day = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)  # still the 25th in New York
    ny_next_day = datetime(2026, 11, 26, 5, 30, tzinfo=UTC)  # 00:30 on the 26th in New York

    first = route_batch([rec(id="a")], r, sqlite_store, evening)
    second = route_batch([rec(id="b")], r, sqlite_store, utc_next_day)
    third = route_batch([rec(id="c")], r, sqlite_store, ny_next_day)

    assert owners(first + second + third) == ["ny", "zed", "ny"]


@pytest.mark.parametrize(("per", "capped_at", "free_at"), [
    # Sunday evening is still last week; Monday 00:00 local opens a new one.
    ("week", datetime(2026, 11, 29, 22, 0, tzinfo=UTC), datetime(2026, 11, 30, 0, 0, tzinfo=UTC)),
    ("month", datetime(2026, 11, 30, 23, 0, tzinfo=UTC), datetime(2026, 12, 1, 0, 0, tzinfo=UTC)),
])
def test_given_a_weekly_or_monthly_cap_when_the_window_turns_then_capped_members_come_back(
    sqlite_store, per, capped_at, free_at,
):
    r = routing(f"""
        version: 1
        reps: [{{id: cara}}, {{id: dev}}, {{id: zed}}]
        pools:
          p: {{members: [cara, dev], cap: {{max: 1, per: {per}}}}}
        rules:
          - {{name: pool, assign: {{pool: p}}}}
          - {{name: rest, assign: {{rep: zed}}}}
    """)
    monday = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    first_day = datetime(2026, 11, 1, 9, 0, tzinfo=UTC) if per == "month" else monday

    early = route_batch(recs(2, "a"), r, sqlite_store, first_day)
    capped = route_batch(recs(1, "b"), r, sqlite_store, capped_at)
    free = route_batch(recs(2, "c"), r, sqlite_store, free_at)

    assert owners(early) == ["cara", "dev"]
    assert owners(capped) == ["zed"]
    assert owners(free) == ["cara", "dev"]


def test_given_a_pause_in_the_store_when_routing_then_the_member_is_skipped_until_resumed(store):
    r = pool_routing()
    store.pause("dev")

    paused = route_batch(recs(3, "a"), r, store, NOW)
    store.resume("dev")
    resumed = route_batch(recs(3, "b"), r, store, NOW)

    assert owners(paused) == ["cara", "eli", "cara"]
    assert owners(resumed) == ["dev", "eli", "cara"]


def test_given_a_pause_with_an_end_when_routing_after_it_then_the_rep_is_back(store):
    r = pool_routing()
    store.pause("cara", until=NOW + timedelta(hours=1))

    during = route_batch(recs(1, "a"), r, store, NOW)
    after = route_batch(recs(1, "b"), r, store, NOW + timedelta(hours=2))

    assert owners(during) == ["dev"]
    assert owners(after) == ["eli"]


def test_given_extra_decisions_when_routing_then_they_are_audited_in_the_same_commit(store):
    extra = skipped("bad-row", "row 3: empty id", NOW)

    decisions = route_batch(recs(1), pool_routing(), store, NOW, extra=[extra])

    assert [d.record_id for d in decisions] == ["r0"]
    audited = {d.record_id: d for d in recorded(store)}
    assert set(audited) == {"r0", "bad-row"}
    assert audited["bad-row"].outcome is Outcome.SKIPPED


def test_given_no_pool_turns_when_routing_then_decisions_are_still_audited(store):
    r = routing("""
        version: 1
        reps: [{id: ava}]
        rules:
          - {name: to-ava, assign: {rep: ava}}
    """)

    decisions = route_batch(recs(2), r, store, NOW)

    assert owners(decisions) == ["ava", "ava"]
    assert len(recorded(store)) == 2


def test_given_an_overflow_when_routing_then_no_pool_turn_or_load_is_recorded(sqlite_store):
    r = routing("""
        version: 1
        reps: [{id: cara}, {id: olga}]
        pools:
          p: {members: [cara], cap: {max: 1, per: day}, overflow: {rep: olga}}
        rules:
          - {name: pool, assign: {pool: p}}
    """)

    decisions = route_batch(recs(3), r, sqlite_store, NOW)

    assert [(d.owner, d.outcome) for d in decisions] == [
        ("cara", Outcome.ASSIGNED), ("olga", Outcome.FALLBACK), ("olga", Outcome.FALLBACK)]
    snap = sqlite_store.load_pools(RoutingContext.pool_windows(r, NOW))["p"]
    assert (snap.version, snap.counts) == (1, {"cara": 1})


# --- compare-and-set ---------------------------------------------------------------------------


class RacedStore:
    """Delegates to a store; just before the first commit, another worker takes a turn.

    The other worker commits through its own handle on the same data, so the real
    compare-and-set of the first commit fails and the batch must re-decide.
    """

    def __init__(self, inner: StateStore, other: StateStore, r: CompiledRouting) -> None:
        self.inner, self.other, self.routing = inner, other, r
        self.commits: list[bool] = []

    def load_pools(self, windows: Mapping[str, Mapping[str, str]]) -> dict[str, PoolSnapshot]:
        return self.inner.load_pools(windows)

    def pauses(self, now: datetime) -> dict[str, datetime | None]:
        return self.inner.pauses(now)

    def load_pools_and_pauses(self, windows: Mapping[str, Mapping[str, str]], now: datetime
                              ) -> tuple[dict[str, PoolSnapshot], dict[str, datetime | None]]:
        return self.load_pools(windows), self.pauses(now)

    def commit(self, expected: Mapping[str, int], changes: Sequence[PoolChange],
               decisions: Sequence[Decision]) -> bool:
        if not self.commits:
            route_batch([rec(id="other-worker")], self.routing, self.other, NOW,
                        trigger="other")
        ok = self.inner.commit(expected, changes, decisions)
        self.commits.append(ok)
        return ok


def test_given_a_conflicting_commit_when_routing_then_the_batch_redecides_on_a_fresh_snapshot(
    store_url,
):
    r = pool_routing()
    inner, other = open_store(store_url), open_store(store_url)
    try:
        raced = RacedStore(inner, other, r)

        decisions = route_batch(recs(3), r, raced, NOW)  # type: ignore[arg-type]

        assert raced.commits == [False, True]
        assert owners(decisions) == ["dev", "eli", "cara"]  # the other worker had cara's turn
        audited = recorded(inner)
        turns = [d.owner for d in audited]
        assert sorted(turns) == ["cara", "cara", "dev", "eli"]  # no turn given twice
        assert sorted(d.record_id for d in audited) == ["other-worker", "r0", "r1", "r2"]
        snap = snapshot(inner, r)
        assert (snap.version, snap.last_served) == (2, "cara")
        assert snap.counts == {"cara": 2, "dev": 1, "eli": 1}
    finally:
        inner.close()
        other.close()


class NeverCommits:
    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self.attempts = 0

    def load_pools(self, windows: Mapping[str, Mapping[str, str]]) -> dict[str, PoolSnapshot]:
        return self.inner.load_pools(windows)

    def pauses(self, now: datetime) -> dict[str, datetime | None]:
        return self.inner.pauses(now)

    def load_pools_and_pauses(self, windows: Mapping[str, Mapping[str, str]], now: datetime
                              ) -> tuple[dict[str, PoolSnapshot], dict[str, datetime | None]]:
        return self.load_pools(windows), self.pauses(now)

    def commit(self, expected: Mapping[str, int], changes: Sequence[PoolChange],
               decisions: Sequence[Decision]) -> bool:
        self.attempts += 1
        return False


def test_given_commits_that_always_conflict_when_routing_then_a_bounded_error(
    sqlite_store, monkeypatch,
):
    monkeypatch.setattr(engine, "MAX_ATTEMPTS", 5)
    never = NeverCommits(sqlite_store)

    with pytest.raises(CommitConflict):
        route_batch(recs(1), pool_routing(), never, NOW)  # type: ignore[arg-type]

    assert never.attempts == 5
    assert sqlite_store.decisions() == []


def test_given_a_conflict_when_redeciding_then_account_owners_are_not_doubly_updated(
    store_url,
):
    r = routing("""
        version: 1
        reps: [{id: cara}, {id: dev}]
        pools:
          p: {members: [cara, dev]}
        rules:
          - {name: follow, assign: {account_owner: true}}
          - {name: pool, assign: {pool: p}}
    """)
    inner, other = open_store(store_url), open_store(store_url)
    known: dict[str, str] = {}
    try:
        raced = RacedStore(inner, other, r)
        decisions = route_batch([rec(id="acct", domain="acme.com"),
                                 rec(id="lead", object="lead", email="jo@acme.com")],
                                r, raced, NOW, account_owners=known)  # type: ignore[arg-type]
    finally:
        inner.close()
        other.close()

    assert owners(decisions) == ["dev", "dev"]
    assert known == {"acme.com": "dev"}


# --- account owners within a batch -------------------------------------------------------------

FOLLOW = f"""
version: 1
reps:
  - {{id: cara, crm_ids: {{salesforce: "{AVA_SF}"}}}}
  - {{id: dev, crm_ids: {{salesforce: "005000000000002AAA"}}}}
pools:
  p: {{members: [cara, dev]}}
rules:
  - {{name: follow, assign: {{account_owner: true}}}}
  - {{name: pool, assign: {{pool: p}}}}
"""


def test_given_an_account_routed_earlier_in_the_batch_when_a_lead_follows_then_same_owner(
    sqlite_store,
):
    batch = [rec(id="acct", domain="acme.com"), rec(id="x", domain="initech.com"),
             rec(id="lead", object="lead", email="jo@eu.acme.com")]

    decisions = route_batch(batch, routing(FOLLOW), sqlite_store, NOW)

    assert owners(decisions) == ["cara", "dev", "cara"]
    assert (decisions[2].rule, decisions[2].outcome) == ("follow", Outcome.ASSIGNED)


def test_given_a_crm_directory_when_a_lead_follows_an_account_routed_in_the_batch_then_same_owner(
    sqlite_store,
):
    users = {id_key(AVA_SF): OwnerInfo(active=True),
             id_key("005000000000002AAA"): OwnerInfo(active=True)}
    batch = [rec(id="acct", crm="salesforce", domain="acme.com"),
             rec(id="lead", crm="salesforce", object="lead", email="jo@acme.com")]

    decisions = route_batch(batch, routing(FOLLOW), sqlite_store, NOW, users=users)

    assert owners(decisions) == ["cara", "cara"]
    assert decisions[1].rule == "follow"
    assert decisions[1].owner_crm_id == AVA_SF


def test_given_account_owners_when_the_batch_commits_then_the_callers_map_learns_them(
    sqlite_store,
):
    known = {"globex.com": "dev"}

    route_batch([rec(id="acct", domain="acme.com"),
                 rec(id="lead", object="lead", email="jo@globex.com")],
                routing(FOLLOW), sqlite_store, NOW, account_owners=known)

    assert known["acme.com"] == "cara"
    assert known["globex.com"] == "dev"


def test_given_domains_to_learn_when_the_batch_commits_then_only_those_are_remembered(
    sqlite_store,
):
    known: dict[str, str] = {}
    batch = [rec(id="a1", domain="acme.com"), rec(id="a2", domain="globex.com"),
             rec(id="lead", object="lead", email="jo@globex.com")]

    decisions = route_batch(batch, routing(FOLLOW), sqlite_store, NOW, account_owners=known,
                            learn=frozenset({"acme.com"}))

    # The lead in the batch still followed its account; the map kept only the wanted domain.
    assert decisions[2].rule == "follow" and decisions[2].owner == decisions[1].owner
    assert known == {"acme.com": decisions[0].owner}


def test_given_one_traces_dict_across_batches_when_routing_then_equal_traces_are_one_object(
    sqlite_store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # route-file keeps one dict for a run: the history then meets each trace as one object
    # in every batch. The dict is bounded: it starts over when full, traces stay right.
    r = pool_routing()
    traces: dict = {}  # type: ignore[type-arg]
    first = route_batch(recs(3, "a"), r, sqlite_store, NOW, traces=traces)
    second = route_batch(recs(3, "b"), r, sqlite_store, NOW, traces=traces)
    alone = route_batch(recs(3, "c"), r, sqlite_store, NOW)

    assert owners(first) == owners(second) == owners(alone) == ["cara", "dev", "eli"]
    assert all(a.trace is b.trace for a, b in zip(first, second, strict=True))
    assert all(a.trace == c.trace and a.trace is not c.trace
               for a, c in zip(first, alone, strict=True))
    monkeypatch.setattr("sync.decide._TRACES_KEPT", 2)
    small: dict = {}  # type: ignore[type-arg]
    bounded = route_batch(recs(3, "d"), r, sqlite_store, NOW, traces=small)
    assert len(small) <= 2
    assert [d.trace for d in bounded] == [d.trace for d in first]
