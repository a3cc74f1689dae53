"""The decision history's tables (SQLAlchemy Core), portable between PostgreSQL and SQLite."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
)

from sync.history.sqlite_schema import HEAD_REVISION

__all__ = ["DECISION_INDEXES", "EVENT_INDEXES", "HEAD_REVISION", "Id", "decisions", "events",
           "labels", "metadata", "traces"]

metadata = MetaData()

# BIGINT on PostgreSQL; on SQLite an `INTEGER PRIMARY KEY` is the rowid itself (BIGINT would be a
# second column beside it), so the embedded store's ids are its file's own rowid sequence.
Id = BigInteger().with_variant(Integer(), "sqlite")

# Strings a run repeats (crm, object, reps, pools, rules, triggers, owners' CRM ids, event
# kinds), stored once: a decision row holds 4-byte ids instead of the text. `digest` (hex of a
# hash of kind and text) carries the unique constraint because PostgreSQL cannot put a B-tree
# entry over about 2.7 kB on a hostile string. Rows are never deleted, so an id, once
# committed, may be cached for the life of the process.
labels = Table(
    "history_labels",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("digest", Text, nullable=False, unique=True),
    sqlite_autoincrement=True,
)

# A decision's reason and trace steps as compact JSON (sync/history/codec.py), stored once per
# distinct body: a run repeats a few dozen traces a million times. Never deleted, like labels.
traces = Table(
    "history_traces",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("digest", Text, nullable=False, unique=True),
    Column("body", Text, nullable=False),
    sqlite_autoincrement=True,
)

# One row per decision, keyed by the decision id (the state store assigns it). Instants are
# microseconds since the Unix epoch, UTC: 8 bytes, index-friendly, the same on both databases.
decisions = Table(
    "history_decisions",
    metadata,
    # Fixed-width columns first, widest first: PostgreSQL aligns each column, so this order
    # wastes no padding bytes.
    Column("id", Id, primary_key=True, autoincrement=False),
    Column("created_at", BigInteger),
    Column("decided_at", BigInteger),
    Column("written_at", BigInteger),
    Column("crm", Integer, nullable=False),
    Column("object", Integer, nullable=False),
    Column("owner", Integer),
    Column("previous_owner", Integer),
    Column("owner_crm_id", Integer),
    Column("pool", Integer),
    Column("rule", Integer),
    Column("trigger", Integer, nullable=False),
    Column("trace_id", Integer, nullable=False),
    Column("outcome", SmallInteger, nullable=False),
    Column("record_id", Text, nullable=False),
    Column("write_error", Text),
    # The label (kind `matched`) of the rules whose `when` the record matched; NULL when not
    # known (decided before revision 0003, or not by the rules). Last: added by a migration.
    Column("matched", Integer),
    sqlite_autoincrement=True,
)

# Later events about a decision (written, notified, override, review...) or about a record.
events = Table(
    "history_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=False),
    Column("decision_id", BigInteger),
    Column("record_id", Text, nullable=False),
    Column("crm", Integer, nullable=False),
    Column("object", Integer, nullable=False),
    Column("kind", Integer, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("data", Text, nullable=False),
    sqlite_autoincrement=True,
)

# Only the indexes the queries use (the size budget is 300 bytes a decision, indexes included).
# A record's decisions: a hash index on PostgreSQL (equality is all `GET /decisions/{id}` asks,
# it is half the size of a B-tree over text, and has no entry-size limit on a hostile id);
# SQLite ignores the option and builds a B-tree.
DECISION_INDEXES = (
    Index("history_decisions_by_record", decisions.c.record_id, postgresql_using="hash"),
    # Windows (dashboard, stats, prune) and newest-first pages.
    Index("history_decisions_by_time", decisions.c.decided_at),
    # A rep's decisions and load, newest first.
    Index("history_decisions_by_owner", decisions.c.owner, decisions.c.decided_at),
)
EVENT_INDEXES = (
    Index("history_events_by_decision", events.c.decision_id),
    Index("history_events_by_time", events.c.at),
)
