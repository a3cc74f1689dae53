"""The StateStore contract, run unchanged against SQLite and a real Redis (see `store` fixture)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sync.models import Decision, Outcome, TraceStep
from sync.state import LoadRow, PoolChange, StateStore, open_store

T0 = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")
DAY = "day:2026-11-25"
NEXT_DAY = "day:2026-11-26"


def decision(
    record_id: str = "r1",
    *,
    owner: str | None = "ava",
    outcome: Outcome = Outcome.ASSIGNED,
    pool: str | None = None,
    at: datetime | None = T0,
    rule: str | None = "everyone-else",
) -> Decision:
    return Decision(
        record_id=record_id,
        object="account",
        crm="hubspot",
        outcome=outcome,
        owner=owner,
        owner_crm_id=None if owner is None else f"crm-{owner}",
        rule=rule,
        pool=pool,
        decided_at=at,
    )


def turn(pool: str, member: str, window: str = DAY, n: int = 1) -> PoolChange:
    return PoolChange(pool=pool, last_served=member, credits=None, increments={(member, window): n})


# --- the protocol itself -------------------------------------------------------------------


def test_given_either_backend_then_it_satisfies_the_state_store_protocol(store):
    assert isinstance(store, StateStore)


# --- pools: round trips and windows --------------------------------------------------------


def test_given_an_empty_store_when_loading_pools_then_each_is_fresh_at_version_zero(store):
    snaps = store.load_pools({"smb": {"cara": DAY, "dev": DAY}, "ent": {}})

    assert set(snaps) == {"smb", "ent"}
    smb = snaps["smb"]
    assert (smb.pool, smb.version, smb.last_served, smb.credits) == ("smb", 0, None, {})
    assert smb.counts == {"cara": 0, "dev": 0}
    assert snaps["ent"].counts == {}


def test_given_no_pools_requested_when_loading_then_nothing_is_returned(store):
    assert store.load_pools({}) == {}


def test_given_a_committed_turn_when_loading_then_cursor_credits_and_count_round_trip(store):
    change = PoolChange(
        pool="smb",
        last_served="dev",
        credits={"cara": -1.5, "dev": 0.25, "eli": 1.25},
        increments={("dev", DAY): 1},
    )

    assert store.commit({"smb": 0}, [change], []) is True

    snap = store.load_pools({"smb": {"cara": DAY, "dev": DAY, "eli": DAY}})["smb"]
    assert snap.version == 1
    assert snap.last_served == "dev"
    assert snap.credits == {"cara": -1.5, "dev": 0.25, "eli": 1.25}
    assert snap.counts == {"cara": 0, "dev": 1, "eli": 0}


def test_given_counts_in_two_windows_when_loading_then_each_member_sees_its_own_window(store):
    store.commit({"smb": 0}, [turn("smb", "cara", DAY, 3)], [])
    store.commit({"smb": 1}, [turn("smb", "cara", NEXT_DAY, 2)], [])
    store.commit({"smb": 2}, [turn("smb", "dev", NEXT_DAY, 5)], [])

    today = store.load_pools({"smb": {"cara": DAY, "dev": DAY}})["smb"]
    tomorrow = store.load_pools({"smb": {"cara": NEXT_DAY, "dev": NEXT_DAY}})["smb"]
    # Members in different timezones ask for different window keys in one read.
    mixed = store.load_pools({"smb": {"cara": DAY, "dev": NEXT_DAY}})["smb"]

    assert today.counts == {"cara": 3, "dev": 0}
    assert tomorrow.counts == {"cara": 2, "dev": 5}
    assert mixed.counts == {"cara": 3, "dev": 5}


def test_given_counts_in_one_pool_when_loading_another_then_they_do_not_leak(store):
    store.commit({}, [turn("smb", "cara")], [])

    assert store.load_pools({"ent": {"cara": DAY}})["ent"].counts == {"cara": 0}


def test_given_credits_none_when_committing_then_stored_credits_are_kept(store):
    store.commit({}, [PoolChange("w", "a", {"a": -1.0, "b": 1.0}, {})], [])

    store.commit({"w": 1}, [PoolChange("w", "b", None, {("b", DAY): 1})], [])

    snap = store.load_pools({"w": {}})["w"]
    assert (snap.version, snap.last_served, snap.credits) == (2, "b", {"a": -1.0, "b": 1.0})


def test_given_last_served_none_when_committing_then_the_cursor_is_cleared(store):
    store.commit({}, [turn("smb", "cara")], [])

    store.commit({"smb": 1}, [PoolChange("smb", None, None, {})], [])

    assert store.load_pools({"smb": {}})["smb"].last_served is None


def test_given_several_pools_in_one_commit_then_each_changed_pool_moves_one_version(store):
    store.commit({}, [turn("a", "x")], [])

    ok = store.commit({"a": 1, "b": 0}, [turn("a", "y"), turn("b", "z")], [])

    snaps = store.load_pools({"a": {}, "b": {}, "c": {}})
    assert ok is True
    assert [snaps[p].version for p in "abc"] == [2, 1, 0]


def test_given_two_changes_to_one_pool_in_a_commit_then_they_merge_and_version_moves_once(store):
    changes = [
        PoolChange("smb", "cara", {"cara": 1.0}, {("cara", DAY): 1}),
        PoolChange("smb", "dev", None, {("dev", DAY): 1, ("cara", DAY): 2}),
    ]

    assert store.commit({"smb": 0}, changes, []) is True

    snap = store.load_pools({"smb": {"cara": DAY, "dev": DAY}})["smb"]
    assert (snap.version, snap.last_served, snap.credits) == (1, "dev", {"cara": 1.0})
    assert snap.counts == {"cara": 3, "dev": 1}


# --- commit: compare-and-set ---------------------------------------------------------------


def test_given_a_stale_version_when_committing_then_false_and_nothing_is_applied(store):
    store.commit({"smb": 0}, [turn("smb", "cara")], [decision("r1", pool="smb")])

    ok = store.commit(
        {"smb": 0},  # stale: the pool is at 1
        [PoolChange("smb", "dev", {"dev": 9.0}, {("dev", DAY): 1})],
        [decision("r2", owner="dev", pool="smb")],
    )

    assert ok is False
    snap = store.load_pools({"smb": {"cara": DAY, "dev": DAY}})["smb"]
    assert (snap.version, snap.last_served, snap.credits) == (1, "cara", {})
    assert snap.counts == {"cara": 1, "dev": 0}
    assert [d.record_id for d in store.decisions()] == ["r1"]


def test_given_two_workers_reading_the_same_version_then_only_the_first_commit_wins(store):
    seen_by_a = store.load_pools({"smb": {"cara": DAY}})["smb"].version
    seen_by_b = store.load_pools({"smb": {"cara": DAY}})["smb"].version

    first = store.commit({"smb": seen_by_a}, [turn("smb", "cara")], [decision("a")])
    second = store.commit({"smb": seen_by_b}, [turn("smb", "cara")], [decision("b")])

    assert (first, second) == (True, False)
    assert store.load_pools({"smb": {"cara": DAY}})["smb"].counts == {"cara": 1}
    assert [d.record_id for d in store.decisions()] == ["a"]


def test_given_a_never_written_pool_when_expecting_a_nonzero_version_then_false(store):
    assert store.commit({"ghost": 1}, [turn("ghost", "x")], [decision()]) is False

    assert store.load_pools({"ghost": {"x": DAY}})["ghost"].version == 0
    assert store.decisions() == []


def test_given_a_checked_but_unchanged_pool_that_moved_then_the_whole_commit_fails(store):
    store.commit({}, [turn("watched", "x")], [])

    ok = store.commit({"watched": 0, "smb": 0}, [turn("smb", "cara")], [decision()])

    assert ok is False
    assert store.load_pools({"smb": {"cara": DAY}})["smb"].version == 0
    assert store.decisions() == []


def test_given_a_checked_but_unchanged_pool_that_held_then_its_version_stays(store):
    store.commit({}, [turn("watched", "x")], [])

    assert store.commit({"watched": 1, "smb": 0}, [turn("smb", "cara")], []) is True

    snaps = store.load_pools({"watched": {}, "smb": {}})
    assert (snaps["watched"].version, snaps["smb"].version) == (1, 1)


def test_given_only_decisions_when_committing_then_they_are_appended(store):
    assert store.commit({}, [], [decision("r1", outcome=Outcome.KEPT_EXISTING)]) is True

    assert [d.outcome for d in store.decisions()] == [Outcome.KEPT_EXISTING]


def test_given_a_thousand_decisions_when_committing_then_it_is_one_fast_batch(store):
    batch = [
        decision(f"r{i}", owner=f"rep{i % 7}", pool="smb", at=T0 + timedelta(seconds=i))
        for i in range(1000)
    ]
    started = time.perf_counter()

    assert store.commit({"smb": 0}, [turn("smb", "rep6", n=1000)], batch) is True

    # Generous bound: measured ~0.05 s; this only guards against a row-per-transaction regression.
    assert time.perf_counter() - started < 3.0
    assert len(store.decisions()) == 1000
    assert store.decisions(limit=1)[0].record_id == "r999"


def test_given_a_naive_decided_at_when_committing_then_valueerror_and_nothing_applied(store):
    naive = decision("r1", at=datetime(2026, 1, 1, 12, 0))

    with pytest.raises(ValueError, match="timezone-aware"):
        store.commit({"smb": 0}, [turn("smb", "cara")], [naive])

    assert store.load_pools({"smb": {}})["smb"].version == 0
    assert store.decisions() == []


# --- pauses --------------------------------------------------------------------------------


def test_given_no_pauses_then_nobody_is_paused(store):
    assert store.pauses(T0) == {}


def test_given_an_open_ended_pause_then_the_rep_is_paused_at_any_instant(store):
    store.pause("ava")

    assert store.pauses(T0) == {"ava": None}
    assert store.pauses(T0 + timedelta(days=3650)) == {"ava": None}


def test_given_a_pause_with_until_then_it_holds_before_and_lapses_at_until(store):
    until = T0 + timedelta(hours=2)
    store.pause("ava", until)

    assert store.pauses(T0) == {"ava": until}
    assert store.pauses(until - timedelta(microseconds=1)) == {"ava": until}
    assert store.pauses(until) == {}
    assert store.pauses(until + timedelta(days=1)) == {}


def test_given_an_expired_pause_when_asked_at_an_earlier_replay_instant_then_it_still_holds(store):
    until = T0 + timedelta(hours=1)
    store.pause("ava", until)
    store.pauses(until + timedelta(days=1))  # a read at a later instant must not drop the row

    assert store.pauses(T0) == {"ava": until}


def test_given_a_pause_until_in_another_timezone_then_it_compares_as_an_instant(store):
    until_ny = datetime(2026, 11, 25, 9, 30, tzinfo=NEW_YORK)  # 14:30 UTC
    store.pause("ava", until_ny)

    paused = store.pauses(datetime(2026, 11, 25, 14, 29, tzinfo=UTC))

    assert paused == {"ava": until_ny}
    assert paused["ava"].tzinfo is not None
    assert store.pauses(datetime(2026, 11, 25, 14, 30, tzinfo=UTC)) == {}


def test_given_a_paused_rep_when_paused_again_then_the_latest_until_wins(store):
    store.pause("ava", T0 + timedelta(hours=1))

    store.pause("ava")

    assert store.pauses(T0 + timedelta(days=1)) == {"ava": None}


def test_given_several_paused_reps_then_each_is_reported(store):
    store.pause("ava")
    store.pause("ben", T0 + timedelta(hours=1))
    store.pause("cara", T0 - timedelta(hours=1))

    assert store.pauses(T0) == {"ava": None, "ben": T0 + timedelta(hours=1)}


def test_given_a_paused_rep_when_resumed_then_true_and_no_longer_paused(store):
    store.pause("ava")
    store.pause("ben")

    assert store.resume("ava") is True

    assert store.pauses(T0) == {"ben": None}


def test_given_a_rep_not_paused_when_resumed_then_false(store):
    assert store.resume("ava") is False


def test_given_a_rep_whose_pause_expired_in_real_time_when_resumed_then_false(store):
    store.pause("ava", datetime(2000, 1, 1, tzinfo=UTC))

    assert store.resume("ava") is False
    assert store.resume("ava") is False


def test_given_a_pause_running_into_the_future_when_resumed_then_true(store):
    store.pause("ava", datetime.now(UTC) + timedelta(days=1))

    assert store.resume("ava") is True
    assert store.pauses(T0) == {}


def test_given_a_naive_instant_when_asking_pauses_then_valueerror(store):
    with pytest.raises(ValueError, match="timezone-aware"):
        store.pauses(datetime(2026, 1, 1))


# --- decisions (audit trail) ---------------------------------------------------------------


def test_given_a_decision_when_read_back_then_every_field_round_trips(store):
    original = Decision(
        record_id="0015g00000AbCdEAAZ",
        object="lead",
        crm="salesforce",
        outcome=Outcome.FALLBACK,
        previous_owner="00G000000000001",
        owner="ben",
        owner_crm_id="005000000000002AAA",
        rule="named-accounts",
        reason="ava is out of office; backup ben",
        trace=(
            TraceStep("healthcare", "no_match", "industry is Software"),
            TraceStep("named-accounts", "won", "acme.com in named_enterprise"),
        ),
        trigger="webhook",
        pool=None,
        created_at=datetime(2026, 11, 24, 8, 0, tzinfo=NEW_YORK),
        decided_at=datetime(2026, 11, 25, 9, 0, 0, 123456, tzinfo=NEW_YORK),
        written_at=T0 + timedelta(seconds=2),
    )
    store.commit({}, [], [original])

    (back,) = store.decisions(record_id="0015g00000AbCdEAAZ")

    assert back == original
    assert back.to_dict() == original.to_dict()


def test_given_decisions_for_several_records_when_queried_by_record_then_newest_first(store):
    store.commit({}, [], [
        decision("r1", owner="ava", at=T0),
        decision("r2", owner="ben", at=T0 + timedelta(minutes=1)),
        decision("r1", owner="cara", at=T0 + timedelta(minutes=2)),
    ])
    # Appended later but decided earlier: order follows decided_at, not arrival.
    store.commit({}, [], [decision("r1", owner="dev", at=T0 - timedelta(minutes=1))])

    assert [d.owner for d in store.decisions(record_id="r1")] == ["cara", "ava", "dev"]
    assert [d.owner for d in store.decisions(record_id="r2")] == ["ben"]
    assert store.decisions(record_id="nope") == []


def test_given_decisions_at_the_same_instant_then_the_later_appended_comes_first(store):
    store.commit({}, [], [decision("a"), decision("b")])
    store.commit({}, [], [decision("c")])

    assert [d.record_id for d in store.decisions()] == ["c", "b", "a"]


def test_given_decisions_for_several_reps_when_queried_by_rep_then_only_theirs(store):
    store.commit({}, [], [
        decision("r1", owner="ava", at=T0),
        decision("r2", owner="ben", at=T0 + timedelta(minutes=1)),
        decision("r3", owner="ava", at=T0 + timedelta(minutes=2)),
        decision("r4", owner=None, outcome=Outcome.UNASSIGNED, at=T0 + timedelta(minutes=3)),
    ])

    assert [d.record_id for d in store.decisions(rep="ava")] == ["r3", "r1"]
    assert [d.record_id for d in store.decisions(rep="ben")] == ["r2"]
    assert [d.record_id for d in store.decisions(record_id="r1", rep="ava")] == ["r1"]
    assert store.decisions(record_id="r1", rep="ben") == []


def test_given_decisions_over_time_when_queried_by_range_then_since_inclusive_until_exclusive(
    store,
):
    store.commit({}, [], [decision(f"r{i}", at=T0 + timedelta(hours=i)) for i in range(5)])

    window = store.decisions(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3))
    from_two = store.decisions(since=T0 + timedelta(hours=2))
    before_two = store.decisions(until=T0 + timedelta(hours=2))

    assert [d.record_id for d in window] == ["r2", "r1"]
    assert [d.record_id for d in from_two] == ["r4", "r3", "r2"]
    assert [d.record_id for d in before_two] == ["r1", "r0"]


def test_given_a_range_in_another_timezone_then_it_selects_by_instant(store):
    store.commit(
        {}, [], [decision("utc-14h", at=T0), decision("utc-15h", at=T0 + timedelta(hours=1))]
    )

    since_ny = datetime(2026, 11, 25, 9, 30, tzinfo=NEW_YORK)  # 14:30 UTC

    assert [d.record_id for d in store.decisions(since=since_ny)] == ["utc-15h"]


def test_given_many_decisions_when_limited_then_the_newest_n_in_order(store):
    store.commit({}, [], [
        decision(f"r{i}", owner="ava" if i % 2 else "ben", at=T0 + timedelta(minutes=i))
        for i in range(10)
    ])

    assert [d.record_id for d in store.decisions(limit=3)] == ["r9", "r8", "r7"]
    assert [d.record_id for d in store.decisions(rep="ben", limit=2)] == ["r8", "r6"]
    assert [d.record_id for d in store.decisions(since=T0, until=T0 + timedelta(minutes=5),
                                                 limit=2)] == ["r4", "r3"]
    assert store.decisions(limit=0) == []
    assert len(store.decisions(limit=100)) == 10


def test_given_a_negative_limit_then_valueerror(store):
    with pytest.raises(ValueError, match="limit"):
        store.decisions(limit=-1)


def test_given_an_undated_decision_then_it_is_stored_sorted_last_and_outside_any_range(store):
    store.commit({}, [], [
        decision("undated", at=None),
        decision("old", at=T0),
        decision("new", at=T0 + timedelta(hours=1)),
    ])

    assert [d.record_id for d in store.decisions()] == ["new", "old", "undated"]
    assert store.decisions(record_id="undated")[0].decided_at is None
    assert [d.record_id for d in store.decisions(until=T0 + timedelta(days=1))] == ["new", "old"]
    assert [d.record_id for d in store.decisions(since=T0)] == ["new", "old"]


# --- load (stats) --------------------------------------------------------------------------


def test_given_mixed_outcomes_when_loading_then_assignments_group_by_rep_pool_outcome(store):
    store.commit({}, [], [
        decision("r1", owner="cara", pool="smb"),
        decision("r2", owner="cara", pool="smb"),
        decision("r3", owner="dev", pool="smb"),
        decision("r4", owner="cara", pool=None, rule="named-accounts"),
        decision("r5", owner="maya", outcome=Outcome.FALLBACK, rule=None),
        decision("r6", owner="maya", outcome=Outcome.FALLBACK, pool="smb"),
        # Not load: kept owners, unassigned and skipped records
        # (docs/routing-file.md#edge-cases-pools-and-windows "kept records don't count").
        decision("r7", owner="cara", outcome=Outcome.KEPT_EXISTING),
        decision("r8", owner=None, outcome=Outcome.UNASSIGNED),
        decision("r9", owner=None, outcome=Outcome.SKIPPED),
        decision("r10", owner=None, outcome=Outcome.ASSIGNED),
    ])

    assert store.load() == [
        LoadRow(rep="cara", pool=None, outcome="assigned", count=1),
        LoadRow(rep="cara", pool="smb", outcome="assigned", count=2),
        LoadRow(rep="dev", pool="smb", outcome="assigned", count=1),
        LoadRow(rep="maya", pool=None, outcome="fallback", count=1),
        LoadRow(rep="maya", pool="smb", outcome="fallback", count=1),
    ]


def test_given_assignments_over_days_when_loading_a_range_then_only_that_range_counts(store):
    store.commit({}, [], [
        decision("r0", owner="ava", at=T0 - timedelta(days=1)),
        decision("r1", owner="ava", at=T0),
        decision("r2", owner="ava", at=T0 + timedelta(hours=23)),
        decision("r3", owner="ava", at=T0 + timedelta(days=1)),
        decision("r4", owner="ava", at=None),
    ])

    assert store.load(since=T0, until=T0 + timedelta(days=1)) == [
        LoadRow(rep="ava", pool=None, outcome="assigned", count=2)
    ]
    assert store.load(until=T0) == [LoadRow(rep="ava", pool=None, outcome="assigned", count=1)]
    assert store.load() == [LoadRow(rep="ava", pool=None, outcome="assigned", count=5)]


def test_given_an_empty_store_when_loading_then_no_rows(store):
    assert store.load() == []


# --- persistence ---------------------------------------------------------------------------


def test_given_a_written_store_when_reopened_then_everything_is_still_there(store, store_url):
    store.commit(
        {"smb": 0},
        [PoolChange("smb", "dev", {"dev": -0.5, "cara": 0.5}, {("dev", DAY): 1})],
        [decision("r1", owner="dev", pool="smb")],
    )
    store.pause("ava")
    store.pause("ben", T0 + timedelta(hours=1))
    store.close()

    reopened = open_store(store_url)
    try:
        snap = reopened.load_pools({"smb": {"cara": DAY, "dev": DAY}})["smb"]
        assert (snap.version, snap.last_served) == (1, "dev")
        assert snap.credits == {"dev": -0.5, "cara": 0.5}
        assert snap.counts == {"cara": 0, "dev": 1}
        assert reopened.pauses(T0) == {"ava": None, "ben": T0 + timedelta(hours=1)}
        assert [d.record_id for d in reopened.decisions(rep="dev")] == ["r1"]
        assert reopened.load() == [LoadRow(rep="dev", pool="smb", outcome="assigned", count=1)]
        # And the CAS continues from the persisted version.
        assert reopened.commit({"smb": 0}, [turn("smb", "cara")], []) is False
        assert reopened.commit({"smb": 1}, [turn("smb", "cara")], []) is True
    finally:
        reopened.close()


def test_given_two_open_instances_then_each_sees_the_others_commits(store, store_url):
    other = open_store(store_url)
    try:
        assert other.commit({"smb": 0}, [turn("smb", "cara")], [decision("r1")]) is True

        assert store.load_pools({"smb": {"cara": DAY}})["smb"].counts == {"cara": 1}
        assert store.commit({"smb": 0}, [turn("smb", "dev")], []) is False
        assert [d.record_id for d in store.decisions()] == ["r1"]
    finally:
        other.close()
