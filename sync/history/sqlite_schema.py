"""The history tables at head revision as SQLite DDL, for the embedded store without SQLAlchemy.

A new state file gets these statements and the head revision stamped in its own first
transaction (Alembic's documented "create, then stamp" for a fresh database), so opening one
loads neither SQLAlchemy nor Alembic: `route-file` keeps its memory figure. Files with older
tables go through the migrations. tests/sync/history/test_sqlite_schema.py checks that this
builds exactly what the migrations build.
"""

from __future__ import annotations

# Revision the code expects (sync/history/migrations/versions): `History.is_current` compares
# with it, and the embedded store skips Alembic entirely when its file already reports it.
HEAD_REVISION = "0003"

TABLES = (
    "CREATE TABLE IF NOT EXISTS history_labels (\n"
    "\tid INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, \n"
    "\tkind TEXT NOT NULL, \n"
    "\ttext TEXT NOT NULL, \n"
    "\tdigest TEXT NOT NULL, \n"
    "\tUNIQUE (digest)\n"
    ")",
    "CREATE TABLE IF NOT EXISTS history_traces (\n"
    "\tid INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, \n"
    "\tdigest TEXT NOT NULL, \n"
    "\tbody TEXT NOT NULL, \n"
    "\tUNIQUE (digest)\n"
    ")",
    "CREATE TABLE IF NOT EXISTS history_decisions (\n"
    "\tid INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, \n"
    "\tcreated_at BIGINT, \n"
    "\tdecided_at BIGINT, \n"
    "\twritten_at BIGINT, \n"
    "\tcrm INTEGER NOT NULL, \n"
    "\tobject INTEGER NOT NULL, \n"
    "\towner INTEGER, \n"
    "\tprevious_owner INTEGER, \n"
    "\towner_crm_id INTEGER, \n"
    "\tpool INTEGER, \n"
    "\trule INTEGER, \n"
    '\t"trigger" INTEGER NOT NULL, \n'
    "\ttrace_id INTEGER NOT NULL, \n"
    "\toutcome SMALLINT NOT NULL, \n"
    "\trecord_id TEXT NOT NULL, \n"
    # As SQLite keeps it after migration 0003's ADD COLUMN (appended to the statement).
    "\twrite_error TEXT, matched INTEGER\n"
    ")",
    "CREATE TABLE IF NOT EXISTS history_events (\n"
    "\tid INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, \n"
    "\tdecision_id BIGINT, \n"
    "\trecord_id TEXT NOT NULL, \n"
    "\tcrm INTEGER NOT NULL, \n"
    "\tobject INTEGER NOT NULL, \n"
    "\tkind INTEGER NOT NULL, \n"
    "\tat BIGINT NOT NULL, \n"
    "\tdata TEXT NOT NULL\n"
    ")",
    "CREATE INDEX IF NOT EXISTS history_events_by_decision ON history_events (decision_id)",
    "CREATE INDEX IF NOT EXISTS history_events_by_time ON history_events (at)",
    # Alembic's own version table, as it creates it.
    "CREATE TABLE IF NOT EXISTS alembic_version (\n"
    "\tversion_num VARCHAR(32) NOT NULL, \n"
    "\tCONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n"
    ")",
)

# The decision indexes by name: `SqliteStateStore.bulk_audit` drops and rebuilds them around a
# long run, and an open rebuilds any a killed run left missing.
DECISION_INDEXES = {
    "history_decisions_by_owner":
        "CREATE INDEX IF NOT EXISTS history_decisions_by_owner "
        "ON history_decisions (owner, decided_at)",
    "history_decisions_by_record":
        "CREATE INDEX IF NOT EXISTS history_decisions_by_record ON history_decisions (record_id)",
    "history_decisions_by_time":
        "CREATE INDEX IF NOT EXISTS history_decisions_by_time ON history_decisions (decided_at)",
}
