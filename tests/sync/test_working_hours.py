"""Working hours, partial-day leave and `outside_hours` in `decide`: the routing instant in the
rep's own timezone decides, exactly at every boundary, across daylight-saving changes.

See docs/routing-file.md#working-hours.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sync.compiler import CompiledRouting
from sync.decide import RoutingContext, decide
from sync.models import Decision, Outcome
from sync.sla_watch import FirstTouchWatch
from sync.state.sqlite import SqliteStateStore
from tests.builders import rec, routing


def at(text: str) -> datetime:
    """An instant written in UTC (`2026-12-07T14:00:00`)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def one(r: CompiledRouting, now: datetime) -> Decision:
    return decide(rec(), RoutingContext(routing=r, now=now))


def route(r: CompiledRouting, now: datetime, n: int, **kw: object) -> list[Decision]:
    ctx = RoutingContext(routing=r, now=now, **kw)  # type: ignore[arg-type]
    out = []
    for i in range(n):
        d = decide(rec(id=f"r{i}"), ctx)
        if d.turn is not None:
            ctx.apply(d.turn)
        out.append(d)
    return out


def solo(zone: str, days: str = "mon-fri", hours: str = '"09:00-17:30"') -> CompiledRouting:
    """ava works `days`/`hours` in `zone`; zed takes whatever she cannot."""
    return routing(f"""
        version: 1
        reps:
          - id: ava
            timezone: {zone}
            working_hours: {{days: {days}, hours: {hours}}}
          - {{id: zed}}
        rules:
          - {{name: to-ava, assign: {{rep: ava}}}}
          - {{name: rest, assign: {{rep: zed}}}}
        """)


# --- boundaries: the start is inclusive, the end exclusive -------------------------------------


@pytest.mark.parametrize(("instant", "in_hours"), [
    ("2026-12-07T13:59:59", False),  # Mon 08:59:59 in New York (EST, UTC-5)
    ("2026-12-07T14:00:00", True),   # 09:00:00: the start is inclusive
    ("2026-12-07T22:29:59", True),   # 17:29:59
    ("2026-12-07T22:30:00", False),  # 17:30:00: the end is exclusive
    ("2026-12-12T15:00:00", False),  # Saturday 10:00: not a working day
])
def test_given_new_york_hours_when_deciding_then_exact_at_both_ends(instant, in_hours):
    d = one(solo("America/New_York"), at(instant))

    assert (d.owner == "ava") is in_hours


def test_given_a_rep_outside_hours_when_deciding_then_the_trace_says_when_in_their_zone():
    d = one(solo("America/New_York"), at("2026-12-07T23:02:00"))  # Mon 18:02 in New York

    assert d.owner == "zed"
    assert d.trace[0].rule == "to-ava" and d.trace[0].result == "no_assignee"
    assert "ava outside working hours (Mon 18:02 America/New_York)" in d.trace[0].detail


def test_given_the_same_instant_when_reps_are_in_different_zones_then_each_zone_decides():
    instant = at("2026-12-07T15:00:00")  # 10:00 in New York, 07:00 in Los Angeles

    assert one(solo("America/New_York"), instant).owner == "ava"
    assert one(solo("America/Los_Angeles"), instant).owner == "zed"


def test_given_split_ranges_when_deciding_then_the_lunch_break_is_outside_hours():
    r = solo("UTC", hours='["08:00-12:00", "13:00-17:00"]')

    assert one(r, at("2026-12-07T11:59:59")).owner == "ava"
    assert one(r, at("2026-12-07T12:00:00")).owner == "zed"
    assert one(r, at("2026-12-07T12:59:59")).owner == "zed"
    assert one(r, at("2026-12-07T13:00:00")).owner == "ava"


@pytest.mark.parametrize(("instant", "in_hours"), [
    ("2026-12-11T21:59:59", False),  # Fri 21:59
    ("2026-12-11T22:00:00", True),   # Fri 22:00: Friday's shift starts
    ("2026-12-12T05:59:59", True),   # Sat 05:59: still Friday's shift
    ("2026-12-12T06:00:00", False),  # Sat 06:00: ends, exclusive
    ("2026-12-12T22:00:00", False),  # Sat 22:00: Saturday is not a working day
    ("2026-12-07T03:00:00", False),  # Mon 03:00: Sunday had no shift
    ("2026-12-08T03:00:00", True),   # Tue 03:00: Monday's shift
])
def test_given_an_overnight_range_when_deciding_then_it_belongs_to_the_day_it_starts(
        instant, in_hours):
    r = solo("UTC", hours='"22:00-06:00"')

    assert (one(r, at(instant)).owner == "ava") is in_hours


# --- daylight saving: wall-clock hours move with the zone's offset ------------------------------


@pytest.mark.parametrize(("instant", "in_hours"), [
    # New York springs forward on Sunday 2026-03-08 at 02:00 EST -> 03:00 EDT.
    ("2026-03-07T13:59:59", False),  # Sat 08:59:59 EST
    ("2026-03-07T14:00:00", True),   # Sat 09:00 EST (UTC-5)
    ("2026-03-08T12:59:59", False),  # Sun 08:59:59 EDT
    ("2026-03-08T13:00:00", True),   # Sun 09:00 EDT (UTC-4): an hour earlier in UTC
    ("2026-03-08T20:59:59", True),   # Sun 16:59:59 EDT
    ("2026-03-08T21:00:00", False),  # Sun 17:00 EDT
    # ... and falls back on Sunday 2026-11-01 at 02:00 EDT -> 01:00 EST.
    ("2026-10-31T13:00:00", True),   # Sat 09:00 EDT
    ("2026-11-01T13:00:00", False),  # Sun 08:00 EST
    ("2026-11-01T14:00:00", True),   # Sun 09:00 EST
])
def test_given_a_dst_change_in_new_york_when_deciding_then_hours_follow_the_wall_clock(
        instant, in_hours):
    r = solo("America/New_York", days="mon-sun", hours='"09:00-17:00"')

    assert (one(r, at(instant)).owner == "ava") is in_hours


@pytest.mark.parametrize(("instant", "in_hours"), [
    # Sydney springs forward on Sunday 2026-10-04 at 02:00 AEST -> 03:00 AEDT.
    ("2026-10-01T22:59:59", False),  # Fri 2026-10-02 08:59:59 AEST (UTC+10)
    ("2026-10-01T23:00:00", True),   # Fri 09:00 AEST
    ("2026-10-04T21:59:59", False),  # Mon 2026-10-05 08:59:59 AEDT (UTC+11)
    ("2026-10-04T22:00:00", True),   # Mon 09:00 AEDT: an hour earlier in UTC than Friday
    ("2026-10-05T06:29:59", True),   # Mon 17:29:59 AEDT
    ("2026-10-05T06:30:00", False),  # Mon 17:30 AEDT
    # ... and falls back on Sunday 2026-04-05 at 03:00 AEDT -> 02:00 AEST.
    ("2026-04-02T22:00:00", True),   # Fri 2026-04-03 09:00 AEDT
    ("2026-04-05T22:00:00", False),  # Mon 2026-04-06 08:00 AEST
    ("2026-04-05T23:00:00", True),   # Mon 09:00 AEST
])
def test_given_a_dst_change_in_sydney_when_deciding_then_hours_follow_the_wall_clock(
        instant, in_hours):
    r = solo("Australia/Sydney")

    assert (one(r, at(instant)).owner == "ava") is in_hours


def test_given_an_overnight_shift_across_spring_forward_then_it_is_an_hour_shorter():
    r = solo("America/New_York", days="sat", hours='"22:00-06:00"')

    assert one(r, at("2026-03-08T06:59:59")).owner == "ava"  # Sun 01:59:59 EST
    assert one(r, at("2026-03-08T07:00:00")).owner == "ava"  # Sun 03:00 EDT (02:xx skipped)
    assert one(r, at("2026-03-08T09:59:59")).owner == "ava"  # Sun 05:59:59 EDT
    assert one(r, at("2026-03-08T10:00:00")).owner == "zed"  # Sun 06:00 EDT


# --- partial-day out of office -------------------------------------------------------------------


PARTIAL = """
version: 1
reps:
  - id: ava
    timezone: America/Los_Angeles
    out_of_office: [{{start: {start}, end: {end}}}]
  - {{id: zed}}
rules:
  - {{name: to-ava, assign: {{rep: ava}}}}
  - {{name: rest, assign: {{rep: zed}}}}
"""


@pytest.mark.parametrize(("instant", "available"), [
    ("2026-12-24T19:59:59", True),   # 11:59:59 in Los Angeles (PST, UTC-8)
    ("2026-12-24T20:00:00", False),  # 12:00: leave starts, inclusive
    ("2026-12-25T00:59:59", False),  # 16:59:59
    ("2026-12-25T01:00:00", True),   # 17:00: back, the end is the first minute back
])
def test_given_a_partial_day_leave_when_deciding_then_exact_in_the_reps_zone(
        instant, available):
    r = routing(PARTIAL.format(start="2026-12-24T12:00", end="2026-12-24T17:00"))

    d = one(r, at(instant))

    assert (d.owner == "ava") is available
    if not available:
        assert "ava out of office until 2026-12-24 17:00" in d.trace[0].detail


def test_given_a_timed_start_and_a_date_end_when_deciding_then_the_end_day_is_whole():
    r = routing(PARTIAL.format(start="2026-12-24T12:00", end="2026-12-26"))

    assert one(r, at("2026-12-27T07:59:59")).owner == "zed"  # 26th 23:59:59 in Los Angeles
    assert one(r, at("2026-12-27T08:00:00")).owner == "ava"  # 27th 00:00


# --- pools: next_available (the default) and queue ------------------------------------------------


def pool(mode: str | None, extra: str = "") -> CompiledRouting:
    """ana and bo work 09:00-17:00 in New York, cy in Los Angeles; the pool's overflow is mo."""
    option = f", outside_hours: {mode}" if mode else ""
    return routing(f"""
        version: 1
        reps:
          - {{id: ana, timezone: America/New_York,
              working_hours: {{days: mon-fri, hours: "09:00-17:00"}}}}
          - {{id: bo, timezone: America/New_York,
              working_hours: {{days: mon-fri, hours: "09:00-17:00"}}{extra}}}
          - {{id: cy, timezone: America/Los_Angeles,
              working_hours: {{days: mon-fri, hours: "09:00-17:00"}}}}
          - {{id: mo}}
          - {{id: zed}}
        pools:
          p: {{members: [ana, bo, cy], overflow: {{rep: mo}}{option}}}
          q: {{members: [ana, bo, cy]{option}}}
        rules:
          - {{name: to-p, when: {{industry: {{eq: P}}}}, assign: {{pool: p}}}}
          - {{name: to-q, assign: {{pool: q}}}}
          - {{name: rest, assign: {{rep: zed}}}}
        """)


MON_10_NY = at("2026-12-07T15:00:00")  # 10:00 in New York, 07:00 in Los Angeles
MON_21_NY = at("2026-12-08T02:00:00")  # Mon 21:00 in New York, 18:00 in Los Angeles


@pytest.mark.parametrize("mode", [None, "next_available", "queue"])
def test_given_some_members_in_hours_when_routing_then_only_they_share_turns(mode):
    decisions = route(pool(mode), MON_10_NY, 6)

    assert [d.owner for d in decisions] == ["ana", "bo"] * 3
    assert "cy outside working hours (Mon 07:00 America/Los_Angeles)" in decisions[0].reason


def test_given_every_member_outside_hours_when_next_available_then_overflow_or_next_rule():
    r = pool("next_available")

    overflowed = decide(rec(industry="P"), RoutingContext(routing=r, now=MON_21_NY))
    fell_through = decide(rec(), RoutingContext(routing=r, now=MON_21_NY))

    assert (overflowed.owner, overflowed.outcome) == ("mo", Outcome.FALLBACK)
    assert (fell_through.owner, fell_through.rule) == ("zed", "rest")
    assert [s.result for s in fell_through.trace] == ["no_match", "no_assignee", "won"]
    assert "ana outside working hours (Mon 21:00 America/New_York)" in \
        fell_through.trace[1].detail


def test_given_every_member_outside_hours_when_queue_then_the_pool_keeps_its_turns():
    decisions = route(pool("queue"), MON_21_NY, 6)

    assert [d.owner for d in decisions] == ["ana", "bo", "cy"] * 2  # the same fair rotation
    assert all(d.rule == "to-q" and d.outcome is Outcome.ASSIGNED for d in decisions)
    assert all(d.turn is not None and d.pool == "q" for d in decisions)
    assert "every member outside working hours, queued for ana " \
           "(hours start Tue 09:00 America/New_York)" in decisions[0].reason
    assert "queued for cy (hours start Tue 09:00 America/Los_Angeles)" in decisions[2].reason


def test_given_queue_on_a_friday_evening_then_the_wait_is_until_monday():
    d = route(pool("queue"), at("2026-12-12T03:00:00"), 1)[0]  # Fri 22:00 in New York

    assert d.owner == "ana" and "hours start Mon 09:00 America/New_York" in d.reason


def test_given_queue_when_a_member_is_away_for_another_reason_then_it_is_not_queued_for():
    r = pool("queue", extra=", out_of_office: [{start: 2026-12-01, end: 2026-12-31}]")

    decisions = route(r, MON_21_NY, 4, paused={"cy": None})

    assert [d.owner for d in decisions] == ["ana"] * 4  # bo is on leave, cy paused


def test_given_queue_when_every_member_is_away_then_overflow_as_before():
    r = pool("queue")

    d = decide(rec(industry="P"), RoutingContext(routing=r, now=MON_21_NY,
                                                 paused=dict.fromkeys(["ana", "bo", "cy"])))

    assert (d.owner, d.outcome) == ("mo", Outcome.FALLBACK)


def test_given_queue_with_a_cap_when_members_are_full_then_capped_members_are_not_queued_for():
    r = routing("""
        version: 1
        reps:
          - {id: ana, working_hours: {days: mon-fri, hours: "09:00-17:00"}}
          - {id: bo, working_hours: {days: mon-fri, hours: "09:00-17:00"}}
          - {id: zed}
        pools:
          p: {members: [ana, bo], outside_hours: queue, cap: {max: 2, per: day}}
        rules:
          - {name: to-p, assign: {pool: p}}
          - {name: rest, assign: {rep: zed}}
        """)

    decisions = route(r, at("2026-12-07T20:00:00"), 6)

    assert [d.owner for d in decisions] == ["ana", "bo", "ana", "bo", "zed", "zed"]


# --- when the owner is next on duty: the first-touch SLA clock -----------------------------------


@pytest.mark.parametrize(("written", "on_duty"), [
    ("2026-12-07T15:00:00", "2026-12-07T15:00:00"),  # Mon 10:00 in New York: in hours already
    ("2026-12-07T23:02:00", "2026-12-08T14:00:00"),  # Mon 18:02 -> Tue 09:00 EST
    ("2026-12-12T03:00:00", "2026-12-14T14:00:00"),  # Fri 22:00 -> Mon 09:00
    ("2026-03-07T03:00:00", "2026-03-09T13:00:00"),  # Fri 22:00 EST -> Mon 09:00 EDT (DST)
])
def test_given_a_write_outside_hours_when_asking_on_duty_then_the_next_start_in_their_zone(
        written, on_duty):
    r = solo("America/New_York")

    assert r.on_duty_from("ava", at(written)) == at(on_duty)
    assert r.on_duty_from("zed", at(written)) == at(written)  # no working hours: any time


def test_given_a_write_outside_hours_when_watching_first_touch_then_the_clock_starts_on_duty(
        tmp_path):
    r = routing("""
        version: 1
        reps:
          - {id: ava, timezone: Australia/Sydney, crm_ids: {hubspot: "100"},
             working_hours: {days: mon-fri, hours: "09:00-17:30"}}
        pools:
          desk: {members: [ava], outside_hours: queue}
        sla: {first_touch: 15m}
        rules:
          - {name: desk, assign: {pool: desk}}
        """)
    ctx = RoutingContext(routing=r, now=at("2026-10-03T12:00:00"))  # Sat 22:00 AEST
    d = decide(rec(crm="hubspot"), ctx)
    written = d._replace(written_at=at("2026-10-03T12:00:05"))
    with SqliteStateStore(tmp_path / "s.db") as store:
        watch = FirstTouchWatch(r, store, {"companies": "hs_last_sales_activity_timestamp"})
        entry = watch.entry("hubspot", "companies", "hs_last_sales_activity_timestamp",
                            written, {})

    assert d.owner == "ava" and "queued for ava (hours start Mon 09:00" in d.reason
    assert entry is not None
    # Mon 2026-10-05 09:00 AEDT (Sydney sprang forward on Sunday) = Sun 22:00 UTC, plus 15m.
    assert entry.deadline == at("2026-10-04T22:15:00")
