"""The embedded store's fast path builds exactly the schema the Alembic migrations build."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sync.history import History
from sync.history.schema import DECISION_INDEXES as MODEL_INDEXES
from sync.history.sqlite_schema import DECISION_INDEXES, HEAD_REVISION
from sync.state.sqlite import SqliteStateStore


def schema(path: Path) -> dict[str, str]:
    """Every history table and index of a file, by name, with its DDL in one canonical form."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND "
            "(name LIKE 'history_%' OR name = 'alembic_version')").fetchall()
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    finally:
        conn.close()
    # SQLite stores the statement as written: IF NOT EXISTS and whitespace are not the schema.
    canonical = {name: " ".join(sql.replace("IF NOT EXISTS ", "").replace("(", " ( ")
                                .replace(")", " ) ").replace(",", " , ").split())
                 for name, sql in rows}
    return {**canonical, "version": repr(version)}


def test_given_a_new_state_file_when_opened_then_its_history_schema_is_the_migrations_own(
    tmp_path: Path,
) -> None:
    SqliteStateStore(tmp_path / "state.db").close()
    with History(f"sqlite:///{tmp_path / 'migrated.db'}") as history:
        history.upgrade()

    fast, migrated = schema(tmp_path / "state.db"), schema(tmp_path / "migrated.db")

    assert fast == migrated
    assert fast["version"] == repr([(HEAD_REVISION,)])
    assert set(DECISION_INDEXES) == {index.name for index in MODEL_INDEXES}
