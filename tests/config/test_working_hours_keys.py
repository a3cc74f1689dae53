"""The routing-file keys of working hours (DESIGN §9): `working_hours`, partial-day
`out_of_office`, and a pool's `outside_hours`, each error naming its path."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from tests.config.test_routing import assert_error, compile_text, config_error, doc


def rep(body: str) -> str:
    return f"version: 1\nreps:\n  - {{id: ava, {body}}}\n  - {{id: ben}}\n"


@pytest.mark.parametrize(("days", "expected"), [
    ("mon-fri", {0, 1, 2, 3, 4}),
    ("[mon, tue, thu]", {0, 1, 3}),
    ("Saturday", {5}),
    ("fri-mon", {4, 5, 6, 0}),  # wraps over the weekend
    ("[mon-wed, fri]", {0, 1, 2, 4}),
    ("mon-sun", set(range(7))),
])
def test_given_days_in_each_form_when_compiling_then_the_week_is_those_days(days, expected):
    compiled = compile_text(rep(f'working_hours: {{days: {days}, hours: "09:00-17:30"}}'))
    assert compiled.schedules["ava"].days == frozenset(expected)
    assert "ben" not in compiled.schedules  # no working_hours: any time


@pytest.mark.parametrize(("hours", "expected"), [
    ('"09:00-17:30"', ((540, 1050),)),
    ('["08:00-12:00", "13:00-17:00"]', ((480, 720), (780, 1020))),
    ('"22:00-06:00"', ((1320, 360),)),  # overnight
    ('"00:00-24:00"', ((0, 1440),)),
    ("9:00-17:00", ((540, 1020),)),  # one-digit hour, unquoted
])
def test_given_hours_in_each_form_when_compiling_then_ranges_in_minutes(hours, expected):
    compiled = compile_text(rep(f"working_hours: {{days: mon-fri, hours: {hours}}}"))
    assert compiled.schedules["ava"].ranges == expected


@pytest.mark.parametrize(("body", "path", "expected", "found"), [
    pytest.param('working_hours: {days: mon-fry, hours: "09:00-17:00"}',
                 "reps[0].working_hours.days", "days as `mon-fri`", "'mon-fry'", id="bad-day"),
    pytest.param('working_hours: {days: [mon, 3], hours: "09:00-17:00"}',
                 "reps[0].working_hours.days[1]", "a day name", "3", id="day-number"),
    pytest.param('working_hours: {days: [], hours: "09:00-17:00"}',
                 "reps[0].working_hours.days", "days as", "an empty list", id="no-days"),
    pytest.param("working_hours: {days: mon-fri, hours: [\"09:00-12:00\", \"13:00-25:00\"]}",
                 "reps[0].working_hours.hours[1]", 'hours as "HH:MM-HH:MM"', "'13:00-25:00'",
                 id="hour-25"),
    pytest.param('working_hours: {days: mon-fri, hours: "9-17"}',
                 "reps[0].working_hours.hours", 'hours as "HH:MM-HH:MM"', "'9-17'",
                 id="no-minutes"),
    pytest.param('working_hours: {days: mon-fri, hours: "09:60-17:00"}',
                 "reps[0].working_hours.hours", 'hours as "HH:MM-HH:MM"', "'09:60-17:00'",
                 id="minute-60"),
    pytest.param('working_hours: {days: mon-fri, hours: "24:00-06:00"}',
                 "reps[0].working_hours.hours", 'hours as "HH:MM-HH:MM"', "'24:00-06:00'",
                 id="start-24"),
    pytest.param('working_hours: {days: mon-fri, hours: "09:00-09:00"}',
                 "reps[0].working_hours.hours", "an end different from its start",
                 "'09:00-09:00'", id="empty-range"),
    pytest.param("working_hours: {days: mon-fri, hours: {from: 9}}",
                 "reps[0].working_hours.hours", 'hours as "HH:MM-HH:MM"', "{from: 9}",
                 id="hours-mapping"),
    pytest.param('working_hours: {days: mon-fri, hours: "09:00-17:00", tz: UTC}',
                 "reps[0].working_hours.tz", "only known keys", "unknown key 'tz'",
                 id="unknown-key"),
    pytest.param("working_hours: mon-fri",
                 "reps[0].working_hours", "a mapping", "'mon-fri'", id="not-a-mapping"),
])
def test_given_broken_working_hours_when_compiling_then_error_names_path(
        body, path, expected, found):
    assert_error(config_error(rep(body)), path, expected, found)


def test_given_working_hours_without_hours_when_compiling_then_the_key_is_required():
    err = config_error(rep("working_hours: {days: mon-fri}"))
    assert str(err) == "r.yaml: reps[0].working_hours.hours: expected this required key"


def test_given_partial_day_leave_when_parsing_then_datetimes_and_dates_are_kept_apart():
    compiled = compile_text(rep(
        "out_of_office: [{start: 2026-12-24T12:00, end: 2026-12-24T23:59},"
        " {start: '2026-12-31 13:30', end: 2027-01-01}]"))
    first, second = compiled.file.reps[0].out_of_office
    assert first.start == datetime(2026, 12, 24, 12, 0)
    assert first.end == datetime(2026, 12, 24, 23, 59)
    assert second.start == datetime(2026, 12, 31, 13, 30)
    assert second.end == date(2027, 1, 1) and not isinstance(second.end, datetime)


@pytest.mark.parametrize(("leave", "path", "expected", "found"), [
    pytest.param("{start: 2026-12-24T12:00, end: 2026-12-24T11:00}", "reps[0].out_of_office[0]",
                 "an end after the start 2026-12-24 12:00:00", "end 2026-12-24 11:00:00",
                 id="end-before-start"),
    pytest.param("{start: 2026-12-24T12:00, end: 2026-12-24T12:00}", "reps[0].out_of_office[0]",
                 "an end after the start", "end 2026-12-24 12:00:00", id="empty"),
    pytest.param("{start: 2026-12-25T09:00, end: 2026-12-24}", "reps[0].out_of_office[0]",
                 "an end after the start", "end 2026-12-24", id="date-end-before-moment"),
    pytest.param("{start: 2026-12-24T25:00, end: 2026-12-25}", "reps[0].out_of_office[0].start",
                 "a date YYYY-MM-DD or a date and time YYYY-MM-DDTHH:MM", "'2026-12-24T25:00'",
                 id="hour-25"),
    pytest.param("{start: '2026-12-24T12:00+01:00', end: 2026-12-25}",
                 "reps[0].out_of_office[0].start", "no offset", "'2026-12-24T12:00+01:00'",
                 id="offset"),
    pytest.param("{start: 2026-12-24, end: noon}", "reps[0].out_of_office[0].end",
                 "a date YYYY-MM-DD", "'noon'", id="words"),
])
def test_given_broken_partial_leave_when_parsing_then_error_names_path(
        leave, path, expected, found):
    assert_error(config_error(rep(f"out_of_office: [{leave}]")), path, expected, found)


def test_given_a_pool_outside_hours_when_compiling_then_queue_or_next_available():
    compiled = compile_text(doc(
        "pools:\n  a: {members: [ava], outside_hours: queue}\n  b: {members: [ben]}\n"))
    assert compiled.pools["a"].outside_hours == "queue"
    assert compiled.pools["b"].outside_hours == "next_available"  # the default


def test_given_an_unknown_outside_hours_mode_when_compiling_then_error_names_path():
    err = config_error(doc("pools:\n  a: {members: [ava], outside_hours: wait}\n"))
    assert_error(err, "pools.a.outside_hours", "'next_available' or 'queue'", "'wait'")


@pytest.mark.parametrize(("body", "path", "found"), [
    pytest.param("working_hours: {days: mon, hours: '٠٩:٠٠-10:00'}",
                 "reps[0].working_hours.hours", "'٠٩:٠٠-10:00'", id="non-ascii-digits"),
    pytest.param("working_hours: {days: mon, hours: [" + ", ".join(["'01:00-02:00'"] * 25)
                 + "]}", "reps[0].working_hours.hours", "a list of 25 items", id="too-many"),
    pytest.param("out_of_office: [{start: '" + "2" * 3000 + "', end: 2026-01-01}]",
                 "reps[0].out_of_office[0].start", "str", id="huge-not-echoed"),
    pytest.param("out_of_office: [{start: 12345, end: 2026-01-01}]",
                 "reps[0].out_of_office[0].start", "int", id="a-number"),
])
def test_given_hostile_hours_or_leave_when_parsing_then_exit_2_style_error_with_path(
        body, path, found):
    err = config_error(rep(body))
    assert err.path == path and f", found {found}" in str(err)
    assert len(str(err)) < 400
