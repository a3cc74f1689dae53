"""First-touch SLA, the pure part: touched or not, and where a breach goes (sync/sla.py)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from config.routing import parse
from sync.compiler import CompiledRouting, compile_routing
from sync.decide import RoutingContext
from sync.sla import (
    NOTIFY_MANAGER,
    REROUTE,
    Verdict,
    breach_action,
    judge,
    moved_counts,
    reroute_decision,
    touched_at,
)
from sync.state.base import PoolSnapshot, WatchEntry

WRITTEN = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
NOW = WRITTEN + timedelta(minutes=20)
DAY = "day:2026-12-07"


@dataclass(frozen=True)
class Terms:
    first_touch: timedelta = timedelta(minutes=15)
    on_breach: str = REROUTE
    max_reroutes: int = 1


def entry(*, owner: str = "ava", touch_field: str = "hs_last_sales_activity_timestamp",
          touch_value: str | None = None, pool: str | None = "smb", reroutes: int = 0,
          breached: tuple[str, ...] = ()) -> WatchEntry:
    return WatchEntry(
        crm="hubspot", object="companies", record_id="1001", owner=owner,
        owner_crm_id={"ava": "101", "ben": "102", "cara": "103"}[owner], pool=pool,
        rule="everyone", decision_key="hubspot:account:1001:1", written_at=WRITTEN,
        deadline=WRITTEN + timedelta(minutes=15), touch_field=touch_field,
        touch_value=touch_value, window=DAY, reroutes=reroutes, breached=breached)


def routing() -> CompiledRouting:
    return compile_routing(parse(textwrap.dedent("""\
        version: 1
        reps:
          - {id: ava, crm_ids: {hubspot: "101"}}
          - {id: ben, crm_ids: {hubspot: "102"}}
          - {id: cara, crm_ids: {hubspot: "103"}}
        pools:
          smb: {members: [ava, ben, cara]}
        rules:
          - {name: everyone, assign: {pool: smb}}
        """)))


def context(last_served: str | None = "ava", counts: dict[str, int] | None = None
            ) -> RoutingContext:
    snap = PoolSnapshot(pool="smb", version=3, last_served=last_served,
                        counts=counts or {"ava": 1, "ben": 0, "cara": 0})
    return RoutingContext(routing=routing(), now=NOW, pools={"smb": snap})


# --- touched -----------------------------------------------------------------------------------


def test_given_a_timestamp_after_the_write_then_touched_at_that_instant():
    at = touched_at(entry(), "2026-12-07T14:05:30.000Z", NOW)

    assert at == WRITTEN + timedelta(minutes=5, seconds=30)


def test_given_a_timestamp_before_the_write_then_not_touched():
    assert touched_at(entry(touch_value=None), "2026-12-07T13:59:00Z", NOW) is None


def test_given_epoch_milliseconds_then_read_as_an_instant():
    ms = int((WRITTEN + timedelta(minutes=2)).timestamp() * 1000)

    assert touched_at(entry(), str(ms), NOW) == WRITTEN + timedelta(minutes=2)


@pytest.mark.parametrize("value", ["9999999999999999", "2026-13-45", "x" * 10_000, "\x00"])
def test_given_a_hostile_value_then_it_is_compared_as_text_never_an_error(value):
    assert touched_at(entry(), value, NOW) == NOW
    assert touched_at(entry(touch_value=" ".join(value.split()) or None), value, NOW) is None


def test_given_the_value_at_assignment_unchanged_then_not_touched():
    assert touched_at(entry(touch_field="Status", touch_value="Open - Not Contacted"),
                      "Open - Not Contacted", NOW) is None
    assert touched_at(entry(), None, NOW) is None


def test_given_a_status_that_changed_then_touched_at_the_check():
    e = entry(touch_field="Status", touch_value="Open - Not Contacted")

    assert touched_at(e, "Working - Contacted", NOW) == NOW


def test_given_a_last_activity_date_then_the_write_day_or_later_counts_at_the_check():
    e = entry(touch_field="LastActivityDate", touch_value="2026-11-30")

    assert touched_at(e, "2026-12-07", NOW) == NOW
    assert touched_at(e, "2026-12-06", NOW) is None


# --- judge -------------------------------------------------------------------------------------


def test_given_an_owner_changed_by_a_person_then_overridden_even_if_touched():
    props = {"hubspot_owner_id": "103", "hs_last_sales_activity_timestamp": "2026-12-07T14:01Z"}

    check = judge(entry(), props, "hubspot_owner_id", NOW)

    assert check.verdict == Verdict.OVERRIDDEN and check.owner == "103"


def test_given_a_touched_record_then_touched_with_seconds_from_assignment():
    props = {"hubspot_owner_id": "101", "hs_last_sales_activity_timestamp": "2026-12-07T14:10Z"}

    check = judge(entry(), props, "hubspot_owner_id", NOW)

    assert check.verdict == Verdict.TOUCHED and check.seconds_to_touch == 600


def test_given_an_untouched_record_then_breached_and_a_gone_one_gone():
    assert judge(entry(), {"hubspot_owner_id": "101"}, "hubspot_owner_id",
                 NOW).verdict == Verdict.BREACHED
    assert judge(entry(), None, "hubspot_owner_id", NOW).verdict == Verdict.GONE


# --- where a breach goes -----------------------------------------------------------------------


def test_given_a_reroute_sla_then_the_next_pool_member_after_the_cursor_never_the_breacher():
    ctx = context(last_served="cara")  # the cursor points at ava next: she is the breacher

    action, turn, _ = breach_action(entry(), Terms(), ctx)

    assert action == REROUTE and turn is not None and turn.member == "ben"


def test_given_earlier_breachers_then_they_are_passed_over_too():
    ctx = context(last_served="ava")

    action, turn, note = breach_action(entry(owner="ava", breached=("ben",), reroutes=1),
                                       Terms(max_reroutes=2), ctx)

    assert action == REROUTE and turn is not None and turn.member == "cara"
    assert "ben breached" in note


@pytest.mark.parametrize(("e", "terms", "why"), [
    (entry(), Terms(on_breach=NOTIFY_MANAGER), "notify_manager"),
    (entry(reroutes=1), Terms(max_reroutes=1), "re-routed 1 of 1"),
    (entry(pool=None), Terms(), "not assigned through a pool"),
    (entry(breached=("ben", "cara")), Terms(max_reroutes=5), "nobody else eligible"),
])
def test_given_no_reroute_possible_then_the_manager_is_notified(e, terms, why):
    action, turn, reason = breach_action(e, terms, context())

    assert (action, turn) == (NOTIFY_MANAGER, None) and why in reason


def test_given_a_reroute_then_the_decision_is_audited_with_trigger_sla_and_the_new_crm_id():
    ctx = context(last_served="ava")
    _, turn, note = breach_action(entry(), Terms(), ctx)
    assert turn is not None

    decision = reroute_decision(entry(), "account", turn, ctx, Terms(), note)

    assert (decision.trigger, decision.owner, decision.owner_crm_id, decision.previous_owner,
            decision.pool, decision.rule) == ("sla", "ben", "102", "ava", "smb", "everyone")
    assert "first-touch SLA 15m breached by ava" in decision.reason


def test_given_a_reroute_then_the_count_moves_from_the_breacher_to_the_new_owner():
    ctx = context(last_served="ava")
    e = entry()
    _, turn, _ = breach_action(e, Terms(), ctx)
    assert turn is not None

    [change] = moved_counts(ctx, [e])

    assert change.pool == "smb" and change.last_served == "ben"
    assert dict(change.increments) == {("ben", DAY): 1, ("ava", DAY): -1}


def test_given_a_window_unknown_then_no_count_is_given_back():
    ctx = context()
    e = replace(entry(), window=None)
    breach_action(e, Terms(), ctx)

    [change] = moved_counts(ctx, [e])

    assert all(n > 0 for n in change.increments.values())
