"""End-to-end tests of the `account-router` command line (docs/operations.md#command-line).

Every test passes `--state sqlite:///<tmp_path>/s.db` and `--now`, so runs are deterministic and
never touch the working directory or the wall clock.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from tasks.cli import app
from tests.builders import write_routing
from tests.loopback import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "config" / "examples"
CONSOLE_SCRIPT = Path(sys.executable).parent / "account-router"

HEADER = b"id,previous_owner,owner,outcome,rule,reason\n"
NOW = "2026-11-25T12:00:00Z"

ROUTING = """\
version: 1
timezone: UTC
ignore_owners: ["005INTEG000000"]
reps:
  - {id: ava, backup: maya, timezone: Asia/Tokyo, crm_ids: {salesforce: "005000000000101AAA"},
     out_of_office: [{start: 2026-12-01, end: 2026-12-05}]}
  - {id: ben, crm_ids: {salesforce: "005000000000102AAA"}}
  - {id: cara}
  - {id: dev}
  - {id: gus, active: false, crm_ids: {salesforce: "005000000000109AAA"}}
  - {id: maya}
pools:
  smb: {members: [ben, cara, dev], strategy: round_robin}
rules:
  - name: gold-tier
    when: {fields.tier: {eq: gold}}
    assign: {rep: ava}
  - name: leads
    when: {object: {eq: lead}}
    assign: {queue: 00GLEADQUEUE}
  - name: us-smb
    when: {country: {eq: US}}
    assign: {pool: smb}
fallback: {rep: maya}
"""

# One row per case of docs/operations.md#route-file-csv-in-and-out; the comment is what the row must
# come out as.
CONTRACT_INPUT = (
    "id,name,country,tier,object,owner\n"
    "1,Acme,US,,,\n"                          # pool turn 1 -> ben
    "2,Beta,DE,gold,,\n"                      # extra column `tier` reaches fields.tier -> ava
    "3,Gamma,FR,,lead,\n"                     # object column: a lead -> queue
    "4,Delta,US,,account,005000000000102\n"   # 15-char id of ben's 18-char crm id: kept, as ben
    "5,Eps,US,,,005000000000109AAA\n"         # gus is inactive: previous gus, routed -> cara
    "6,Zeta,DE,,,someone-else\n"              # unknown owner: presumed valid, kept raw
    "7,Eta,US,,,00G000000000XYZ\n"            # a queue owner is no owner -> dev
    "8,Theta,US,,,005INTEG000000\n"           # ignore_owners: no owner -> ben (wraps around)
    "9,Iota,JP,,,\n"                          # no rule: top-level fallback, rule empty
    "10,Kappa,US,,,cara\n"                    # a rep id as owner: kept
)
# id, previous_owner, owner, outcome, rule: exact per docs/operations.md#route-file-csv-in-and-out
CONTRACT_COLUMNS = [
    ["1", "", "ben", "assigned", "us-smb"],
    ["2", "", "ava", "assigned", "gold-tier"],
    ["3", "", "00GLEADQUEUE", "assigned", "leads"],
    ["4", "ben", "ben", "kept_existing", ""],
    ["5", "gus", "cara", "assigned", "us-smb"],
    ["6", "someone-else", "someone-else", "kept_existing", ""],
    ["7", "00G000000000XYZ", "dev", "assigned", "us-smb"],
    ["8", "005INTEG000000", "ben", "assigned", "us-smb"],
    ["9", "", "maya", "fallback", ""],
    ["10", "cara", "cara", "kept_existing", ""],
]

AUDIT_FIELDS = {
    "record_id", "crm", "object", "previous_owner", "owner", "owner_crm_id", "outcome", "rule",
    "reason", "trace", "trigger", "created_at", "decided_at", "written_at",
}


# --- helpers ------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("isolated")  # tests/tasks/conftest.py


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_routing(tmp_path, ROUTING)


@pytest.fixture
def state(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 's.db'}"  # tmp_path is absolute: sqlite:////...


def invoke(*args: object) -> Result:
    """Run the CLI in-process; stdout and stderr are captured separately."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), (
        f"uncaught {exc!r}; stderr: {result.stderr}"
    )
    assert "Traceback" not in result.output
    return result


def route(config: Path, state: str, input: Path, output: Path, now: str = NOW,
          *extra: object) -> Result:
    return invoke("route-file", "--config", config, "--input", input, "--output", output,
                  "--state", state, "--now", now, *extra)


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def rows(path: Path) -> list[list[str]]:
    """The output's data rows (header checked separately)."""
    text = path.read_bytes().decode("utf-8")
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed[0] == ["id", "previous_owner", "owner", "outcome", "rule", "reason"]
    return parsed[1:]


def owners(path: Path) -> list[str]:
    return [r[2] for r in rows(path)]


def state_file(state: str) -> Path:
    return Path(state[len("sqlite:///"):])


# --- route-file: the output contract ------------------------------------------------------


def test_given_every_owner_case_when_routing_a_file_then_each_row_follows_the_files_contract(
    config: Path, state: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.csv"

    result = route(config, state, write(tmp_path / "in.csv", CONTRACT_INPUT), out)

    assert result.exit_code == 0, result.stderr
    data = out.read_bytes()
    assert data.startswith(HEADER)
    lines = data.split(b"\n")
    assert lines[-1] == b""  # ends with a newline
    assert len(lines) == 1 + len(CONTRACT_COLUMNS) + 1
    for line, expected in zip(lines[1:], CONTRACT_COLUMNS, strict=False):
        assert line.startswith((",".join(expected) + ",").encode()), line
    assert [r[:5] for r in rows(out)] == CONTRACT_COLUMNS
    assert all(r[5] for r in rows(out)), "every row carries a reason"
    assert result.stderr == ""  # no warnings, and no progress bar when stderr is not a terminal


def test_given_no_fallback_when_no_rule_matches_then_the_row_is_unassigned_with_empty_owner(
    state: str, tmp_path: Path
) -> None:
    routing = write(tmp_path / "nofallback.yaml", """\
version: 1
reps: [{id: ben}]
rules: [{name: us, when: {country: {eq: US}}, assign: {rep: ben}}]
""")
    out = tmp_path / "out.csv"

    result = route(routing, state, write(tmp_path / "in.csv", "id,country\n1,FR\n2,US\n"), out)

    assert result.exit_code == 0, result.stderr
    assert [r[:5] for r in rows(out)] == [["1", "", "", "unassigned", ""],
                                          ["2", "", "ben", "assigned", "us"]]


def test_given_a_terminal_when_routing_then_a_progress_bar_counts_the_rows(
    config: Path, state: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.cli.routing

    screen = io.StringIO()
    monkeypatch.setattr(tasks.cli.routing, "err",
                        Console(file=screen, force_terminal=True, width=100))

    result = route(config, state, write(tmp_path / "in.csv", CONTRACT_INPUT),
                   tmp_path / "out.csv")

    assert result.exit_code == 0
    assert "routing" in screen.getvalue()
    assert f"{len(CONTRACT_COLUMNS)}/{len(CONTRACT_COLUMNS)}" in screen.getvalue()


def test_given_crlf_input_when_routing_then_output_is_utf8_without_bom_with_lf_endings(
    config: Path, state: str, tmp_path: Path
) -> None:
    source = "id,name,country\r\n1,Caf\u00e9 M\u00fcller,US\r\n2,\u6771\u4eac,US\r\n"
    out = tmp_path / "out.csv"

    result = route(config, state, write(tmp_path / "in.csv", source), out)

    assert result.exit_code == 0, result.stderr
    data = out.read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf")
    assert b"\r" not in data
    assert data == (
        HEADER
        + b"1,,ben,assigned,us-smb,rule us-smb: pool smb round_robin -> ben\n"
        + b"2,,cara,assigned,us-smb,rule us-smb: pool smb round_robin -> cara\n"
    )


def test_given_a_bom_before_the_header_when_routing_then_the_id_column_is_found(
    config: Path, state: str, tmp_path: Path
) -> None:
    source = b"\xef\xbb\xbfid,country\r\nB1,US\r\nB2,US\r\n"
    out = tmp_path / "out.csv"

    result = route(config, state, write(tmp_path / "in.csv", source), out)

    assert result.exit_code == 0, result.stderr
    assert [r[:4] for r in rows(out)] == [["B1", "", "ben", "assigned"],
                                          ["B2", "", "cara", "assigned"]]
    assert not out.read_bytes().startswith(b"\xef\xbb\xbf")


def test_given_an_object_column_when_routing_then_it_sets_the_object_case_insensitively(
    config: Path, state: str, tmp_path: Path
) -> None:
    source = "id,object,country\n1,LEAD,US\n2,,US\n3,account,US\n4,Contact,JP\n"
    out = tmp_path / "out.csv"

    result = route(config, state, write(tmp_path / "in.csv", source), out)

    assert result.exit_code == 0, result.stderr
    assert [r[:5] for r in rows(out)] == [
        ["1", "", "00GLEADQUEUE", "assigned", "leads"],
        ["2", "", "ben", "assigned", "us-smb"],  # blank object: account
        ["3", "", "cara", "assigned", "us-smb"],
        ["4", "", "maya", "fallback", ""],  # a contact is not a lead
    ]
    audit = json.loads(invoke("audit", "1", "--state", state, "--json").stdout)
    assert audit[0]["object"] == "lead"
    assert json.loads(invoke("audit", "4", "--state", state, "--json").stdout)[0][
        "object"] == "contact"


def test_given_an_extra_column_when_routing_then_rules_see_it_as_a_fields_value(
    config: Path, state: str, tmp_path: Path
) -> None:
    source = "id,tier,country\nG1,Gold,US\nG2,silver,US\n"
    out = tmp_path / "out.csv"

    result = route(config, state, write(tmp_path / "in.csv", source), out)

    assert result.exit_code == 0, result.stderr
    assert [r[:5] for r in rows(out)] == [["G1", "", "ava", "assigned", "gold-tier"],
                                          ["G2", "", "ben", "assigned", "us-smb"]]


def test_given_a_header_only_file_when_routing_then_the_output_is_just_the_header(
    config: Path, state: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.csv"

    result = route(config, state, write(tmp_path / "in.csv", "id,country\n"), out)

    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == HEADER


# --- route-file: malformed rows -----------------------------------------------------------


def test_given_malformed_rows_when_routing_then_each_is_skipped_once_with_its_line_number(
    config: Path, state: str, tmp_path: Path
) -> None:
    source = (
        "id,country,owner\n"                   # line 1
        "1,US,\n"                              # line 2: routes normally
        ",US,\n"                               # line 3: empty id
        "3,US,005000000000102AAA,extra\n"      # line 4: 4 columns, owner maps to ben
        "4\n"                                  # line 5: 1 column
        "\n"                                   # line 6: blank, not a row
        "   ,US,\n"                            # line 7: blank id
        "5,US,\n"                              # line 8: routes normally, rotation continues
    )
    out = tmp_path / "out.csv"

    result = route(config, state, write(tmp_path / "in.csv", source), out)

    assert result.exit_code == 1
    assert rows(out) == [
        ["1", "", "ben", "assigned", "us-smb", "rule us-smb: pool smb round_robin -> ben"],
        ["", "", "", "skipped", "", "line 3: empty id"],
        ["3", "ben", "", "skipped", "", "line 4: expected 3 columns, found 4"],
        ["4", "", "", "skipped", "", "line 5: expected 3 columns, found 1"],
        ["", "", "", "skipped", "", "line 7: empty id"],
        ["5", "", "cara", "assigned", "us-smb", "rule us-smb: pool smb round_robin -> cara"],
    ]
    warnings = result.stderr.splitlines()
    for line in (3, 4, 5, 7):
        assert any(f"line {line}:" in w and "skipped" in w for w in warnings), result.stderr
    assert "line 2" not in result.stderr and "line 8" not in result.stderr
    assert "skipped" in result.stdout  # the summary counts them


def test_given_an_invalid_object_value_when_routing_then_that_row_is_skipped_and_named(
    config: Path, state: str, tmp_path: Path
) -> None:
    source = "id,object,country\n1,account,US\n2,widget,US\n3,lead,US\n"
    out = tmp_path / "out.csv"

    result = route(config, state, write(tmp_path / "in.csv", source), out)

    assert result.exit_code == 1
    got = rows(out)
    assert [r[:5] for r in got] == [["1", "", "ben", "assigned", "us-smb"],
                                    ["2", "", "", "skipped", ""],
                                    ["3", "", "00GLEADQUEUE", "assigned", "leads"]]
    assert got[1][5].startswith("line 3: ") and "widget" in got[1][5]
    assert "line 3" in result.stderr and "widget" in result.stderr


def test_given_a_skipped_row_when_auditing_it_then_the_skip_is_recorded(
    config: Path, state: str, tmp_path: Path
) -> None:
    route(config, state, write(tmp_path / "in.csv", "id,country\n7,US,x\n"), tmp_path / "o.csv")

    result = invoke("audit", "7", "--state", state, "--json")

    assert result.exit_code == 0
    [decision] = json.loads(result.stdout)
    assert decision["outcome"] == "skipped"
    assert decision["reason"] == "line 2: expected 2 columns, found 3"


# --- route-file: usage errors (exit 2, nothing written) -----------------------------------


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("missing.csv", None, "missing.csv"),
        ("noid.csv", b"name,country\nAcme,US\n", "no `id` column"),
        ("empty.csv", b"", "empty"),
        ("latin1.csv", b"id,n\xe4me\n1,ok\n", "line 1: not UTF-8"),  # a data line: skipped
        ("dupid.csv", b"id,name,id\n1,a,2\n", "duplicate column 'id'"),
    ],
)
def test_given_an_unusable_input_when_routing_then_exit_2_and_nothing_is_written(
    config: Path, state: str, tmp_path: Path, name: str, data: bytes | None, message: str
) -> None:
    source = tmp_path / name
    if data is not None:
        source.write_bytes(data)
    out = tmp_path / "out.csv"

    result = route(config, state, source, out)

    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""
    assert not out.exists()
    assert not (tmp_path / "out.csv.partial").exists()
    assert not state_file(state).exists(), "nothing routed: the state was not even opened"


def test_given_a_broken_routing_file_when_routing_then_exit_2_and_nothing_is_written(
    state: str, tmp_path: Path
) -> None:
    broken = write(tmp_path / "bad.yaml", ROUTING.replace("members: [ben, cara, dev]",
                                                          "members: [ben, cara, zed]"))
    out = tmp_path / "out.csv"

    result = route(broken, state, write(tmp_path / "in.csv", CONTRACT_INPUT), out)

    assert result.exit_code == 2
    assert "bad.yaml" in result.stderr and "zed" in result.stderr
    assert not out.exists()
    assert not state_file(state).exists()


@pytest.mark.parametrize("target", ["no-such-dir/out.csv", "."])
def test_given_an_unwritable_output_path_when_routing_then_exit_2_and_nothing_is_routed(
    config: Path, state: str, tmp_path: Path, target: str
) -> None:
    result = route(config, state, write(tmp_path / "in.csv", CONTRACT_INPUT), tmp_path / target)

    assert result.exit_code == 2
    assert "cannot write output" in result.stderr
    assert not state_file(state).exists()


@pytest.mark.parametrize(
    ("now", "state_url", "message"),
    [
        ("yesterday", None, "--now: expected an ISO 8601 instant"),
        (NOW, "postgres://db/x", "unsupported state URL"),
        (NOW, "sqlite://relative.db", "bad SQLite state URL"),
        (NOW, "redis://127.0.0.1:1/0", "cannot open state"),  # nothing listens on port 1
    ],
)
def test_given_a_bad_now_or_state_when_routing_then_exit_2_with_a_message(
    config: Path, state: str, tmp_path: Path, now: str, state_url: str | None, message: str
) -> None:
    out = tmp_path / "out.csv"

    result = route(config, state_url or state, write(tmp_path / "in.csv", CONTRACT_INPUT), out,
                   now)

    assert result.exit_code == 2
    assert message in result.stderr
    assert not out.exists()


def test_given_no_config_anywhere_when_routing_then_exit_2_names_the_setting(
    state: str, tmp_path: Path
) -> None:
    result = invoke("route-file", "--input", write(tmp_path / "in.csv", CONTRACT_INPUT),
                    "--output", tmp_path / "out.csv", "--state", state, "--now", NOW)

    assert result.exit_code == 2
    assert "ACCOUNT_ROUTER_CONFIG" in result.stderr


# --- route-file: time and state -----------------------------------------------------------


@pytest.fixture
def tokyo_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local zone is Tokyo: a naive --now read as local time would show."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("tokyo_local_time")
@pytest.mark.parametrize(
    ("now", "owner", "outcome"),
    [
        # ava's leave starts 2026-12-01 in Tokyo (UTC+9), i.e. at 2026-11-30T15:00Z.
        ("2026-11-30T14:59:00", "ava", "assigned"),  # naive = UTC: still Nov 30 in Tokyo
        ("2026-11-30T15:00:00", "maya", "fallback"),  # naive = UTC: Dec 1 in Tokyo -> backup
        ("2026-11-30T15:00:00+09:00", "ava", "assigned"),  # an explicit offset is honoured
        ("2026-11-30T15:00:00Z", "maya", "fallback"),
    ],
)
def test_given_now_without_offset_when_routing_on_a_date_boundary_then_it_means_utc(
    config: Path, state: str, tmp_path: Path, now: str, owner: str, outcome: str
) -> None:
    out = tmp_path / "out.csv"

    result = route(config, state, write(tmp_path / "in.csv", "id,tier\n1,gold\n"), out, now)

    assert result.exit_code == 0, result.stderr
    assert [r[:5] for r in rows(out)] == [["1", "", owner, outcome, "gold-tier"]]


def test_given_a_state_when_routing_twice_then_the_second_run_continues_the_rotation(
    config: Path, state: str, tmp_path: Path
) -> None:
    source = write(tmp_path / "in.csv", "id,country\n1,US\n2,US\n")

    first = route(config, state, source, tmp_path / "a.csv", "2026-11-25T10:00:00Z")
    second = route(config, state, source, tmp_path / "b.csv", "2026-11-25T11:00:00Z")
    fresh = route(config, f"sqlite:///{tmp_path / 'fresh.db'}", source, tmp_path / "c.csv",
                  "2026-11-25T11:00:00Z")

    assert (first.exit_code, second.exit_code, fresh.exit_code) == (0, 0, 0)
    assert owners(tmp_path / "a.csv") == ["ben", "cara"]
    assert owners(tmp_path / "b.csv") == ["dev", "ben"]
    assert owners(tmp_path / "c.csv") == ["ben", "cara"]  # another state starts afresh


def test_given_a_paused_rep_when_routing_then_it_is_passed_over_until_resumed(
    config: Path, state: str, tmp_path: Path
) -> None:
    source = write(tmp_path / "in.csv", "id,country\n1,US\n2,US\n3,US\n")

    paused = invoke("pause", "ben", "--config", config, "--state", state)
    during = route(config, state, source, tmp_path / "a.csv", "2026-11-25T10:00:00Z")
    resumed = invoke("resume", "ben", "--config", config, "--state", state)
    after = route(config, state, source, tmp_path / "b.csv", "2026-11-25T11:00:00Z")

    assert paused.exit_code == 0 and "paused ben" in paused.stdout
    assert during.exit_code == 0, during.stderr
    assert owners(tmp_path / "a.csv") == ["cara", "dev", "cara"]
    assert all("ben paused" in r[5] for r in rows(tmp_path / "a.csv"))
    assert resumed.exit_code == 0 and "resumed ben" in resumed.stdout
    assert after.exit_code == 0, after.stderr
    assert owners(tmp_path / "b.csv") == ["dev", "ben", "cara"]


def test_given_a_pause_until_a_time_when_routing_before_and_after_then_only_before_holds(
    config: Path, state: str, tmp_path: Path
) -> None:
    invoke("pause", "ben", "--until", "2030-01-01T00:00:00Z", "--config", config,
           "--state", state)

    before = route(config, state, write(tmp_path / "a.in", "id,country\n1,US\n"),
                   tmp_path / "a.csv", "2029-12-31T23:59:00Z")
    after = route(config, state, write(tmp_path / "b.in", "id,country\n2,US\n3,US\n"),
                  tmp_path / "b.csv", "2030-01-01T00:00:00Z")  # `until` is exclusive

    assert before.exit_code == after.exit_code == 0
    assert owners(tmp_path / "a.csv") == ["cara"]
    assert owners(tmp_path / "b.csv") == ["dev", "ben"]


def test_given_a_pause_until_a_past_time_when_routing_then_it_has_no_effect(
    config: Path, state: str, tmp_path: Path
) -> None:
    paused = invoke("pause", "ben", "--until", "2020-01-01T00:00:00", "--config", config,
                    "--state", state)
    result = route(config, state, write(tmp_path / "in.csv", "id,country\n1,US\n"),
                   tmp_path / "out.csv")

    assert paused.exit_code == 0
    assert "past" in paused.stderr
    assert result.exit_code == 0
    assert owners(tmp_path / "out.csv") == ["ben"]
    again = invoke("resume", "ben", "--config", config, "--state", state)
    assert again.exit_code == 0 and "not paused" in again.stdout


@pytest.mark.parametrize("command", ["pause", "resume"])
def test_given_a_config_when_pausing_an_unknown_rep_then_exit_2_and_nothing_stored(
    config: Path, state: str, command: str
) -> None:
    result = invoke(command, "zed", "--config", config, "--state", state)

    assert result.exit_code == 2
    assert "unknown rep 'zed'" in result.stderr
    assert not state_file(state).exists()


@pytest.mark.parametrize("command", ["pause", "resume"])
def test_given_no_routing_file_when_pausing_then_exit_2_and_nothing_stored(
    state: str, command: str
) -> None:
    result = invoke(command, "nobody", "--state", state)

    assert result.exit_code == 2
    assert "no routing file" in result.stderr and "ACCOUNT_ROUTER_CONFIG" in result.stderr
    assert "nobody" not in result.stdout
    assert not state_file(state).exists()


@pytest.mark.parametrize("command", ["pause", "resume"])
def test_given_the_routing_file_from_the_environment_when_pausing_an_unknown_rep_then_exit_2(
    config: Path, state: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACCOUNT_ROUTER_CONFIG", str(config))

    unknown = invoke(command, "nobody", "--state", state)
    known = invoke(command, "ben", "--state", state)

    assert unknown.exit_code == 2
    assert "unknown rep 'nobody'" in unknown.stderr
    assert known.exit_code == 0, known.stderr


def test_given_a_bad_until_when_pausing_then_exit_2(config: Path, state: str) -> None:
    result = invoke("pause", "ben", "--until", "soon", "--config", config, "--state", state)

    assert result.exit_code == 2
    assert "--until" in result.stderr


# --- the example from the docs ------------------------------------------------------------


def test_given_the_example_files_when_routing_them_then_all_300_rows_route_with_a_summary(
    tmp_path: Path, state: str
) -> None:
    source = EXAMPLES / "accounts.csv"
    out = tmp_path / "out.csv"

    # The real console script, as a user runs it.
    proc = subprocess.run(
        [str(CONSOLE_SCRIPT), "route-file", "--config", str(EXAMPLES / "routing.yaml"),
         "--input", str(source), "--output", str(out), "--state", state, "--now", NOW],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("ACCOUNT_ROUTER_")},
    )

    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    with source.open(encoding="utf-8-sig", newline="") as fh:
        input_ids = [r["id"] for r in csv.DictReader(fh)]
    got = rows(out)
    assert len(input_ids) == 300
    assert [r[0] for r in got] == input_ids
    assert {r[3] for r in got} <= {"assigned", "fallback", "kept_existing", "unassigned"}
    summary = proc.stdout
    assert "300 records routed" in summary
    for outcome in ("assigned", "fallback", "kept_existing", "unassigned", "skipped"):
        assert outcome in summary
    for rule in ("named-accounts", "healthcare", "enterprise-size", "everyone-else"):
        assert rule in summary
    assert "by rule" in summary and "by rep" in summary
    assert "pool enterprise (least_loaded):" in summary and "pool smb (round_robin):" in summary
    assert summary.count("spread") == 2


def test_given_a_failing_run_via_the_console_script_then_exit_2_without_a_traceback(
    tmp_path: Path, state: str
) -> None:
    proc = subprocess.run(
        [str(CONSOLE_SCRIPT), "route-file", "--config", str(EXAMPLES / "routing.yaml"),
         "--input", str(tmp_path / "missing.csv"), "--output", str(tmp_path / "out.csv"),
         "--state", state, "--now", NOW],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )

    assert proc.returncode == 2
    assert "missing.csv" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out.csv").exists()


# --- explain ------------------------------------------------------------------------------


def test_given_a_named_account_when_explaining_then_the_winning_rule_and_trace_are_shown(
    state: str,
) -> None:
    result = invoke("explain", "--config", EXAMPLES / "routing.yaml", "--state", state,
                    "--now", NOW, "--record", '{"id":"1","domain":"acme.com"}')

    assert result.exit_code == 0, result.stderr
    assert "outcome: assigned" in result.stdout
    assert "rule: named-accounts" in result.stdout
    assert "owner: ava" in result.stdout
    assert "named-accounts: won" in result.stdout


def test_given_a_record_no_early_rule_fits_when_explaining_then_the_trace_says_why(
    state: str,
) -> None:
    result = invoke("explain", "--config", EXAMPLES / "routing.yaml", "--state", state,
                    "--now", NOW, "--record",
                    '{"id":"2","domain":"small.example","employees":"12","industry":"Retail"}')

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    trace = [line.strip() for line in lines if line.startswith("  ")]
    assert [t.split(":")[0] for t in trace] == [
        "lead-to-account", "named-accounts", "healthcare", "enterprise-size", "everyone-else"]
    assert trace[3].startswith("enterprise-size: no_match") and "employees" in trace[3]
    assert trace[4].startswith("everyone-else: won")


def test_given_json_when_explaining_then_the_decision_has_the_section_5_fields(
    state: str,
) -> None:
    result = invoke("explain", "--config", EXAMPLES / "routing.yaml", "--state", state,
                    "--now", NOW, "--json", "--record", '{"id":"1","domain":"acme.com"}')

    assert result.exit_code == 0, result.stderr
    decision = json.loads(result.stdout)
    assert set(decision) >= AUDIT_FIELDS
    assert decision["record_id"] == "1"
    assert decision["object"] == "account"
    assert decision["owner"] == "ava"
    assert decision["outcome"] == "assigned"
    assert decision["rule"] == "named-accounts"
    assert decision["decided_at"] == "2026-11-25T12:00:00+00:00"
    assert decision["trace"][-1]["rule"] == "named-accounts"
    assert decision["trace"][-1]["result"] == "won"


def test_given_explain_when_run_then_nothing_is_written_to_the_state(
    config: Path, state: str, tmp_path: Path
) -> None:
    explained = [
        invoke("explain", "--config", config, "--state", state, "--now", NOW, "--json",
               "--record", '{"id":"E1","country":"US"}')
        for _ in range(2)
    ]
    audit = invoke("audit", "E1", "--state", state)
    routed = route(config, state, write(tmp_path / "in.csv", "id,country\nR1,US\n"),
                   tmp_path / "out.csv")

    # Explaining twice took no pool turn: both show the same member, the first route gets it.
    assert [json.loads(r.stdout)["owner"] for r in explained] == ["ben", "ben"]
    assert audit.exit_code == 2 and "no state" in audit.stderr  # not even the file was made
    assert routed.exit_code == 0
    assert owners(tmp_path / "out.csv") == ["ben"]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ('{"id":', "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"name":"no id"}', "no id"),
        ('{"id":"1","object":"widget"}', "widget"),
        ('{"id":{"nested":1}}', "'id'"),
    ],
)
def test_given_a_bad_record_when_explaining_then_exit_2_with_a_clear_message(
    config: Path, state: str, record: str, message: str
) -> None:
    result = invoke("explain", "--config", config, "--state", state, "--now", NOW,
                    "--record", record)

    assert result.exit_code == 2
    assert "--record" in result.stderr and message in result.stderr
    assert result.stdout == ""


# --- audit --------------------------------------------------------------------------------


def test_given_two_runs_when_auditing_a_record_then_its_decisions_come_newest_first(
    config: Path, state: str, tmp_path: Path
) -> None:
    source = write(tmp_path / "in.csv", CONTRACT_INPUT)
    route(config, state, source, tmp_path / "a.csv", "2026-11-25T10:00:00Z")
    route(config, state, source, tmp_path / "b.csv", "2026-11-25T11:00:00Z")

    text = invoke("audit", "1", "--state", state)
    as_json = invoke("audit", "1", "--state", state, "--json")

    assert text.exit_code == 0 and as_json.exit_code == 0
    decisions = json.loads(as_json.stdout)
    assert [d["decided_at"] for d in decisions] == ["2026-11-25T11:00:00+00:00",
                                                   "2026-11-25T10:00:00+00:00"]
    # The second run continued the rotation: record 1 went to the member after ben (run 1's
    # last turn was ben, record 8).
    assert [d["owner"] for d in decisions] == ["cara", "ben"]
    for d in decisions:
        assert set(d) >= AUDIT_FIELDS
        assert (d["record_id"], d["crm"], d["object"], d["trigger"]) == (
            "1", "file", "account", "file")
        assert d["outcome"] == "assigned" and d["rule"] == "us-smb"
        assert d["trace"][-1]["rule"] == "us-smb" and d["trace"][-1]["result"] == "won"
    first, second = (i for i, line in enumerate(text.stdout.splitlines())
                     if line.startswith("2026-"))
    assert "2026-11-25T11:00:00" in text.stdout.splitlines()[first]
    assert "2026-11-25T10:00:00" in text.stdout.splitlines()[second]


def test_given_a_kept_record_when_auditing_then_previous_and_owner_are_the_rep(
    config: Path, state: str, tmp_path: Path
) -> None:
    route(config, state, write(tmp_path / "in.csv", CONTRACT_INPUT), tmp_path / "out.csv")

    [d] = json.loads(invoke("audit", "4", "--state", state, "--json").stdout)

    assert (d["previous_owner"], d["owner"], d["outcome"], d["rule"]) == (
        "ben", "ben", "kept_existing", None)


@pytest.mark.parametrize("as_json", [False, True])
def test_given_an_unknown_id_when_auditing_then_exit_1_with_a_message(
    config: Path, state: str, tmp_path: Path, as_json: bool
) -> None:
    route(config, state, write(tmp_path / "in.csv", CONTRACT_INPUT), tmp_path / "out.csv")

    result = invoke("audit", "nope", "--state", state, *(["--json"] if as_json else []))

    assert result.exit_code == 1
    assert "no decisions recorded for 'nope'" in result.stderr
    if as_json:
        assert json.loads(result.stdout) == []


@pytest.mark.parametrize("command", [["audit", "1"], ["stats"], ["stats", "--json"]])
def test_given_a_state_file_that_does_not_exist_when_reading_then_exit_2_naming_it(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "typo.db"

    result = invoke(*command, "--state", f"sqlite:///{missing}")

    assert result.exit_code == 2
    assert str(missing) in result.stderr and "no state" in result.stderr
    assert result.stdout == ""
    assert not missing.exists()  # not created as an empty database


def test_given_a_state_file_that_does_not_exist_when_explaining_then_fresh_state_and_no_file(
    config: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "fresh.db"

    result = invoke("explain", "--config", config, "--record", '{"id": "1", "country": "US"}',
                    "--state", f"sqlite:///{missing}", "--now", NOW)

    assert result.exit_code == 0, result.stderr
    assert "owner: ben" in result.stdout  # a fresh pool cursor: the first member
    assert not missing.exists()  # asking "what if" creates nothing


def test_given_no_state_setting_and_no_default_file_when_asking_for_stats_then_exit_2(
    tmp_path: Path,
) -> None:
    result = invoke("stats")  # cwd is tmp_path (the `isolated` fixture)

    assert result.exit_code == 2
    assert "account-router-state.db" in result.stderr
    assert not (tmp_path / "account-router-state.db").exists()


@pytest.mark.parametrize("command", [["stats"], ["audit", "1"], ["pause", "ben"]])
def test_given_an_unreachable_redis_url_with_a_password_when_opening_state_then_it_is_masked(
    config: Path, command: list[str]
) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"

    result = invoke(*command, "--config", config, "--state", url) if command[0] == "pause" \
        else invoke(*command, "--state", url)

    assert result.exit_code == 2
    assert "cannot open state 'redis://:***@127.0.0.1:" in result.stderr
    assert "s3cret" not in result.output


# --- stats --------------------------------------------------------------------------------


def test_given_a_run_when_asking_for_stats_then_counts_per_rep_and_pool_spread_are_exact(
    config: Path, state: str, tmp_path: Path
) -> None:
    route(config, state, write(tmp_path / "in.csv", CONTRACT_INPUT), tmp_path / "out.csv")

    result = invoke("stats", "--config", config, "--state", state, "--json",
                    "--since", "2026-11-25T00:00:00Z", "--until", "2026-11-26T00:00:00Z")

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    reps = report["reps"]
    assert {k: reps.get(k) for k in ("ava", "ben", "cara", "dev", "maya")} == {
        "ava": 1, "ben": 2, "cara": 1, "dev": 1, "maya": 1}
    assert "someone-else" not in reps  # kept records are not assignments
    assert report["pools"] == {"smb": {"members": {"ben": 2, "cara": 1, "dev": 1},
                                       "spread": 1}}


def test_given_a_window_that_misses_the_run_when_asking_for_stats_then_nothing_is_counted(
    config: Path, state: str, tmp_path: Path
) -> None:
    route(config, state, write(tmp_path / "in.csv", CONTRACT_INPUT), tmp_path / "out.csv")

    before = invoke("stats", "--config", config, "--state", state, "--json",
                    "--since", "2026-11-24T00:00:00Z", "--until", NOW)  # half-open: excludes NOW
    after = invoke("stats", "--config", config, "--state", state, "--json",
                   "--since", "2026-11-25T12:00:01Z", "--until", "2026-11-26T00:00:00Z")

    for result in (before, after):
        report = json.loads(result.stdout)
        assert report["reps"] == {}
        assert report["pools"]["smb"] == {"members": {"ben": 0, "cara": 0, "dev": 0},
                                          "spread": 0}


def test_given_overflow_assignments_when_asking_for_stats_then_the_spread_counts_members_only(
    state: str, tmp_path: Path
) -> None:
    routing = write(tmp_path / "capped.yaml", """\
version: 1
reps: [{id: ben}, {id: cara}, {id: maya}]
pools:
  smb: {members: [ben, cara], strategy: round_robin, cap: {max: 1, per: day},
        overflow: {rep: maya}}
rules: [{name: all, assign: {pool: smb}}]
""")
    route(routing, state, write(tmp_path / "in.csv", "id\n1\n2\n3\n4\n"), tmp_path / "out.csv")

    with_config = json.loads(invoke("stats", "--config", routing, "--state", state, "--json",
                                    "--since", "2026-11-25T00:00:00Z",
                                    "--until", "2026-11-26T00:00:00Z").stdout)
    without = json.loads(invoke("stats", "--state", state, "--json",
                                "--since", "2026-11-25T00:00:00Z",
                                "--until", "2026-11-26T00:00:00Z").stdout)

    assert owners(tmp_path / "out.csv") == ["ben", "cara", "maya", "maya"]
    assert with_config["reps"] == {"ben": 1, "cara": 1, "maya": 2}
    for report in (with_config, without):
        assert report["pools"] == {"smb": {"members": {"ben": 1, "cara": 1}, "spread": 0}}


def test_given_a_run_when_asking_for_stats_as_text_then_reps_and_pools_are_listed(
    config: Path, state: str, tmp_path: Path
) -> None:
    route(config, state, write(tmp_path / "in.csv", CONTRACT_INPUT), tmp_path / "out.csv")

    result = invoke("stats", "--config", config, "--state", state,
                    "--since", "2026-11-25T00:00:00Z", "--until", "2026-11-26T00:00:00Z")

    assert result.exit_code == 0, result.stderr
    assert "pool smb: ben 2, cara 1, dev 1; spread 1" in result.stdout
    for rep in ("ava", "ben", "cara", "dev", "maya"):
        assert rep in result.stdout


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [("garbage", NOW, "--since"), (NOW, "later", "--until"), (NOW, "2026-11-24T00:00:00Z",
                                                              "before")],
)
def test_given_a_bad_window_when_asking_for_stats_then_exit_2(
    state: str, since: str, until: str, message: str
) -> None:
    result = invoke("stats", "--state", state, "--since", since, "--until", until)

    assert result.exit_code == 2
    assert message in result.stderr


# --- names that look like rich markup or emoji codes ---------------------------------------

MARKUP_ROUTING = """\
version: 1
reps:
  - {id: "[/x]"}
  - {id: "[bold]x"}
  - {id: ":x:"}
pools:
  "[red]p": {members: ["[/x]", "[bold]x"], strategy: round_robin}
rules:
  - name: "[/x]"
    when: {country: {eq: US}}
    assign: {pool: "[red]p"}
  - name: ":x:"
    assign: {rep: ":x:"}
"""


@pytest.fixture
def markup_config(tmp_path: Path) -> Path:
    return write(tmp_path / "[bold]routing:x:.yaml", MARKUP_ROUTING)


def test_given_markup_like_names_when_validating_then_the_path_prints_literally(
    markup_config: Path,
) -> None:
    result = invoke("validate", markup_config)

    assert result.exit_code == 0, result.stderr
    assert f"{markup_config}: OK" in result.stdout


def test_given_markup_like_names_when_routing_a_file_then_the_summary_prints_them_literally(
    markup_config: Path, state: str, tmp_path: Path
) -> None:
    source = write(tmp_path / "in.csv", "id,country\n1,US\n2,US\n3,FR\n")

    result = route(markup_config, state, source, tmp_path / "out.csv")

    assert result.exit_code == 0, result.stderr
    assert "pool [red]p (round_robin): [/x] 1, [bold]x 1; spread 0" in result.stdout
    table_cells = {line.split("\u2502")[1].strip() for line in result.stdout.splitlines()
                   if line.count("\u2502") == 3}  # rows of the two-column tables
    assert {"[/x]", ":x:", "[bold]x"} <= table_cells
    assert "\u274c" not in result.stdout  # `:x:` is not an emoji


def test_given_markup_like_names_when_explaining_then_owner_rule_and_trace_print_literally(
    markup_config: Path, state: str
) -> None:
    record = json.dumps({"id": "[i]9", "country": "US"})

    result = invoke("explain", "--config", markup_config, "--record", record, "--state", state,
                    "--now", NOW)

    assert result.exit_code == 0, result.stderr
    assert "record [i]9 (account)" in result.stdout
    assert "outcome: assigned  owner: [/x]  rule: [/x]" in result.stdout
    assert "  [/x]: won (pool [red]p round_robin -> [/x])" in result.stdout


def test_given_markup_like_names_when_asking_for_stats_and_audit_then_they_print_literally(
    markup_config: Path, state: str, tmp_path: Path
) -> None:
    route(markup_config, state, write(tmp_path / "in.csv", "id,country\n1,US\n2,FR\n"),
          tmp_path / "out.csv")

    stats = invoke("stats", "--config", markup_config, "--state", state, "--since",
                   "2026-11-01T00:00:00Z", "--until", "2026-12-01T00:00:00Z")
    audit = invoke("audit", "2", "--state", state)

    assert stats.exit_code == 0, stats.stderr
    assert "pool [red]p: [/x] 1, [bold]x 0; spread 1" in stats.stdout
    assert ":x:" in stats.stdout and "\u274c" not in stats.stdout
    assert audit.exit_code == 0, audit.stderr
    assert "assigned - -> :x: (rule :x:, trigger file)" in audit.stdout


def test_given_markup_like_names_when_an_error_names_them_then_it_prints_literally(
    markup_config: Path, state: str
) -> None:
    result = invoke("pause", "[/y]", "--config", markup_config, "--state", state)

    assert result.exit_code == 2
    assert "unknown rep '[/y]' (reps: [/x], [bold]x, :x:)" in result.stderr


# --- validate -----------------------------------------------------------------------------


def test_given_the_example_file_when_validating_then_exit_0_with_one_line(state: str) -> None:
    result = invoke("validate", EXAMPLES / "routing.yaml")

    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1
    assert "OK" in result.stdout


def test_given_a_missing_file_when_validating_then_exit_2(tmp_path: Path) -> None:
    result = invoke("validate", tmp_path / "nope.yaml")

    assert result.exit_code == 2
    assert "nope.yaml" in result.stderr


def test_given_a_free_mail_list_entry_when_validating_then_the_warning_goes_to_stderr(
    tmp_path: Path,
) -> None:
    routing = write(tmp_path / "lists.yaml", """\
version: 1
reps: [{id: ben}]
lists:
  named: {domains: [acme.com, gmail.com]}
rules: [{name: named, when: {domain: {in_list: named}}, assign: {rep: ben}}]
""")

    result = invoke("validate", routing)

    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1 and "OK" in result.stdout
    [warning] = result.stderr.splitlines()  # one line, however long
    assert warning.startswith("warning: ") and "gmail.com" in warning


@pytest.mark.parametrize(("variable", "value"), [
    ("ACCOUNT_ROUTER_BATCH_WINDOW_MS", "999"),
    ("ACCOUNT_ROUTER_VISIBILITY_TIMEOUT", "soon"),
    ("ACCOUNT_ROUTER_HUBSPOT_CALLS_PER_10S", "-1"),
])
def test_given_a_bad_setting_when_running_a_command_then_exit_2_names_it_without_traceback(
        tmp_path, variable, value):
    env = {**os.environ, variable: value, "SALESFORCE_PASSWORD": "hunter2-secret"}
    proc = subprocess.run([str(CONSOLE_SCRIPT), "stats", "--state", str(tmp_path / "s.db")],
                          env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"invalid settings: {variable}" in proc.stderr
    assert "Traceback" not in proc.stderr and "hunter2-secret" not in proc.stderr


def test_given_a_rep_removed_from_the_routing_file_while_paused_when_resuming_then_it_resumes(
        tmp_path: Path, config: Path, state: str) -> None:
    invoke("pause", "ben", "--config", config, "--state", state)
    without_ben = tmp_path / "without-ben.yaml"
    text = config.read_text(encoding="utf-8")
    # Ben leaves the routing file: the pause must not outlive him, as over HTTP.
    without_ben.write_text(text.replace("ben", "bea"), encoding="utf-8")

    result = invoke("resume", "ben", "--config", without_ben, "--state", state)
    again = invoke("resume", "ben", "--config", without_ben, "--state", state)

    assert result.exit_code == 0 and "resumed ben" in result.stdout
    assert again.exit_code == 2 and "unknown rep 'ben'" in again.stderr


# --- help ---------------------------------------------------------------------------------


def test_given_the_commands_routing_a_crm_when_help_is_shown_then_crm_names_the_registry():
    # Given: the commands that take a required --crm (explain's is optional and reads a record).
    import typer.main

    from tasks.cli.common import CrmOpt

    group = typer.main.get_command(app)
    helps = {name: param.help for name, command in group.commands.items()
             for param in command.params if param.name == "crm" and param.required}

    # Then: every one says the same thing, naming the registry (a new connector included).
    assert set(helps) == {"sweep", "reprocess", "simulate", "suggest"}
    assert set(helps.values()) == {CrmOpt.__metadata__[0].help}


def test_given_every_command_when_listed_then_its_summary_is_one_line():
    import typer.main

    group = typer.main.get_command(app)
    summaries = {name: (command.help or "").strip().split("\n\n")[0]
                 for name, command in group.commands.items()}

    assert {name: s for name, s in summaries.items() if "\n" in s or not s} == {}


# --- serve ----------------------------------------------------------------------------------


def test_given_the_salesforce_endpoint_off_when_serve_starts_then_its_warning_is_a_json_log_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, logs: io.StringIO,
) -> None:
    # `logs` undoes the logging setup afterwards: serve points it at the runner's stderr,
    # closed once the command returns.
    # Given: an org id but no webhook secret (the endpoint is off), and uvicorn stubbed out.
    import types

    import uvicorn

    queue = types.ModuleType("tasks.queue")
    queue.enqueue_route = lambda *args: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tasks.queue", queue)
    monkeypatch.setenv("SALESFORCE_ORG_ID", "00D000000000001")
    monkeypatch.delenv("ACCOUNT_ROUTER_SALESFORCE_WEBHOOK_SECRET", raising=False)

    def run(server: uvicorn.Server) -> None:
        server.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run)

    # When: serve starts.
    result = CliRunner().invoke(app, ["serve", "--state", f"sqlite:///{tmp_path / 's.db'}"])

    # Then: the warning is logged like every other event: one JSON object, with its level
    # (it used to be logged before logging was set up: a raw line past the redaction).
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "Salesforce webhook off" in line]
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["level"] == "warning" and event["logger"] == "tasks.http"


# --- sweep / reprocess report ---------------------------------------------------------------


def test_given_records_gone_when_reprocessed_then_each_skipped_one_is_named_with_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given: the CSV connector over the bundled export, and 22 ids it does not hold.
    examples = Path(__file__).resolve().parents[2] / "config" / "examples"
    source = tmp_path / "accounts.csv"
    source.write_bytes((examples / "accounts.csv").read_bytes())
    monkeypatch.setenv("ACCOUNT_ROUTER_CSV_INPUT", str(source))
    monkeypatch.setenv("ACCOUNT_ROUTER_CSV_OUTPUT", str(tmp_path / "routed.csv"))
    gone = [f"gone-{n}" for n in range(1, 23)]

    # When: they are reprocessed.
    result = CliRunner().invoke(app, [
        "reprocess", "--crm", "csv", "--object", "account", *gone, "--config",
        str(examples / "routing.yaml"), "--state", f"sqlite:///{tmp_path / 's.db'}"])

    # Then: exit 1, and stderr says which records and why: the first 20, then how many more.
    assert result.exit_code == 1, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings[:2] == ["warning: csv account gone-1: skipped: record gone from the CRM",
                            "warning: csv account gone-2: skipped: record gone from the CRM"]
    assert len(warnings) == 21
    assert warnings[-1].startswith("warning: and 2 more; `account-router audit ID`")
