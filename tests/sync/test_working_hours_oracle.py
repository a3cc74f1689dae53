"""Property tests: working hours against an independent oracle, and pool fairness under them.

The oracle states the rule the other way round from config/hours.py: it lays each listed day's
shifts out as wall-clock intervals [start, end) (an overnight shift ends the next day) and asks
whether the routing instant, read in the rep's timezone, falls in one. `decide` must agree at
every instant, including a second either side of each boundary and across DST changes.
See docs/routing-file.md#working-hours.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from config.routing import parse
from sync.compiler import CompiledRouting, compile_routing
from sync.decide import RoutingContext, decide
from sync.normalize import build_record

PROPERTY = settings(derandomize=True, max_examples=150, deadline=None)
POOLS = settings(derandomize=True, max_examples=40, deadline=None)
ZONES = ["UTC", "America/New_York", "Australia/Sydney", "Europe/London", "Asia/Kolkata",
         "Pacific/Chatham", "America/St_Johns"]
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)
RECORD = build_record({"id": "r"})

Range = tuple[int, int]  # minutes after midnight; end 1440 is midnight; end < start: overnight


def clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def in_hours_oracle(instant: datetime, zone: str, days: set[int], ranges: Sequence[Range]
                    ) -> bool:
    local = instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    for back in (0, 1, 2):
        day = local.date() - timedelta(days=back)
        if day.weekday() not in days:
            continue
        for start, end in ranges:
            since = datetime.combine(day, time(start // 60, start % 60))
            last = day + timedelta(days=1) if end <= start or end == 1440 else day
            until = datetime.combine(last, time((end % 1440) // 60, end % 60))
            if since <= local < until:
                return True
    return False


def rep_yaml(rep_id: str, zone: str, days: set[int], ranges: Sequence[Range]) -> str:
    listed = ", ".join(DAYS[d] for d in sorted(days))
    hours = ", ".join(f'"{clock(s)}-{clock(e)}"' for s, e in ranges)
    return (f"  - {{id: {rep_id}, timezone: {zone}, "
            f"working_hours: {{days: [{listed}], hours: [{hours}]}}}}\n")


def solo(zone: str, days: set[int], ranges: Sequence[Range]) -> CompiledRouting:
    text = ("version: 1\nreps:\n" + rep_yaml("ava", zone, days, ranges) + "  - {id: zed}\n"
            "rules:\n  - {name: to-ava, assign: {rep: ava}}\n"
            "  - {name: rest, assign: {rep: zed}}\n")
    return compile_routing(parse(textwrap.dedent(text)))


day_sets = st.sets(st.integers(0, 6), min_size=1)
minutes = st.integers(0, 1439)
ranges_strategy = st.lists(
    st.tuples(minutes, st.integers(1, 1440)).filter(lambda r: r[0] != r[1]),
    min_size=1, max_size=3)


@PROPERTY
@given(zone=st.sampled_from(ZONES), days=day_sets, ranges=ranges_strategy,
       offset=st.integers(0, 365 * 24 * 3600), pick=st.integers(0, 5),
       nudge=st.sampled_from([-1, 0, 1, 0]))
def test_given_any_week_and_instant_when_deciding_then_availability_equals_the_oracle(
    zone, days, ranges, offset, pick, nudge,
):
    instant = YEAR_START + timedelta(seconds=offset)
    # Half the time, move the instant to a boundary of one of the ranges (± a second), in the
    # rep's wall clock on that local day: where an off-by-one would hide.
    if pick < len(ranges) * 2:
        start, end = ranges[pick // 2]
        edge = start if pick % 2 == 0 else end % 1440
        local = instant.astimezone(ZoneInfo(zone))
        wall = datetime.combine(local.date(), time(edge // 60, edge % 60))
        instant = wall.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC) + timedelta(seconds=nudge)

    d = decide(RECORD, RoutingContext(routing=solo(zone, days, ranges), now=instant))

    assert (d.owner == "ava") is in_hours_oracle(instant, zone, days, ranges), d.reason


# --- fairness --------------------------------------------------------------------------------


def pool_routing(members: Sequence[tuple[str, set[int], list[Range]]], mode: str
                 ) -> CompiledRouting:
    reps = "".join(rep_yaml(f"m{i}", zone, days, ranges)
                   for i, (zone, days, ranges) in enumerate(members))
    names = ", ".join(f"m{i}" for i in range(len(members)))
    text = ("version: 1\nreps:\n" + reps + "  - {id: zed}\npools:\n"
            f"  p: {{members: [{names}], outside_hours: {mode}}}\n"
            "rules:\n  - {name: pool, assign: {pool: p}}\n"
            "  - {name: rest, assign: {rep: zed}}\n")
    return compile_routing(parse(textwrap.dedent(text)))


schedules = st.lists(st.tuples(st.sampled_from(ZONES), day_sets, ranges_strategy),
                     min_size=2, max_size=5)


@POOLS
@given(members=schedules, always=st.sets(st.integers(0, 4), min_size=1),
       mode=st.sampled_from(["next_available", "queue"]),
       gaps=st.lists(st.integers(1, 6 * 3600), min_size=1, max_size=80),
       offset=st.integers(0, 365 * 24 * 3600))
def test_given_members_with_hours_when_routing_over_time_then_exact_and_fair(
    members, always, mode, gaps, offset,
):
    # Members in `always` work round the clock: they are in hours at every turn, so round robin
    # must keep them within one of each other whoever else comes and goes.
    always = {i % len(members) for i in always}
    members = [(zone, set(range(7)), [(0, 1440)]) if i in always else (zone, days, ranges)
               for i, (zone, days, ranges) in enumerate(members)]
    steady = [f"m{i}" for i in range(len(members)) if i in always]
    r = pool_routing(members, mode)
    snapshot = None
    counts: Counter[str] = Counter()
    instant = YEAR_START + timedelta(seconds=offset)
    for gap in gaps:
        instant += timedelta(seconds=gap)
        ctx = RoutingContext(routing=r, now=instant,
                             pools={"p": snapshot} if snapshot is not None else {})
        d = decide(RECORD, ctx)
        in_hours = {f"m{i}" for i, (zone, days, ranges) in enumerate(members)
                    if in_hours_oracle(instant, zone, days, ranges)}
        assert d.owner in in_hours, (instant, d.reason)  # somebody always is: `steady`
        assert d.turn is not None
        ctx.apply(d.turn)
        snapshot = ctx.pools["p"]
        counts[d.owner] += 1

    assert max(counts[m] for m in steady) - min(counts[m] for m in steady) <= 1


@POOLS
@given(members=schedules, gaps=st.lists(st.integers(1, 6 * 3600), min_size=1, max_size=60),
       offset=st.integers(0, 365 * 24 * 3600))
def test_given_queue_when_routing_over_time_then_in_hours_first_else_queued_in_rotation(
    members, gaps, offset,
):
    r = pool_routing(members, "queue")
    snapshot = None
    queued: list[str] = []
    instant = YEAR_START + timedelta(seconds=offset)
    names = [f"m{i}" for i in range(len(members))]
    for gap in gaps:
        instant += timedelta(seconds=gap)
        ctx = RoutingContext(routing=r, now=instant,
                             pools={"p": snapshot} if snapshot is not None else {})
        d = decide(RECORD, ctx)
        in_hours = {f"m{i}" for i, (zone, days, ranges) in enumerate(members)
                    if in_hours_oracle(instant, zone, days, ranges)}
        assert d.turn is not None and d.rule == "pool"  # queue never lets a record fall through
        if in_hours:
            assert d.owner in in_hours
        else:
            assert "queued for" in d.reason
            # The round-robin cursor moves on from the last member served, in list order.
            last = snapshot.last_served if snapshot is not None else None
            start = names.index(last) + 1 if last in names else 0
            assert d.owner == names[start % len(names)]
            queued.append(d.owner)
        ctx.apply(d.turn)
        snapshot = ctx.pools["p"]


@POOLS
@given(zone=st.sampled_from(ZONES), days=day_sets, ranges=ranges_strategy,
       offset=st.integers(0, 365 * 24 * 3600))
def test_given_any_week_when_asking_on_duty_then_the_first_in_hours_minute_from_then(
    zone, days, ranges, offset,
):
    instant = YEAR_START + timedelta(seconds=offset)
    r = solo(zone, days, ranges)

    on_duty = r.on_duty_from("ava", instant)

    assert on_duty >= instant
    assert in_hours_oracle(on_duty, zone, days, ranges) or _in_a_gap(on_duty, zone)
    if on_duty > instant:
        # Nobody is on duty in between: probe every minute boundary from `instant` on.
        probe = instant.replace(second=0, microsecond=0) + timedelta(minutes=1)
        assert not in_hours_oracle(instant, zone, days, ranges)
        while probe < on_duty:
            assert not in_hours_oracle(probe, zone, days, ranges), probe
            probe += timedelta(minutes=1)


def _in_a_gap(instant: datetime, zone: str) -> bool:
    """A range that starts in an hour the clock skipped begins just after the gap."""
    local = instant.astimezone(ZoneInfo(zone))
    an_hour_before = (instant - timedelta(hours=1)).astimezone(ZoneInfo(zone))
    return local.utcoffset() != an_hour_before.utcoffset()
