"""The CLI on hostile input (issue 8, points 6 and 10): names carrying terminal escape sequences
print as inert text, and instants at datetime's range edges are exit 2, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tasks.test_cli import NOW, config, invoke, route, state, write

__all__ = ["config", "state"]  # fixtures, used by name
pytestmark = pytest.mark.usefixtures("isolated")  # tests/tasks/conftest.py

# ESC [2J clears the screen, ESC ]0;...BEL sets the window title, U+009B is CSI on its own.
ESCAPES = "\x1b[2J\x1b]0;pwned\x07\x9b31m"

ESCAPE_ROUTING = """\
version: 1
reps:
  - {id: "ava\\e[2J\\e]0;pwned\\a\\x9b31m"}
pools:
  "p\\e[2J": {members: ["ava\\e[2J\\e]0;pwned\\a\\x9b31m"]}
rules:
  - name: "rule\\e[2J\\e]0;pwned\\a"
    when: {country: {eq: US}}
    assign: {pool: "p\\e[2J"}
  - {name: other, assign: {rep: "ava\\e[2J\\e]0;pwned\\a\\x9b31m"}}
"""


def _no_control(text: str) -> None:
    assert not any(ch in text for ch in "\x1b\x07\x9b"), repr(text)


def test_given_names_with_escape_sequences_when_routing_then_no_control_character_is_printed(
    tmp_path: Path, state: str
) -> None:
    routing = write(tmp_path / "routing.yaml", ESCAPE_ROUTING)
    source = write(tmp_path / "in.csv", f"id,country,name\n1,US,x{ESCAPES}\n2,FR,y\n")

    routed = route(routing, state, source, tmp_path / "out.csv")
    stats = invoke("stats", "--state", state, "--until", NOW)
    audit = invoke("audit", "1", "--state", state)
    explained = invoke("explain", "--config", routing, "--now", NOW, "--record",
                       json.dumps({"id": f"9{ESCAPES}", "object": "account", "country": "US"}))

    for result in (routed, stats, audit, explained):
        assert result.exit_code == 0, result.stderr
        _no_control(result.stdout)
        _no_control(result.stderr)
    # Shown, not dropped: the reader still sees that the name holds something odd.
    assert "rule\ufffd[2J" in routed.stdout


@pytest.mark.parametrize("instant", [
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01", "9999-12-31T23:59:59",
    "0002-01-01T00:00:00+14:00",
])
def test_given_an_instant_at_the_datetime_range_edges_when_passed_then_exit_2_naming_the_option(
    config: Path, state: str, tmp_path: Path, instant: str
) -> None:
    source = write(tmp_path / "in.csv", "id,country\n1,US\n")
    record = json.dumps({"id": "1", "object": "account"})
    results = {
        "--now": [route(config, state, source, tmp_path / "out.csv", instant),
                  invoke("explain", "--config", config, "--now", instant, "--record", record)],
        "--until": [invoke("pause", "ava", "--config", config, "--state", state,
                           "--until", instant),
                    invoke("stats", "--state", state, "--until", instant)],
        "--since": [invoke("stats", "--state", state, "--since", instant)],
    }

    for option, answers in results.items():
        for result in answers:
            assert result.exit_code == 2, result.output
            assert f"{option}: expected an instant from 0002-01-01 to 9998-12-31" in result.stderr


def test_given_instants_just_inside_the_range_when_routing_then_they_are_used(
    config: Path, state: str, tmp_path: Path
) -> None:
    source = write(tmp_path / "in.csv", "id,country\n1,US\n")
    for instant in ("0002-01-01T00:00:00Z", "9998-12-31T23:59:59Z"):
        assert route(config, state, source, tmp_path / "out.csv", instant).exit_code == 0


@pytest.mark.parametrize(("record", "expected"), [
    ('{"id": "1", "employees": ' + "9" * 5000 + "}", "numbers or nesting too large to read"),
    ('{"id": "1", "x": ' + "[" * 100_000 + "}", "numbers or nesting too large to read"),
    ('{"id": "\\ud800"}', "lone surrogate"),
    ('{"\\udc00": "1", "id": "2"}', "lone surrogate"),
])
def test_given_an_unreadable_record_when_explaining_then_exit_2_not_a_traceback(
    config: Path, record: str, expected: str
) -> None:
    result = invoke("explain", "--config", config, "--now", NOW, "--record", record)

    assert result.exit_code == 2, result.output
    assert "--record: " in result.stderr and expected in result.stderr


def test_given_a_path_that_is_not_utf_8_when_validating_then_it_prints_replaced(
    config: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "\udcff"  # the name os.fsdecode gives the byte 0xff
    folder.mkdir()
    routing = write(folder / "r.yaml", config.read_text(encoding="utf-8"))

    result = invoke("validate", routing)

    assert result.exit_code == 0, result.output
    assert "\ufffd/r.yaml: OK" in result.stdout
