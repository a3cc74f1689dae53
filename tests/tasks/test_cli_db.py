"""`account-router db upgrade | prune`, the readers on an older state file, and `serve` refusing
an out-of-date history schema."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from sync.history import History
from sync.history.schema import HEAD_REVISION
from sync.models import Decision, Outcome, TraceStep
from tasks.cli import app

CONSOLE_SCRIPT = Path(sys.executable).parent / "account-router"
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
SECRET = "hunter2"


def invoke(*args: object, env: dict[str, str] | None = None) -> Result:
    """The CLI in-process; never a traceback."""
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {result.exception!r}; stderr: {result.stderr}")
    assert "Traceback" not in result.output
    return result


def decision(record_id: str, at: datetime) -> Decision:
    return Decision(record_id=record_id, object="account", crm="hubspot",
                    outcome=Outcome.ASSIGNED, owner="ava", rule="r", reason="rule r: rep ava",
                    trace=(TraceStep("r", "won", "rep ava"),), decided_at=at)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_given_a_new_database_when_upgraded_twice_then_it_says_from_and_to_and_is_current(
    database: str,
) -> None:
    first = invoke("db", "upgrade", "--database", database)
    second = invoke("db", "upgrade", "--database", database)

    assert first.exit_code == 0, first.stderr
    assert f"upgraded from revision none to {HEAD_REVISION}" in first.stdout
    assert second.exit_code == 0 and f"already at revision {HEAD_REVISION}" in second.stdout
    with History(database) as history:
        assert history.is_current()


def test_given_old_and_new_decisions_when_pruned_then_only_those_past_the_window_go(
    database: str,
) -> None:
    with History(database) as history:
        history.upgrade()
        history.record([(1, decision("old", NOW - timedelta(days=30, seconds=1))),
                        (2, decision("edge", NOW - timedelta(days=30))),
                        (3, decision("new", NOW - timedelta(days=1)))])

    result = invoke("db", "prune", "--older-than", "30", "--now", NOW.isoformat(),
                    "--database", database)

    assert result.exit_code == 0, result.stderr
    assert "pruned 1 decisions" in result.stdout
    with History(database) as history:
        assert [d.record_id for d in history.decisions()] == ["new", "edge"]


def test_given_no_days_when_pruning_then_the_retention_setting_applies(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'h.db'}"
    with History(database) as history:
        history.upgrade()
        history.record([(1, decision("a", NOW - timedelta(days=8))),
                        (2, decision("b", NOW - timedelta(days=6)))])

    result = invoke("db", "prune", "--now", NOW.isoformat(),
                    env={"ACCOUNT_ROUTER_DATABASE_URL": database,
                         "ACCOUNT_ROUTER_HISTORY_RETENTION_DAYS": "7"})

    assert result.exit_code == 0, result.stderr
    assert "pruned 1 decisions" in result.stdout and "kept 7 days" in result.stdout
    # Through the console script: a bad setting is reported by its entry point (exit 2).
    bad = subprocess.run([str(CONSOLE_SCRIPT), "db", "prune"], capture_output=True, text=True,
                         timeout=60, env={"ACCOUNT_ROUTER_DATABASE_URL": database,
                                          "ACCOUNT_ROUTER_HISTORY_RETENTION_DAYS": "0",
                                          "PATH": "/usr/bin:/bin"})
    assert bad.returncode == 2 and "HISTORY_RETENTION_DAYS" in bad.stderr.upper()
    assert "Traceback" not in bad.stderr


def test_given_a_database_without_the_schema_when_pruning_then_exit_2_naming_the_upgrade(
    database: str,
) -> None:
    result = invoke("db", "prune", "--database", database)

    assert result.exit_code == 2
    assert "account-router db upgrade" in result.stderr


@pytest.mark.parametrize("command", [["upgrade"], ["prune", "--older-than", "5"]])
@pytest.mark.parametrize("url, expected", [
    (f"postgresql+psycopg://router:{SECRET}@127.0.0.1:1/router", "cannot reach"),
    (f"mysql://router:{SECRET}@db/router", "unsupported database URL"),
    (f"sqlite://router:{SECRET}@host/x.db", "bad SQLite"),
])
def test_given_a_bad_or_unreachable_database_when_run_then_exit_2_without_the_password(
    command: list[str], url: str, expected: str,
) -> None:
    result = invoke("db", *command, "--database", url)

    assert result.exit_code == 2
    assert expected in result.stderr
    assert SECRET not in result.output


def test_given_redis_state_and_no_database_url_when_pruning_then_exit_2_naming_the_setting(
) -> None:
    result = invoke("db", "prune", env={"ACCOUNT_ROUTER_REDIS_URL": "redis://127.0.0.1:1/0",
                                        "ACCOUNT_ROUTER_DATABASE_URL": ""})

    assert result.exit_code == 2
    assert "ACCOUNT_ROUTER_DATABASE_URL is not set" in result.stderr


def test_given_a_version_4_state_file_when_audited_then_every_old_decision_reads_as_before(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v4.db"
    old_full = {"record_id": "A0", "crm": "file", "object": "account", "previous_owner": None,
                "owner": "cara", "owner_crm_id": None, "outcome": "assigned",
                "rule": "us-smb", "reason": "rule us-smb: pool smb round_robin -> cara",
                "trace": [{"rule": "us-smb", "result": "won",
                           "detail": "pool smb round_robin -> cara"}],
                "trigger": "file", "pool": "smb", "created_at": None,
                "decided_at": "2026-11-25T10:00:00+00:00", "written_at": None,
                "write_error": None}
    short = {"r": "us-smb", "t": ["gold-tier", ["us-smb", "won", "pool smb round_robin -> dev"]],
             "d": "2026-11-25T11:00:00-05:00"}
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT NOT NULL, "
        "crm TEXT NOT NULL, object TEXT NOT NULL, owner TEXT, pool TEXT, outcome TEXT NOT NULL, "
        "decided_at TEXT, body TEXT NOT NULL, body_id INTEGER)")
    conn.execute("CREATE TABLE bodies (id INTEGER PRIMARY KEY, body TEXT NOT NULL UNIQUE)")
    conn.execute("CREATE TABLE pools (pool TEXT PRIMARY KEY, version INTEGER NOT NULL, "
                 "last_served TEXT, credits TEXT NOT NULL DEFAULT '{}')")
    conn.execute("INSERT INTO pools VALUES ('smb', 7, 'dev', '{}')")
    conn.execute("INSERT INTO bodies VALUES (1, ?)", (json.dumps(short),))
    conn.executemany(
        "INSERT INTO decisions (record_id, crm, object, owner, pool, outcome, decided_at, body, "
        "body_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [("A0", "file", "account", "cara", "smb", "assigned", "2026-11-25T10:00:00.000000Z",
          json.dumps(old_full), None),
         ("A0", "file", "account", "dev", "smb", "assigned", "2026-11-25T16:00:00.000000Z",
          "", 1)])
    conn.execute("PRAGMA user_version=4")
    conn.commit()
    conn.close()
    state = f"sqlite:///{path}"

    audited = invoke("audit", "A0", "--state", state, "--json")
    stats = invoke("stats", "--state", state, "--since", "2026-11-25T00:00:00Z",
                   "--until", "2026-11-26T00:00:00Z", "--json")

    assert audited.exit_code == 0, audited.stderr
    newest, oldest = json.loads(audited.stdout)
    assert oldest == old_full
    assert (newest["owner"], newest["decided_at"], newest["reason"]) == (
        "dev", "2026-11-25T11:00:00-05:00", "rule us-smb: pool smb round_robin -> dev")
    assert newest["trace"][0] == {"rule": "gold-tier", "result": "no_match",
                                  "detail": "conditions not met"}
    assert json.loads(stats.stdout)["reps"] == {"cara": 1, "dev": 1}
    conn = sqlite3.connect(path)
    try:  # the pool's state survived the move untouched
        assert conn.execute("SELECT version, last_served FROM pools").fetchall() == [(7, "dev")]
    finally:
        conn.close()


def test_given_service_mode_with_an_unmigrated_database_when_serving_then_exit_2(
    redis_url: str, postgres_url: str,
) -> None:
    env = {"ACCOUNT_ROUTER_REDIS_URL": redis_url, "ACCOUNT_ROUTER_DATABASE_URL": postgres_url,
           "PATH": "/usr/bin:/bin"}

    result = subprocess.run([str(CONSOLE_SCRIPT), "serve", "--port", "0"], env=env,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 2, result.stderr
    assert "account-router db upgrade" in result.stderr
    assert "Traceback" not in result.stderr
