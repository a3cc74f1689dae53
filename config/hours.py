"""Working hours and out-of-office moments: parsing and wall-clock arithmetic, no clock reads.

See docs/routing-file.md#working-hours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAYS = {name.lower(): i for i, name in enumerate(DAY_NAMES)}
_DAYS.update({full: i for i, full in enumerate(
    ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))})
MAX_RANGES = 24  # ranges in one rep's `hours`; a real day has one to three
MINUTES_PER_DAY = 24 * 60

DAYS_EXPECTED = ("days as `mon-fri`, a day name (mon … sun), or a list of them "
                 "such as [mon, tue, thu]")
HOURS_EXPECTED = ('hours as "HH:MM-HH:MM" (24-hour clock, end 24:00 at most; an end before '
                  'the start runs overnight into the next day) or a list of such ranges')
MOMENT_EXPECTED = ("a date YYYY-MM-DD or a date and time YYYY-MM-DDTHH:MM, in the rep's "
                   "timezone (no offset)")

# ASCII digits only: `\d` would take "٠٩:٠٠" (Arabic-Indic), which nobody means as a time.
_TIME = re.compile(r"([0-9]{1,2}):([0-9]{2})")
_MOMENT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2})?)?")


class HoursError(ValueError):
    """A `working_hours` value that cannot be used: `where` is the path below `working_hours`
    (`hours[1]`), `expected` what was, `found` what was given."""

    def __init__(self, where: str, expected: str, found: Any) -> None:
        super().__init__(f"{where}: {expected}")
        self.where = where
        self.expected = expected
        self.found = found


@dataclass(frozen=True, slots=True)
class Schedule:
    """A rep's working week in wall-clock minutes of their own timezone.

    `ranges` are `(start, end)` minutes after midnight; the start is inclusive and the end
    exclusive (09:00-17:30 takes 09:00:00 and not 17:30:00). A range whose end is before its
    start is an overnight shift: it begins on a listed day and ends the next morning, so
    `fri 22:00-06:00` covers Saturday 05:59. Times are wall-clock: on a daylight-saving change
    day the working day is an hour shorter or longer, and an hour skipped by the change is
    simply not worked."""

    days: frozenset[int]  # 0 = Monday
    ranges: tuple[tuple[int, int], ...]

    def contains(self, local: datetime) -> bool:
        """Whether a wall-clock time in the rep's timezone is inside working hours."""
        minute = local.hour * 60 + local.minute
        today = local.weekday()
        yesterday = (today - 1) % 7
        for start, end in self.ranges:
            if start < end:
                if today in self.days and start <= minute < end:
                    return True
            elif (today in self.days and minute >= start) or \
                    (yesterday in self.days and minute < end):
                return True
        return False

    def next_start(self, local: datetime) -> datetime:
        """The first wall-clock start of a range after `local` (naive, the rep's timezone)."""
        naive = local.replace(tzinfo=None)
        for offset in range(8):
            day = naive.date() + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            for start in sorted(s for s, _ in self.ranges):
                candidate = datetime.combine(day, time(start // 60, start % 60))
                if candidate > naive:
                    return candidate
        raise AssertionError("a schedule has at least one day and one range")  # pragma: no cover


    def on_duty_from(self, instant: datetime, zone: ZoneInfo) -> datetime:
        """The first moment at or after `instant` (aware) inside working hours, as an aware
        instant: `instant` itself when it is in hours, else the next range's start. A start
        the clock skips (a daylight-saving gap) is read with the offset before the change,
        which lands just after the gap."""
        local = instant.astimezone(zone)
        if self.contains(local):
            return instant
        start = self.next_start(local).replace(tzinfo=zone)
        return start.astimezone(instant.tzinfo)


def parse_schedule(days: Any, hours: Any) -> Schedule:
    """`days` and `hours` as written under `working_hours`; HoursError names what is wrong."""
    return Schedule(_parse_days(days), _parse_hours(hours))


def _parse_days(value: Any) -> frozenset[int]:
    if isinstance(value, str):
        return frozenset(_day_item(value, "days"))
    if isinstance(value, list) and value:
        out: set[int] = set()
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise HoursError(f"days[{i}]", DAYS_EXPECTED, item)
            out.update(_day_item(item, f"days[{i}]"))
        return frozenset(out)
    raise HoursError("days", DAYS_EXPECTED, value)


def _day_item(text: str, where: str) -> list[int]:
    folded = text.strip().lower()
    first, dash, last = folded.partition("-")
    if not dash:
        if folded in _DAYS:
            return [_DAYS[folded]]
        raise HoursError(where, DAYS_EXPECTED, text)
    a, b = _DAYS.get(first.strip()), _DAYS.get(last.strip())
    if a is None or b is None:
        raise HoursError(where, DAYS_EXPECTED, text)
    # `fri-mon` wraps over the weekend: fri, sat, sun, mon.
    return [(a + k) % 7 for k in range((b - a) % 7 + 1)]


def _parse_hours(value: Any) -> tuple[tuple[int, int], ...]:
    if isinstance(value, str):
        return (_range(value, "hours"),)
    if isinstance(value, list) and value:
        if len(value) > MAX_RANGES:
            raise HoursError("hours", f"at most {MAX_RANGES} ranges", value)
        return tuple(_range(item, f"hours[{i}]") for i, item in enumerate(value))
    raise HoursError("hours", HOURS_EXPECTED, value)


def _range(item: Any, where: str) -> tuple[int, int]:
    if not isinstance(item, str):
        raise HoursError(where, HOURS_EXPECTED, item)
    first, dash, last = item.strip().partition("-")
    start, end = _minute(first.strip()), _minute(last.strip())
    if not dash or start is None or end is None or start == MINUTES_PER_DAY:
        raise HoursError(where, HOURS_EXPECTED, item)
    if start == end:
        raise HoursError(where, "a range with an end different from its start "
                                "(a whole day is 00:00-24:00)", item)
    return start, end


def _minute(text: str) -> int | None:
    match = _TIME.fullmatch(text)
    if match is None:
        return None
    hour, minute = int(match[1]), int(match[2])
    if minute > 59 or hour > 24 or (hour == 24 and minute):
        return None
    return hour * 60 + minute


def parse_moment(value: Any) -> date | datetime:
    """An `out_of_office` start or end: a date (a whole day) or a naive local date and time.
    ValueError says what is expected."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise ValueError(f"{MOMENT_EXPECTED}, found {value.isoformat()!r}")
        return value
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _MOMENT.fullmatch(value.strip()):
        text = value.strip()
        try:
            if len(text) == 10:
                return date.fromisoformat(text)
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    shown = repr(value) if isinstance(value, str) and len(value) <= 80 else type(value).__name__
    raise ValueError(f"{MOMENT_EXPECTED}, found {shown}")


def leave_bounds(start: date | datetime, end: date | datetime) -> tuple[datetime, datetime]:
    """An out-of-office entry as a wall-clock interval [from, until): a date start is that
    day's midnight; a date end takes the whole day (inclusive); a datetime end is the first
    moment back."""
    since = start if isinstance(start, datetime) else datetime.combine(start, time())
    until = end if isinstance(end, datetime) else \
        datetime.combine(end + timedelta(days=1), time())
    return since, until


def describe(local: datetime, zone: str) -> str:
    """`Mon 18:02 America/New_York`: a wall-clock moment as the trace shows it."""
    return f"{DAY_NAMES[local.weekday()]} {local:%H:%M} {zone}"
