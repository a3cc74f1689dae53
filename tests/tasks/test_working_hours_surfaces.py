"""Working hours where people see them: `explain` prints why a rep was passed over at the given
instant, `route-file` honours it, and the dashboard's reps page says "Outside hours"."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

from sync.compiler import compile_routing
from sync.state.sqlite import SqliteStateStore
from tasks.dashboard.data import reps
from tests.builders import routing, write_routing
from tests.tasks.test_cli import invoke

ROUTING = """\
version: 1
reps:
  - id: ava
    timezone: America/New_York
    working_hours: {days: mon-fri, hours: "09:00-17:30"}
  - id: ben
    timezone: Europe/London
    working_hours: {days: mon-fri, hours: ["08:00-12:00", "13:00-17:00"]}
    out_of_office: [{start: 2026-12-08T08:00, end: 2026-12-08T10:00}]
  - {id: zed}
pools:
  desk: {members: [ava, ben], outside_hours: queue}
rules:
  - {name: to-ava, when: {country: {eq: US}}, assign: {rep: ava}}
  - {name: desk, assign: {pool: desk}}
"""


def write(tmp_path: Path) -> Path:
    return write_routing(tmp_path, ROUTING)


def test_given_ava_off_hours_when_explaining_then_the_trace_says_where_and_when(
        tmp_path: Path) -> None:
    config = write(tmp_path)
    result = invoke("explain", "--config", config, "--state", f"sqlite:///{tmp_path / 's.db'}",
                    "--now", "2026-12-07T23:02:00Z", "--json",
                    "--record", '{"id": "1", "country": "US"}')

    assert result.exit_code == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["trace"][0]["rule"] == "to-ava"
    assert decision["trace"][0]["result"] == "no_assignee"
    assert "ava outside working hours (Mon 18:02 America/New_York)" in \
        decision["trace"][0]["detail"]
    # Nobody on the desk is in hours either (23:02 in London): queued for ava, in turn.
    assert decision["rule"] == "desk" and decision["owner"] == "ava"
    assert "queued for ava (hours start Tue 09:00 America/New_York)" in decision["reason"]


def test_given_partial_leave_when_routing_a_file_then_the_instant_decides_not_the_clock(
        tmp_path: Path) -> None:
    config = write(tmp_path)
    rows = tmp_path / "in.csv"
    rows.write_text("id,country\n1,DE\n2,DE\n")
    out = tmp_path / "out.csv"

    def route(now: str) -> list[str]:
        result = invoke("route-file", "--config", config, "--input", rows, "--output", out,
                        "--state", f"sqlite:///{tmp_path / now[:13]}.db", "--now", now)
        assert result.exit_code == 0, result.stderr
        with out.open() as f:
            return [row["owner"] for row in csv.DictReader(f)]

    # Tue 09:30 in London: ben is on leave until 10:00 and ava (04:30 in New York) is not in,
    # so both wait for ava: the queue is for members only outside their hours, not on leave.
    assert route("2026-12-08T09:30:00Z") == ["ava", "ava"]
    # Tue 10:00 in London: ben is back; ava still asleep.
    assert route("2026-12-08T10:00:00Z") == ["ben", "ben"]


def test_given_a_rep_outside_hours_when_listing_reps_then_status_outside_hours(
        tmp_path: Path) -> None:
    r = routing(ROUTING)
    with SqliteStateStore(tmp_path / "s.db") as store:
        rows = {row.id: row for row in reps(store, compile_routing(r.file),
                                            datetime(2026, 12, 7, 23, 2, tzinfo=UTC))}

    assert rows["ava"].status == "off_hours"
    assert rows["ava"].detail == "outside working hours (Mon 18:02 America/New_York)"
    assert rows["zed"].status == "available"


def test_given_a_broken_working_hours_range_when_validating_then_exit_2_naming_the_path(
        tmp_path: Path) -> None:
    config = tmp_path / "routing.yaml"
    config.write_text(ROUTING.replace('"13:00-17:00"', '"13:00-25:00"'))

    result = invoke("validate", config)

    assert result.exit_code == 2
    assert "reps[1].working_hours.hours[1]: expected hours as" in result.stderr
    assert "found '13:00-25:00'" in result.stderr
