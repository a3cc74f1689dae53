"""The embedded history: decisions land in the state file's history tables, compact, in the
pool turn's transaction; older files (state schema 3 and 4) keep their audit, migrated."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sync.history import History
from sync.history.schema import HEAD_REVISION
from sync.models import Decision, Outcome, TraceStep
from sync.state import PoolChange
from sync.state.sqlite import SCHEMA_VERSION, SqliteStateStore

NOW = datetime(2026, 11, 25, 15, tzinfo=UTC)
DECISION_INDEXES = {"history_decisions_by_record", "history_decisions_by_owner",
                    "history_decisions_by_time"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStateStore]:
    with SqliteStateStore(tmp_path / "s.db") as opened:
        yield opened


def pool_win(record_id: str, member: str) -> Decision:
    won = f"pool smb round_robin -> {member}"
    return Decision(
        record_id=record_id, object="account", crm="file", outcome=Outcome.ASSIGNED,
        owner=member, owner_crm_id=f"10{member}", rule="everyone-else",
        reason=f"rule everyone-else: {won}",
        trace=(TraceStep("named", "no_match", "conditions not met"),
               TraceStep("big", "no_assignee", "pool enterprise: nobody eligible"),
               TraceStep("everyone-else", "won", won)),
        pool="smb", decided_at=NOW,
    )


def count(path: Path, sql: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'history_decisions' AND name NOT LIKE 'sqlite_%'")}
    finally:
        conn.close()


def test_given_a_new_file_when_opened_then_the_history_schema_is_current(
    store: SqliteStateStore,
) -> None:
    with History(store.url) as history:
        assert history.is_current()
    assert count(store.path, "PRAGMA user_version") == SCHEMA_VERSION
    assert indexes(store.path) == DECISION_INDEXES


def test_given_file_decisions_when_committed_then_traces_are_stored_once_and_read_back_whole(
    store: SqliteStateStore,
) -> None:
    originals = [pool_win(f"A{i}", member) for i, member in enumerate(["cara", "dev", "cara"])]
    skipped = Decision(record_id="line 9", object="lead", crm="file",
                       outcome=Outcome.SKIPPED, reason="line 9: empty id", decided_at=NOW)

    store.commit({}, [], [*originals, skipped])
    store.commit({}, [], [pool_win(f"B{k}", ["cara", "dev"][k % 2]) for k in range(100)])

    # cara's win, dev's win and the skip: three bodies for 104 decisions, across transactions.
    assert count(store.path, "SELECT COUNT(*) FROM history_traces") == 3
    conn = sqlite3.connect(store.path)
    try:
        body = json.loads(conn.execute("SELECT body FROM history_traces ORDER BY id").fetchone()[0])
    finally:
        conn.close()
    assert body["t"][0] == "named"  # the stock no-match step: its name only
    assert "m" not in body  # the reason of a win is rebuilt, not stored
    with History(store.url) as history:
        assert history.decisions(record_id="A1") == [originals[1]]
        assert history.decisions(record_id="line 9") == [skipped]
        assert [d.record_id for d in history.decisions(limit=4)] == ["B99", "B98", "B97", "B96"]
        assert [d.owner for d in history.decisions(record_id="B1")] == ["dev"]
    assert store.decisions(record_id="A2") == [originals[2]]  # the store's own shortcut


def test_given_a_commit_of_whole_insert_groups_and_a_rest_when_committed_then_rows_keep_order(
    store: SqliteStateStore,
) -> None:
    # 250 rows: two multi-row INSERT statements of 100 and 50 rows one by one; ids follow the
    # commit order exactly as one insert per row gave them.
    batch = [pool_win(f"R{k:03d}", ["cara", "dev", "eli"][k % 3]) for k in range(250)]
    store.commit({}, [], batch)
    store.commit({}, [], [pool_win("S0", "dev")])

    conn = sqlite3.connect(store.path)
    try:
        ids = conn.execute("SELECT id, record_id FROM history_decisions ORDER BY id").fetchall()
    finally:
        conn.close()
    assert ids == [(k + 1, f"R{k:03d}") for k in range(250)] + [(251, "S0")]
    assert list(reversed(store.decisions()[1:])) == batch


def test_given_a_commit_whose_pool_moved_when_refused_then_no_decision_is_recorded(
    store: SqliteStateStore,
) -> None:
    change = PoolChange("smb", "cara", None, {("cara", "day:2026-11-25"): 1})
    assert store.commit({"smb": 0}, [change], [pool_win("A0", "cara")])

    assert not store.commit({"smb": 0}, [change], [pool_win("A1", "cara")._replace(rule="new")])

    assert [d.record_id for d in store.decisions()] == ["A0"]
    # The refused commit's label was rolled back; a later commit must insert it afresh.
    assert store.commit({"smb": 1}, [change], [pool_win("A2", "cara")._replace(
        rule="new", reason="rule new: pool smb round_robin -> cara")])
    assert store.decisions(record_id="A2")[0].rule == "new"


def test_given_an_empty_trail_when_a_bulk_run_commits_then_indexes_are_built_at_its_end(
    store: SqliteStateStore,
) -> None:
    with store.bulk_audit():
        store.commit({}, [], [pool_win("A0", "cara")])
        assert indexes(store.path) == set()  # no per-row index upkeep during the run
        store.commit({}, [], [pool_win("A1", "dev")])

    assert indexes(store.path) == DECISION_INDEXES
    assert [d.owner for d in store.decisions(record_id="A1")] == ["dev"]


def test_given_a_trail_with_rows_when_a_bulk_run_commits_then_its_indexes_stay(
    store: SqliteStateStore,
) -> None:
    store.commit({}, [], [pool_win("A0", "cara")])

    with store.bulk_audit():
        assert indexes(store.path) == DECISION_INDEXES
        store.commit({}, [], [pool_win("A1", "dev")])

    assert indexes(store.path) == DECISION_INDEXES


def test_given_a_bulk_run_killed_half_way_when_the_file_is_opened_then_state_is_whole(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    SqliteStateStore(path).close()  # the schema first, so the child does no Alembic work
    pid = os.fork()
    if pid == 0:  # the run: commits one batch, then dies without leaving bulk mode
        try:
            child = SqliteStateStore(path)
            with child.bulk_audit():
                child.commit({}, [], [pool_win("A0", "cara"), pool_win("A1", "dev")])
                os._exit(0)
        finally:
            os._exit(1)
    assert os.waitpid(pid, 0)[1] == 0
    assert indexes(path) == set()  # killed: the indexes were never rebuilt

    with SqliteStateStore(path) as reopened:
        assert indexes(path) == DECISION_INDEXES
        assert [d.record_id for d in reopened.decisions()] == ["A1", "A0"]


def test_given_traces_made_and_dropped_one_after_another_when_committed_then_each_body_is_its_own(
    store: SqliteStateStore,
) -> None:
    # Bodies are cached by the trace's identity: a new trace, even at a freed trace's address,
    # must never be stored with the old one's body.
    for k in range(50):
        d = pool_win(f"A{k}", "cara")
        trace = (TraceStep("named", "no_match", "conditions not met"),
                 TraceStep("everyone-else", "won", f"pool smb round_robin -> cara {k}"))
        store.commit({}, [], [d._replace(trace=trace, reason="the same reason every time")])
        del d, trace

    stored = store.decisions()
    assert [d.trace[-1].detail for d in stored] == [
        f"pool smb round_robin -> cara {k}" for k in reversed(range(50))]


# The audit table of state schema 3 (inline bodies) and the one of schema 4 (plus `bodies`).
V3_DECISIONS = (
    "CREATE TABLE decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT NOT NULL, "
    "crm TEXT NOT NULL, object TEXT NOT NULL, owner TEXT, pool TEXT, outcome TEXT NOT NULL, "
    "decided_at TEXT, body TEXT NOT NULL)"
)
V4_EXTRA = (
    "ALTER TABLE decisions ADD COLUMN body_id INTEGER",
    "CREATE TABLE bodies (id INTEGER PRIMARY KEY, body TEXT NOT NULL UNIQUE)",
    "CREATE INDEX decisions_by_record ON decisions (record_id, decided_at)",
)


def legacy_file(path: Path, version: int, rows: list[tuple[object, ...]],
                bodies: list[tuple[int, str]] = ()) -> None:  # type: ignore[assignment]
    conn = sqlite3.connect(path)
    try:
        conn.execute(V3_DECISIONS)
        if version >= 4:
            for statement in V4_EXTRA:
                conn.execute(statement)
            conn.executemany("INSERT INTO bodies (id, body) VALUES (?, ?)", bodies)
        columns = "record_id, crm, object, owner, pool, outcome, decided_at, body"
        if version >= 4:
            columns += ", body_id"
        marks = ", ".join("?" * len(rows[0]))
        conn.executemany(f"INSERT INTO decisions ({columns}) VALUES ({marks})", rows)
        conn.execute(f"PRAGMA user_version={version}")
        conn.commit()
    finally:
        conn.close()


def test_given_a_version_3_file_when_opened_then_its_audit_moves_to_the_history(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    old = pool_win("A0", "cara")._replace(trigger="webhook", previous_owner="ben")
    legacy_file(path, 3, [("A0", "file", "account", "cara", "smb", "assigned",
                           "2026-11-25T15:00:00.000000Z", json.dumps(old.to_dict()))])

    with SqliteStateStore(path) as opened:
        opened.commit({}, [], [pool_win("A1", "dev")])
        assert opened.decisions(record_id="A0") == [old]
        assert [d.record_id for d in opened.decisions()] == ["A1", "A0"]
    tables = {name for (name,) in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "decisions" not in tables and "bodies" not in tables


def test_given_a_version_4_file_when_opened_then_every_old_decision_reads_back_as_before(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v4.db"
    short = pool_win("A1", "dev")
    short_body = json.dumps({"c": "10dev", "r": "everyone-else", "t": [
        "named", ["big", "no_assignee", "pool enterprise: nobody eligible"],
        ["everyone-else", "won", "pool smb round_robin -> dev"]], "d": NOW.isoformat()})
    odd = Decision(record_id="line 3", object="lead", crm="file", outcome=Outcome.SKIPPED,
                   reason="line 3: empty id", trigger="webhook",
                   decided_at=datetime.fromisoformat("2026-11-25T10:00:00-05:00"),
                   write_error="x\x00y")
    odd_body = json.dumps({"m": "line 3: empty id", "g": "webhook",
                           "d": "2026-11-25T10:00:00-05:00", "e": "x\x00y"})
    full = pool_win("A0", "cara")._replace(written_at=NOW)
    legacy_file(path, 4, [
        ("A0", "file", "account", "cara", "smb", "assigned", "2026-11-25T15:00:00.000000Z",
         json.dumps(full.to_dict()), None),  # pre-v4 row: body inline
        ("A1", "file", "account", "dev", "smb", "assigned", "2026-11-25T15:00:00.000000Z",
         "", 1),
        ("line 3", "file", "lead", None, None, "skipped", "2026-11-25T15:00:00.000000Z",
         "", 2),
    ], bodies=[(1, short_body), (2, odd_body)])

    with SqliteStateStore(path) as opened:
        with History(opened.url) as history:
            assert history.current_revision() == HEAD_REVISION
            assert history.decision(1) == full
            assert history.decision(2) == short
            assert history.decision(3) == odd
            assert history.decision(3).to_dict() == odd.to_dict()  # type: ignore[union-attr]
        # New decisions continue the old id sequence.
        opened.commit({}, [], [pool_win("A9", "cara")])
        assert [i for i, _ in opened.history.decision_ids(record_id="A9")] == [4]
