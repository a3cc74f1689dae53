"""The StateStore contract, run unchanged against SQLite and a real Redis (see `store` fixture)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sync.history import History
from sync.models import (
    Decision,
    HistoryEvent,
    Outcome,
    ReviewItem,
    TraceStep,
    decision_key,
    event_id,
    review_id,
)
from sync.state import PoolChange, StateStore, WatchEntry, open_store
from sync.state.base import OwnerMark
from sync.state.redis import RedisStateStore
from sync.state.sqlite import SqliteStateStore

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


def recorded(store: StateStore) -> list[Decision]:
    """The decisions `commit` recorded, in commit order: Redis keeps them in the history outbox
    (until `history.flush` moves them to SQL), SQLite in the history tables of its own file.
    Reading them back by record, rep or time is the history's contract
    (tests/sync/history/test_contract.py)."""
    if isinstance(store, RedisStateStore):
        return [d for _, d in store.outbox(store.outbox_size())]
    assert isinstance(store, SqliteStateStore)
    with History(f"sqlite:///{store.path}") as history:
        return [d for _, d in sorted(history.decision_ids())]


def audited(store: StateStore, record_id: str | None = None) -> list[Decision]:
    """`recorded`, the latest commit first, optionally only one record's decisions."""
    return [d for d in reversed(recorded(store)) if record_id is None or d.record_id == record_id]


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
    assert [d.record_id for d in recorded(store)] == ["r1"]


def test_given_two_workers_reading_the_same_version_then_only_the_first_commit_wins(store):
    seen_by_a = store.load_pools({"smb": {"cara": DAY}})["smb"].version
    seen_by_b = store.load_pools({"smb": {"cara": DAY}})["smb"].version

    first = store.commit({"smb": seen_by_a}, [turn("smb", "cara")], [decision("a")])
    second = store.commit({"smb": seen_by_b}, [turn("smb", "cara")], [decision("b")])

    assert (first, second) == (True, False)
    assert store.load_pools({"smb": {"cara": DAY}})["smb"].counts == {"cara": 1}
    assert [d.record_id for d in recorded(store)] == ["a"]


def test_given_a_never_written_pool_when_expecting_a_nonzero_version_then_false(store):
    assert store.commit({"ghost": 1}, [turn("ghost", "x")], [decision()]) is False

    assert store.load_pools({"ghost": {"x": DAY}})["ghost"].version == 0
    assert recorded(store) == []


def test_given_a_checked_but_unchanged_pool_that_moved_then_the_whole_commit_fails(store):
    store.commit({}, [turn("watched", "x")], [])

    ok = store.commit({"watched": 0, "smb": 0}, [turn("smb", "cara")], [decision()])

    assert ok is False
    assert store.load_pools({"smb": {"cara": DAY}})["smb"].version == 0
    assert recorded(store) == []


def test_given_a_checked_but_unchanged_pool_that_held_then_its_version_stays(store):
    store.commit({}, [turn("watched", "x")], [])

    assert store.commit({"watched": 1, "smb": 0}, [turn("smb", "cara")], []) is True

    snaps = store.load_pools({"watched": {}, "smb": {}})
    assert (snaps["watched"].version, snaps["smb"].version) == (1, 1)


def test_given_only_decisions_when_committing_then_they_are_appended(store):
    assert store.commit({}, [], [decision("r1", outcome=Outcome.KEPT_EXISTING)]) is True

    assert [d.outcome for d in recorded(store)] == [Outcome.KEPT_EXISTING]


def test_given_a_thousand_decisions_when_committing_then_it_is_one_fast_batch(store):
    batch = [
        decision(f"r{i}", owner=f"rep{i % 7}", pool="smb", at=T0 + timedelta(seconds=i))
        for i in range(1000)
    ]
    started = time.perf_counter()

    assert store.commit({"smb": 0}, [turn("smb", "rep6", n=1000)], batch) is True

    # Generous bound: measured ~0.05 s; this only guards against a row-per-transaction regression.
    assert time.perf_counter() - started < 3.0
    assert [d.record_id for d in recorded(store)] == [f"r{i}" for i in range(1000)]


def test_given_a_naive_decided_at_when_committing_then_valueerror_and_nothing_applied(store):
    naive = decision("r1", at=datetime(2026, 1, 1, 12, 0))

    with pytest.raises(ValueError, match="timezone-aware"):
        store.commit({"smb": 0}, [turn("smb", "cara")], [naive])

    assert store.load_pools({"smb": {}})["smb"].version == 0
    assert recorded(store) == []


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


def test_given_pools_and_pauses_then_both_read_in_one_step_as_the_two_calls_read_them(store):
    until = T0 + timedelta(hours=1)
    store.pause("ava", until)
    store.pause("bo")
    windows = {"smb": {"cara": DAY, "dev": DAY}, "ent": {}}

    assert store.load_pools_and_pauses(windows, T0) == (store.load_pools(windows),
                                                        {"ava": until, "bo": None})
    assert store.load_pools_and_pauses({}, until) == ({}, {"bo": None})


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


# --- decisions: recorded with the commit ---------------------------------------------------


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

    (back,) = recorded(store)

    assert back == original
    assert back.to_dict() == original.to_dict()


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
        assert [(d.record_id, d.owner) for d in recorded(reopened)] == [("r1", "dev")]
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
        assert [d.record_id for d in recorded(store)] == ["r1"]
    finally:
        other.close()


# --- first-touch SLA watch -------------------------------------------------------------------


def watch_entry(record_id: str = "r1", *, deadline: datetime = T0 + timedelta(minutes=15),
                dkey: str | None = None, owner: str = "ava", reroutes: int = 0,
                breached: tuple[str, ...] = ()) -> WatchEntry:
    return WatchEntry(
        crm="hubspot", object="companies", record_id=record_id, owner=owner,
        owner_crm_id=f"crm-{owner}", pool="smb", rule="everyone-else",
        decision_key=dkey or f"hubspot:account:{record_id}:1",
        written_at=T0, deadline=deadline, touch_field="hs_last_sales_activity_timestamp",
        touch_value=None, window=DAY, reroutes=reroutes, breached=breached)


def test_given_a_watch_when_read_back_then_every_field_round_trips(store):
    entry = watch_entry(reroutes=1, breached=("ben",))
    store.watch([entry])

    assert store.watch_entry(entry.key) == entry
    assert store.watching() == 1


def test_given_watches_when_claiming_then_only_those_due_come_back_oldest_deadline_first(store):
    late = watch_entry("late", deadline=T0 + timedelta(minutes=30))
    early = watch_entry("early", deadline=T0 + timedelta(minutes=5))
    future = watch_entry("future", deadline=T0 + timedelta(hours=2))
    store.watch([late, early, future])

    claimed = store.claim_due(T0 + timedelta(minutes=30), 10, 60)

    assert [e.record_id for e in claimed] == ["early", "late"]


def test_given_claimed_entries_when_claiming_again_within_the_lease_then_none_twice(store):
    store.watch([watch_entry("a"), watch_entry("b")])
    now = T0 + timedelta(hours=1)

    first = store.claim_due(now, 1, 60)
    second = store.claim_due(now, 10, 60)

    assert [e.record_id for e in first + second] == ["a", "b"]
    assert store.claim_due(now, 10, 60) == []


def test_given_a_claim_whose_lease_ran_out_when_claiming_later_then_the_entry_is_due_again(store):
    store.watch([watch_entry("a")])
    now = T0 + timedelta(hours=1)
    assert len(store.claim_due(now, 10, 60)) == 1

    assert store.claim_due(now + timedelta(seconds=59), 10, 60) == []
    assert [e.record_id for e in store.claim_due(now + timedelta(seconds=61), 10, 60)] == ["a"]


def test_given_a_record_written_again_when_watched_then_the_new_entry_replaces_the_old(store):
    old = watch_entry("a", dkey="k1")
    new = watch_entry("a", dkey="k2", owner="ben",
                      deadline=T0 + timedelta(hours=3))
    store.watch([old])
    store.claim_due(T0 + timedelta(hours=1), 10, 60)
    store.watch([new])

    # The old decision's pass ends its watch: the new entry stays, unclaimed, not yet due.
    assert store.end_watch([old]) == 0
    assert store.watch_entry(new.key) == new
    assert store.claim_due(T0 + timedelta(hours=1, minutes=5), 10, 60) == []
    assert store.end_watch([new]) == 1
    assert store.watching() == 0
    assert store.watch_entry(new.key) is None


def test_given_two_passes_racing_when_claiming_then_each_entry_goes_to_exactly_one(store_url):
    first, second = open_store(store_url), open_store(store_url)
    try:
        first.watch([watch_entry(f"r{i}") for i in range(40)])
        now = T0 + timedelta(hours=1)
        with ThreadPoolExecutor(2) as pool:
            a, b = pool.map(lambda s: [e.record_id for _ in range(8)
                                       for e in s.claim_due(now, 5, 60)], (first, second))
        assert sorted(a + b) == sorted(f"r{i}" for i in range(40))
        assert not set(a) & set(b)
    finally:
        first.close()
        second.close()


def test_given_a_naive_instant_when_claiming_then_valueerror(store):
    with pytest.raises(ValueError):
        store.claim_due(datetime(2026, 11, 25, 14, 0), 10, 60)


# --- own-write marks (docs/operations.md#overrides) ----------------------------------------

MARK_TTL = 3600.0


def mark(record_id: str = "r1", *, owner: str = "101", at: datetime = T0,
         decision: str = "hubspot:companies:r1:1") -> OwnerMark:
    return OwnerMark(crm="hubspot", object="companies", record_id=record_id, owner=owner,
                     written_at=at, decision=decision, rep="ava", rule="everyone-else",
                     pool="smb")


def test_given_no_write_when_asking_marks_then_none(store):
    assert store.owner_marks("hubspot", "companies", ["r1", "r2"]) == {}


def test_given_marks_set_when_read_back_then_every_field_round_trips(store):
    store.set_owner_marks([mark("r1"), mark("r2", owner="102")], MARK_TTL)

    marks = store.owner_marks("hubspot", "companies", ["r1", "r2", "r3"])

    assert marks == {"r1": mark("r1"), "r2": mark("r2", owner="102")}
    assert store.owner_marks("hubspot", "contacts", ["r1"]) == {}  # per object
    assert store.owner_marks("salesforce", "companies", ["r1"]) == {}  # per CRM


def test_given_a_mark_when_a_later_write_is_marked_then_it_replaces_it(store):
    store.set_owner_marks([mark(owner="101")], MARK_TTL)
    later = mark(owner="102", at=T0 + timedelta(minutes=5), decision="hubspot:companies:r1:2")

    store.set_owner_marks([later], MARK_TTL)

    assert store.owner_marks("hubspot", "companies", ["r1"])["r1"] == later


def test_given_a_later_mark_when_an_older_one_is_set_again_then_the_later_one_stays(store):
    later = mark(owner="102", at=T0 + timedelta(minutes=5), decision="hubspot:companies:r1:2")
    store.set_owner_marks([later], MARK_TTL)

    store.set_owner_marks([mark(owner="101")], MARK_TTL)  # a redelivered follower call

    assert store.owner_marks("hubspot", "companies", ["r1"])["r1"] == later


def test_given_a_mark_when_overridden_twice_then_only_the_first_call_wins(store):
    store.set_owner_marks([mark()], MARK_TTL)
    at = T0 + timedelta(hours=1)

    first = store.mark_overridden(mark(), "999", at, by="user 7")
    second = store.mark_overridden(mark(), "888", at)

    assert (first, second) == (True, False)
    stored = store.owner_marks("hubspot", "companies", ["r1"])["r1"]
    assert stored.overridden and stored.overridden_to == "999"
    assert stored.overridden_at == at and stored.overridden_by == "user 7"
    assert stored.owner == "101" and stored.rule == "everyone-else"


def test_given_a_newer_write_when_the_older_mark_is_overridden_then_nothing_changes(store):
    store.set_owner_marks([mark()], MARK_TTL)
    newer = mark(owner="102", at=T0 + timedelta(minutes=5), decision="hubspot:companies:r1:2")
    store.set_owner_marks([newer], MARK_TTL)

    assert store.mark_overridden(mark(), "999", T0 + timedelta(hours=1)) is False
    assert store.mark_overridden(mark("r9"), "999", T0) is False  # no mark at all
    assert not store.owner_marks("hubspot", "companies", ["r1"])["r1"].overridden


def test_given_an_overridden_mark_when_the_router_writes_again_then_the_override_is_gone(store):
    store.set_owner_marks([mark()], MARK_TTL)
    store.mark_overridden(mark(), "999", T0 + timedelta(hours=1))
    again = mark(owner="103", at=T0 + timedelta(hours=2), decision="hubspot:companies:r1:3")

    store.set_owner_marks([again], MARK_TTL)

    assert store.owner_marks("hubspot", "companies", ["r1"])["r1"] == again


def test_given_a_short_ttl_when_it_passes_then_the_mark_is_gone(store):
    store.set_owner_marks([mark()], 0.05)
    time.sleep(0.1)

    assert store.owner_marks("hubspot", "companies", ["r1"]) == {}


def test_given_a_zero_ttl_when_marking_then_valueerror(store):
    with pytest.raises(ValueError, match="ttl_seconds"):
        store.set_owner_marks([mark()], 0)

# --- events (notified, sla_breach, override...): recorded through the store, read by the history


def _events_of(store: StateStore) -> list[HistoryEvent]:
    """The events `record_events` recorded: Redis keeps them in its events outbox until
    `history.flush` moves them, SQLite in its own file's history."""
    if isinstance(store, RedisStateStore):
        return [e for _, e in store.event_outbox(store.event_outbox_size())]
    assert isinstance(store, SqliteStateStore)
    with History(f"sqlite:///{store.path}") as history:
        return sorted(history.events(), key=lambda e: e.at)


def _event(kind: str = "notified", *key: str, at: datetime = T0, **data: object) -> HistoryEvent:
    return HistoryEvent(id=event_id(kind, "hubspot:account:r1", *key), decision_id=None,
                        record_id="r1", crm="hubspot", object="account", kind=kind, at=at,
                        data=data)


def test_given_events_when_recorded_then_they_read_back_whole(store):
    notified = _event("notified", "slack", channel="slack", to="ava")
    breach = _event("sla_breach", at=T0 + timedelta(minutes=15), action="reroute")

    store.record_events([notified, breach])

    got = _events_of(store)
    assert [(e.id, e.kind, e.data) for e in got] == [
        (notified.id, "notified", {"channel": "slack", "to": "ava"}),
        (breach.id, "sla_breach", {"action": "reroute"})]
    assert got[0].at == T0 and got[0].record_id == "r1" and got[0].crm == "hubspot"


def test_given_an_event_recorded_twice_when_stored_in_the_history_then_it_is_kept_once(
        store, tmp_path):
    # A redelivered task records the same event again: same natural key, same id.
    once = _event("notified", "slack", channel="slack")
    store.record_events([once])
    store.record_events([_event("notified", "slack", channel="slack")])

    if isinstance(store, RedisStateStore):  # kept once when the flush moves them to SQL
        from sync.history.outbox import drain

        with History(f"sqlite:///{tmp_path / 'h.db'}") as history:
            history.upgrade()
            drain(store, history)
            assert [e.id for e in history.events()] == [once.id]
        assert store.event_outbox_size() == 0
    else:
        assert [e.id for e in _events_of(store)] == [once.id]


def test_given_data_that_is_not_json_when_recording_then_valueerror_and_nothing_stored(store):
    with pytest.raises(ValueError, match="not JSON"):
        store.record_events([_event("notified", "a", ok=True),
                             _event("notified", "b", bad={1, 2})])
    assert _events_of(store) == []


def test_given_a_naive_instant_when_recording_an_event_then_valueerror(store):
    with pytest.raises(ValueError, match="timezone-aware"):
        store.record_events([_event("override", at=datetime(2026, 11, 25, 14, 0))])
    assert _events_of(store) == []


def test_given_event_ids_then_they_are_stable_positive_and_distinct_by_key():
    assert event_id("notified", "k", "slack") == event_id("notified", "k", "slack")
    assert event_id("notified", "k", "slack") != event_id("notified", "k", "email")
    assert event_id("notified", "k") != event_id("override", "k")
    assert all(0 < event_id("x", str(i)) < 2**63 for i in range(1000))


def test_given_a_decision_then_its_key_names_crm_object_record_and_instant():
    d = decision("r9", at=T0)
    assert decision_key(d) == f"hubspot:account:r9:{int(T0.timestamp()) * 1_000_000}"
    assert decision_key(d._replace(decided_at=T0 + timedelta(microseconds=1))) != decision_key(d)


# --- review items (docs/operations.md#review-before-writing) -------------------------------


def review_item(record_id: str = "r1", *, id: str | None = None,
                at: datetime = T0) -> ReviewItem:
    return ReviewItem(
        id=id or review_id(f"hubspot:companies:{record_id}:{at.isoformat()}"),
        record_id=record_id, crm="hubspot", object="companies", proposed_owner="ava",
        proposed_crm_id="101", rule="named", pool="smb", window=DAY, reason="rule named: ava",
        previous_owner=None, created_at=at, deadline=at + timedelta(hours=4))


def test_given_review_items_added_when_listing_then_open_ones_come_oldest_first(store):
    later, earlier = review_item("r2", at=T0 + timedelta(minutes=5)), review_item("r1")

    store.add_reviews([later, earlier])

    assert store.reviews() == [earlier, later]
    assert store.review(later.id) == later
    assert store.review("nosuchid") is None
    assert store.under_review("hubspot", "companies", ["r1", "r2", "r3"]) == {"r1", "r2"}
    assert store.under_review("hubspot", "contacts", ["r1"]) == set()


def test_given_a_record_under_review_when_another_item_is_added_then_the_first_stays(store):
    first = review_item("r1")
    again = review_item("r1", at=T0 + timedelta(minutes=1))  # the record decided again

    store.add_reviews([first])
    store.add_reviews([again, first])  # and a redelivered batch adding the first once more

    assert store.reviews() == [first]


def test_given_an_open_item_when_two_claim_it_then_exactly_one_gets_it(store_url):
    first, second = open_store(store_url), open_store(store_url)
    try:
        item = review_item()
        first.add_reviews([item])

        claims = [first.claim_review(item.id, 60), second.claim_review(item.id, 60)]

        assert claims.count(None) == 1
        assert item in claims
        assert first.claim_review("nosuchid", 60) is None
    finally:
        first.close()
        second.close()


def test_given_a_claim_released_or_lapsed_then_the_item_can_be_claimed_again(store):
    item = review_item()
    store.add_reviews([item])
    assert store.claim_review(item.id, 60) == item

    store.release_review(item.id)
    assert store.claim_review(item.id, 0.05) == item
    time.sleep(0.15)  # the lease lapses: a reviewer killed mid-approval holds nothing

    assert store.claim_review(item.id, 60) == item


def test_given_an_item_closed_then_it_leaves_the_queue_and_cannot_be_claimed(store):
    item = review_item()
    store.add_reviews([item])
    assert store.claim_review(item.id, 60) is not None
    closed = replace(item, status="approved", by="maya", closed_at=T0 + timedelta(hours=1),
                     final_owner="ava")

    store.close_review(closed)

    assert store.reviews() == []
    assert store.reviews(closed=True) == [closed]
    assert store.review(item.id) == closed
    assert store.claim_review(item.id, 60) is None
    assert store.under_review("hubspot", "companies", ["r1"]) == set()
    # The record may be routed (and held for review) again later: a new item opens.
    again = review_item("r1", at=T0 + timedelta(days=1))
    store.add_reviews([again])
    assert store.reviews() == [again]
    with pytest.raises(ValueError):
        store.close_review(again)  # still open: not a closing


def test_given_an_open_item_when_escalated_twice_then_only_the_first_call_escalates(store):
    item = review_item()
    store.add_reviews([item])

    assert store.escalate_review(item.id) is True
    assert store.escalate_review(item.id) is False
    assert store.escalate_review("nosuchid") is False

    assert store.reviews() == [replace(item, escalated=True)]
    assert store.review(item.id) == replace(item, escalated=True)


def test_given_items_closed_long_ago_when_another_closes_then_they_are_dropped(store):
    old = review_item("r1", at=T0 - timedelta(days=40))
    recent = review_item("r2", at=T0 - timedelta(days=2))
    now = review_item("r3", at=T0)
    store.add_reviews([old, recent, now])
    for item, closed_at in ((old, T0 - timedelta(days=31)), (recent, T0 - timedelta(days=1)),
                            (now, T0)):
        store.close_review(replace(item, status="approved", closed_at=closed_at))

    assert [i.id for i in store.reviews(closed=True)] == [now.id, recent.id]
    assert [i.id for i in store.reviews(closed=True, limit=1)] == [now.id]
    assert store.review(old.id) is None  # gone from the store; its events are in the history
    with pytest.raises(ValueError):
        store.close_review(replace(recent, status="approved", closed_at=None))
