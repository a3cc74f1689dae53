"""`account-router simulate` reading "before" from the decision history (CSV connector)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from sync.history import History
from sync.models import Decision, Outcome
from tasks.cli import app
from tests.loopback import free_port

NOW = "2026-11-25T12:00:00Z"
LATER = "2026-11-27T12:00:00Z"

OLD = """\
version: 1
reps: [{id: ava}, {id: ben}, {id: cara}, {id: dev}]
pools: {smb: {members: [ben, cara]}}
rules:
  - {name: gold-tier, when: {fields.tier: {eq: gold}}, assign: {rep: ava}}
  - {name: us-smb, when: {country: {eq: US}}, assign: {pool: smb}}
fallback: {rep: dev}
"""
NEW = """\
version: 1
respect_existing_owner: never
reps: [{id: ava}, {id: ben}, {id: cara}, {id: dev}]
rules: [{name: all-to-dev, assign: {rep: dev}}]
"""
BOOK = "id,name,country,tier,owner\n1,Acme,US,,\n2,Gold,DE,gold,\n3,Beta,US,,\n4,Japan,JP,,\n"


pytestmark = pytest.mark.usefixtures("isolated")  # tests/tasks/conftest.py


def invoke(*args: object) -> Result:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.stderr
    assert "Traceback" not in result.output
    return result


def table(output: str, first_column: str) -> dict[str, list[str]]:
    """The cells of the rich table whose header starts with `first_column`, by first cell."""
    rows: dict[str, list[str]] = {}
    inside = False
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│" if "│" in line else "┃")]
        if cells and cells[0] == first_column:
            inside = True
        elif inside and line.strip().startswith("└"):
            inside = False
        elif inside and "│" in line:
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture
def routed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """The book swept by the OLD file at NOW (1 -> ben, 2 -> ava, 3 -> cara, 4 -> dev), then
    edited by hand: 3 given to ava, and 5 added already owned by cara. Returns NEW and the
    state URL."""
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(OLD)
    new.write_text(NEW)
    (tmp_path / "book.csv").write_text(BOOK)
    monkeypatch.setenv("ACCOUNT_ROUTER_CSV_INPUT", str(tmp_path / "book.csv"))
    monkeypatch.setenv("ACCOUNT_ROUTER_CSV_OUTPUT", str(tmp_path / "routed.csv"))
    state = f"sqlite:///{tmp_path / 's.db'}"
    swept = invoke("sweep", "--crm", "csv", "--object", "account", "--config", old,
                   "--state", state, "--now", NOW)
    assert swept.exit_code == 0, swept.output
    book = (tmp_path / "routed.csv").read_text().splitlines()
    assert book[1:] == ["1,Acme,US,,ben", "2,Gold,DE,gold,ava", "3,Beta,US,,cara",
                        "4,Japan,JP,,dev"]
    book[3] = "3,Beta,US,,ava"
    (tmp_path / "now.csv").write_text("\n".join([*book, "5,Manual,US,,cara"]) + "\n")
    monkeypatch.setenv("ACCOUNT_ROUTER_CSV_INPUT", str(tmp_path / "now.csv"))
    return new, state


def simulate(new: Path, state: str, now: str = LATER) -> Result:
    result = invoke("simulate", "--config", new, "--crm", "csv", "--object", "account",
                    "--state", state, "--now", now)
    assert result.exit_code == 0, result.output
    return result


def test_given_records_routed_earlier_when_simulating_then_moves_show_the_rule_before(
        routed: tuple[Path, str]) -> None:
    result = simulate(*routed)

    assert "5 csv account records; 3 would move" in result.stdout
    assert "no decision history" not in result.output
    moves = table(result.stdout, "record")
    # 3: a person gave it to ava after the router wrote cara, an override no run routes back
    # (docs/operations.md#overrides), so the new file would not move it either.
    assert moves == {
        "1": ["ben", "dev", "all-to-dev", "us-smb (2026-11-25)"],
        "2": ["ava", "dev", "all-to-dev", "gold-tier (2026-11-25)"],
        "5": ["cara", "dev", "all-to-dev", "(never routed)"],
    }
    assert "rule before" in result.stdout


def test_given_records_routed_earlier_when_simulating_then_routed_counts_equal_the_history(
        routed: tuple[Path, str]) -> None:
    new, state = routed

    result = simulate(new, state)

    later = datetime(2026, 11, 27, 12, tzinfo=UTC)
    with History(state) as history:
        expected: Counter[str] = Counter()
        for row in history.load(since=later - timedelta(days=30), until=later):
            expected[row.rep] += row.count
    assert expected == {"ava": 1, "ben": 1, "cara": 1, "dev": 1}
    assert "routed (30 d)" in result.stdout
    loads = table(result.stdout, "owner")
    # owner: before, after, routed (30 d)
    assert loads == {"dev": ["1", "4", "1"], "ava": ["2", "1", "1"], "ben": ["1", "0", "1"],
                     "cara": ["1", "0", "1"]}  # ava keeps 3, which a person gave her


def test_given_a_window_past_the_routing_when_simulating_then_nothing_counts_as_routed(
        routed: tuple[Path, str]) -> None:
    result = simulate(*routed, now="2027-02-01T00:00:00Z")

    assert {owner: cells[2] for owner, cells in table(result.stdout, "owner").items()} == {
        "dev": "0", "ava": "0", "ben": "0", "cara": "0"}
    assert table(result.stdout, "record")["1"][3] == "us-smb (2026-11-25)"  # still the latest


def test_given_no_state_file_when_simulating_then_it_runs_and_says_there_is_no_history(
        routed: tuple[Path, str], tmp_path: Path) -> None:
    new, _ = routed
    missing = tmp_path / "never.db"

    result = simulate(new, f"sqlite:///{missing}")

    assert "no decision history: rule before unknown (no state file at" in result.stdout
    assert "rule before" not in result.stdout.replace("rule before unknown", "")
    assert "routed (30 d)" not in result.stdout
    assert set(table(result.stdout, "record")) == {"1", "2", "3", "5"}
    assert table(result.stdout, "record")["1"] == ["ben", "dev", "all-to-dev"]
    assert not missing.exists()  # asking created nothing


def test_given_redis_state_and_no_database_url_when_simulating_then_it_runs_naming_the_setting(
        routed: tuple[Path, str], redis_url: str) -> None:
    new, _ = routed

    result = simulate(new, redis_url)

    assert "no decision history: rule before unknown" in result.stdout
    assert "ACCOUNT_ROUTER_DATABASE_URL" in result.stdout
    assert len(table(result.stdout, "record")) == 4


def test_given_service_mode_when_simulating_then_the_rule_before_comes_from_postgresql(
        routed: tuple[Path, str], redis_url: str, postgres_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given: what the workers' outbox flushed into PostgreSQL: record 1 routed by `us-smb`.
    new, _ = routed
    with History(postgres_url) as history:
        history.upgrade()
        history.record([(7, Decision(
            record_id="1", object="account", crm="csv", outcome=Outcome.ASSIGNED, owner="ben",
            owner_crm_id="ben", rule="us-smb", reason="rule us-smb: pool smb -> ben",
            trigger="webhook", pool="smb", decided_at=datetime(2026, 11, 20, tzinfo=UTC)))])
    monkeypatch.setenv("ACCOUNT_ROUTER_DATABASE_URL", postgres_url)

    result = simulate(new, redis_url)

    moves = table(result.stdout, "record")
    assert moves["1"][3] == "us-smb (2026-11-20)"
    assert moves["2"][3] == "(never routed)"  # the sweep's decisions are in the state file only
    assert table(result.stdout, "owner")["ben"] == ["1", "0", "1"]


def test_given_service_mode_with_an_unmigrated_database_when_simulating_then_it_says_upgrade(
        routed: tuple[Path, str], redis_url: str, postgres_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    new, _ = routed
    monkeypatch.setenv("ACCOUNT_ROUTER_DATABASE_URL", postgres_url)

    result = simulate(new, redis_url)

    assert "no decision history: rule before unknown" in result.stdout
    assert "account-router db upgrade" in result.stdout


def test_given_an_unreachable_database_with_a_password_when_simulating_then_it_runs_masked(
        routed: tuple[Path, str], redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    new, _ = routed
    port = free_port()  # nothing listens there: refused at once
    monkeypatch.setenv("ACCOUNT_ROUTER_DATABASE_URL",
                       f"postgresql+psycopg://router:s3cret-pw@127.0.0.1:{port}/history")

    result = simulate(new, redis_url)

    assert "no decision history: rule before unknown (cannot open the history database" \
        in result.stdout
    assert "s3cret-pw" not in result.output
    assert len(table(result.stdout, "record")) == 4


def test_given_a_hostile_rule_name_in_the_history_when_simulating_then_it_prints_inert(
        routed: tuple[Path, str]) -> None:
    # Given: record 1's latest decision names a rule carrying a terminal escape (a history
    # outlives routing files; whatever a file once allowed may be there).
    new, state = routed
    with History(state) as history:
        history.record([(10**12, Decision(
            record_id="1", object="account", crm="csv", outcome=Outcome.ASSIGNED, owner="ben",
            owner_crm_id="ben", rule="\x1b]0;pwned\x07x", trigger="reprocess",
            decided_at=datetime(2026, 11, 26, tzinfo=UTC)))])

    result = simulate(new, state)

    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert table(result.stdout, "record")["1"][3].startswith("\ufffd]0;pwned")
