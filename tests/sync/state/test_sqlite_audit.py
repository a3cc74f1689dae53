"""SQLite audit rows: compact bodies (a million-row file run must not write a gigabyte)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sync.models import Decision, Outcome, TraceStep
from sync.state.sqlite import SqliteStateStore

NOW = datetime(2026, 11, 25, 15, tzinfo=UTC)


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


def bodies(store: SqliteStateStore) -> list[str]:
    with sqlite3.connect(store.path) as conn:
        return [body for (body,) in conn.execute(
            "SELECT COALESCE(bodies.body, decisions.body) FROM decisions "
            "LEFT JOIN bodies ON bodies.id = decisions.body_id ORDER BY decisions.id")]


def test_given_file_decisions_when_committed_then_bodies_are_compact_and_read_back_whole(
    store: SqliteStateStore,
) -> None:
    originals = [pool_win(f"A{i}", member) for i, member in enumerate(["cara", "dev", "cara"])]
    skipped = Decision(record_id="line 9", object="lead", crm="file",
                       outcome=Outcome.SKIPPED, reason="line 9: empty id", decided_at=NOW)

    store.commit({}, [], [*originals, skipped])

    stored = bodies(store)
    assert all(len(body) < 200 for body in stored)
    assert json.loads(stored[0])["t"][0] == "named"  # the stock no-match step: its name only
    assert "m" not in json.loads(stored[0])  # the reason of a win is rebuilt, not stored
    assert store.decisions(record_id="A1") == [originals[1]]
    assert store.decisions(record_id="line 9") == [skipped]
    assert [d.record_id for d in store.decisions()] == ["line 9", "A2", "A1", "A0"]


def test_given_rows_in_the_older_full_form_when_reading_then_both_forms_are_understood(
    store: SqliteStateStore,
) -> None:
    new = pool_win("A1", "dev")
    store.commit({}, [], [new])
    old = pool_win("A1", "cara")._replace(trigger="webhook", previous_owner="ben")
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "INSERT INTO decisions (record_id, crm, object, owner, pool, outcome, decided_at, "
            "body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("A1", "file", "account", "cara", "smb", "assigned",
             "2026-11-25T15:00:00.000000Z", json.dumps(old.to_dict())))

    assert store.decisions(record_id="A1") == [old, new]  # same instant: later row first
    assert len(bodies(store)[0]) < len(bodies(store)[1]) / 2


def indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'decisions'")}


DECISION_INDEXES = {"decisions_by_record", "decisions_by_owner", "decisions_by_time"}


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


def test_given_many_decisions_sharing_bodies_when_committed_then_each_body_is_stored_once(
    store: SqliteStateStore,
) -> None:
    store.commit({}, [], [pool_win(f"A{k}", "cara") for k in range(100)])
    store.commit({}, [], [pool_win(f"B{k}", ["cara", "dev"][k % 2]) for k in range(100)])

    with sqlite3.connect(store.path) as conn:
        distinct = conn.execute("SELECT COUNT(*) FROM bodies").fetchone()[0]
        inline = conn.execute("SELECT COUNT(*) FROM decisions WHERE body != ''").fetchone()[0]
    assert (distinct, inline) == (2, 0)  # cara's body and dev's, across both transactions
    assert [d.owner for d in store.decisions(record_id="B1")] == ["dev"]
    assert store.decisions(record_id="A7") == [pool_win("A7", "cara")]


def test_given_a_version_3_file_when_opened_then_it_is_migrated_in_place_and_old_rows_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    old = pool_win("A0", "cara")
    with sqlite3.connect(path) as conn:  # the decisions table as version 3 created it
        conn.execute(
            "CREATE TABLE decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT NOT "
            "NULL, crm TEXT NOT NULL, object TEXT NOT NULL, owner TEXT, pool TEXT, outcome TEXT "
            "NOT NULL, decided_at TEXT, body TEXT NOT NULL)")
        conn.execute(
            "INSERT INTO decisions (record_id, crm, object, owner, pool, outcome, decided_at, "
            "body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("A0", "file", "account", "cara", "smb", "assigned",
             "2026-11-25T15:00:00.000000Z", json.dumps(old.to_dict())))
        conn.execute("PRAGMA user_version=3")
    conn.close()

    with SqliteStateStore(path) as opened:
        opened.commit({}, [], [pool_win("A1", "dev")])
        assert opened.decisions(record_id="A0") == [old]
        assert [d.record_id for d in opened.decisions()] == ["A1", "A0"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
        assert conn.execute("SELECT COUNT(*) FROM bodies").fetchone()[0] == 1
    conn.close()
