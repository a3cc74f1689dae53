"""Embedded state store: one SQLite file in WAL mode, safe for several processes at once."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync.history import codec
from sync.history.sqlite_schema import DECISION_INDEXES, HEAD_REVISION, TABLES
from sync.models import REVIEW_OPEN, Decision, HistoryEvent, ReviewItem
from sync.state import as_utc, check_limit, merge_changes
from sync.state.base import (
    CLOSED_REVIEW_DAYS,
    ClosesOnExit,
    LoadRow,
    OwnerMark,
    PoolChange,
    PoolSnapshot,
    Precreated,
    WatchEntry,
)

if TYPE_CHECKING:
    from sync.history import History

# 2 added the pipeline bookkeeping tables, 3 the webhook dedupe keys, 4 the audit bodies table;
# 5 moved the audit trail to the decision history's tables (sync/history, created and upgraded
# by its Alembic migrations on open; migration 0002 moves a version-4 file's `decisions` and
# `bodies` there). Every statement is IF NOT EXISTS, so an older file gains what it lacks the
# next time it is opened.
SCHEMA_VERSION = 5

# The history's decision indexes: `bulk_audit` drops and rebuilds them around a long run, and an
# open rebuilds any a killed run left missing.
_DECISION_INDEXES = DECISION_INDEXES

SCHEMA = """
CREATE TABLE IF NOT EXISTS pools (
    pool        TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,
    last_served TEXT,
    credits     TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS pool_counts (
    pool     TEXT NOT NULL,
    member   TEXT NOT NULL,
    "window" TEXT NOT NULL,
    count    INTEGER NOT NULL,
    PRIMARY KEY (pool, "window", member)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pauses (
    rep   TEXT PRIMARY KEY,
    until TEXT
);
-- First-touch SLA watch: one entry per record (crm:object:id); `due` is the deadline until a
-- pass claims the entry, then the end of the claim's lease (UTC text, like pauses).
CREATE TABLE IF NOT EXISTS sla_watch (
    key          TEXT PRIMARY KEY,
    decision_key TEXT NOT NULL,
    due          TEXT NOT NULL,
    body         TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sla_watch_by_due ON sla_watch (due);
CREATE TABLE IF NOT EXISTS checkpoints (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
-- expires is wall-clock seconds (time.time()): the only clock that several processes share.
CREATE TABLE IF NOT EXISTS record_locks (
    record_key TEXT PRIMARY KEY,
    token      TEXT NOT NULL,
    expires    REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS record_locks_by_expiry ON record_locks (expires);
-- first_failed is wall-clock seconds; the index also carries record_id (the key's tail), so
-- `ORDER BY first_failed, record_id` for one crm/object is read straight off it.
CREATE TABLE IF NOT EXISTS failed_writes (
    crm          TEXT NOT NULL,
    object       TEXT NOT NULL,
    record_id    TEXT NOT NULL,
    first_failed REAL NOT NULL,
    PRIMARY KEY (crm, object, record_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS failed_writes_by_age ON failed_writes (crm, object, first_failed);
-- Webhook dedupe marks; expires is wall-clock seconds, like record_locks.
CREATE TABLE IF NOT EXISTS seen_keys (
    key     TEXT PRIMARY KEY,
    expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_keys_by_expiry ON seen_keys (expires);
-- Own-write marks (docs/operations.md#overrides): `OwnerMark` JSON; written_at fixed-width UTC
-- text (compares as the instant); expires wall-clock seconds, like seen_keys.
CREATE TABLE IF NOT EXISTS owner_marks (
    crm        TEXT NOT NULL,
    object     TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    written_at TEXT NOT NULL,
    body       TEXT NOT NULL,
    expires    REAL NOT NULL,
    PRIMARY KEY (crm, object, record_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS owner_marks_by_expiry ON owner_marks (expires);
-- Review items (docs/operations.md#review-before-writing): the item as JSON (`ReviewItem`),
-- claim_expires is wall-clock seconds of a reviewer's lease, 0 when unclaimed. A record has
-- at most one open item.
CREATE TABLE IF NOT EXISTS review_items (
    id            TEXT PRIMARY KEY,
    record_key    TEXT NOT NULL,
    open          INTEGER NOT NULL,
    escalated     INTEGER NOT NULL DEFAULT 0,
    claim_expires REAL NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    closed_at     TEXT,
    body          TEXT NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS review_items_open_record ON review_items (record_key)
    WHERE open = 1;
CREATE INDEX IF NOT EXISTS review_items_by_age ON review_items (open, created_at);
CREATE INDEX IF NOT EXISTS review_items_by_close ON review_items (open, closed_at);
-- POST /route (docs/operations.md#post-route): answers by idempotency key, and decisions
-- waiting for their CRM record (`Precreated` JSON; decided_at/expires_at fixed-width UTC text,
-- compared with the routing instant; expires wall-clock seconds, like seen_keys).
CREATE TABLE IF NOT EXISTS api_answers (
    key     TEXT PRIMARY KEY,
    answer  TEXT NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS api_answers_by_expiry ON api_answers (expires);
CREATE TABLE IF NOT EXISTS precreated (
    id         TEXT PRIMARY KEY,
    crm        TEXT NOT NULL,
    object     TEXT NOT NULL,
    email      TEXT,
    domain     TEXT,
    decided_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    body       TEXT NOT NULL,
    expires    REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS precreated_by_email ON precreated (crm, object, email, decided_at);
CREATE INDEX IF NOT EXISTS precreated_by_domain ON precreated (crm, object, domain, decided_at);
CREATE INDEX IF NOT EXISTS precreated_by_expiry ON precreated (expires);
"""

# Connections inherited through fork() must never be used or closed in the child (closing can
# disturb the parent's locks); they are parked here so garbage collection does not close them.
_INHERITED: list[sqlite3.Connection] = []


def _ts(value: datetime, what: str) -> str:
    """Fixed-width UTC text (`2026-11-25T14:03:00.000000Z`): sorts and compares as the instant."""
    return as_utc(value, what).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _from_ts(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


class SqliteStateStore(ClosesOnExit):
    """`StateStore` on one SQLite file; every process opens its own connection."""

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._timeout = timeout
        # One connection per process, shared by its threads under this lock (a web server's
        # thread pool may call in); sqlite3 objects are not safe for concurrent use.
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        # History labels and trace ids, once committed (they are never deleted, so a cached id
        # stays valid); see `_HistoryRows`.
        self._rows = _HistoryRows()
        self._history: History | None = None
        with self._lock:
            self._connection()  # open now: a bad path fails at open, not at the first turn

    # --- connection -------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:
            _INHERITED.append(self._conn)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN ourselves, so a commit is exactly one transaction.
        conn = sqlite3.connect(
            self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._setup(conn)
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        # Switching to WAL needs a brief exclusive lock and, unlike ordinary statements, can
        # report "locked" without waiting when several processes open a new file together.
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        conn.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
        # NORMAL in WAL mode: durable against process crashes, may lose the last commits on power
        # loss; a lost turn is acceptable (docs/operations.md#tasks-and-delivery: "may be lost,
        # never given twice").
        conn.execute("PRAGMA synchronous=NORMAL")
        # executescript() would COMMIT any open transaction first, so run statements one by one
        # inside BEGIN IMMEDIATE: concurrent first opens then create the schema exactly once.
        with self._transaction(conn, immediate=True):
            for statement in _statements(SCHEMA):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            revision = _history_revision(conn)
            current = revision == HEAD_REVISION
            if revision is None and not _has_table(conn, "decisions"):
                # A new file (or an in-memory what-if state, which no other connection could
                # migrate): the tables as they are at head, and the head stamped, in this
                # transaction; the migrations are for files that have something to migrate.
                for statement in (*TABLES, *_DECISION_INDEXES.values()):
                    conn.execute(statement)
                conn.execute("INSERT INTO alembic_version (version_num) VALUES (?)",
                             (HEAD_REVISION,))
                current = True
        if not current:
            # Embedded mode upgrades its own file (a first open, or a file from an older
            # version: its audit trail moves to the history, migration 0002). Through its own
            # connection, under BEGIN IMMEDIATE, so concurrent first opens upgrade once.
            from sync.history import History

            with History(self.url) as history:
                history.upgrade()
        with self._transaction(conn, immediate=True):
            # A run killed inside `bulk_audit` left the indexes dropped: build them now.
            for statement in _DECISION_INDEXES.values():
                conn.execute(statement)

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """This process's connection, under the lock, in an IMMEDIATE transaction."""
        with self._lock:
            conn = self._connection()
            with self._transaction(conn, immediate=True):
                yield conn

    @contextmanager
    def _transaction(
        self, conn: sqlite3.Connection, *, immediate: bool
    ) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so a read-check-write (the version compare)
        # cannot interleave with another process's commit, and waits on busy_timeout instead of
        # failing mid-transaction with SQLITE_BUSY on lock upgrade.
        conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        else:
            if conn.in_transaction:
                conn.execute("COMMIT")

    @property
    def in_memory(self) -> bool:
        return str(self.path) == ":memory:"

    @property
    def url(self) -> str:
        """The file's SQLite URL: the embedded history lives in the same file."""
        return f"sqlite:///{self.path}"

    @property
    def history(self) -> History:
        """The decision history in this file (opened on first use, closed with the store)."""
        with self._lock:
            if self.in_memory:
                raise ValueError("an in-memory state keeps no history to read")
            if self._history is None:
                from sync.history import History

                self._history = History(self.url)
            return self._history

    @contextmanager
    def bulk_audit(self) -> Iterator[None]:
        """Around one long run of commits (`route-file`): when the audit trail is empty at the
        start, its indexes are dropped and built once at the end, a sort per index instead of a
        B-tree insert per row and index (a third of a million-row file's time).

        Every commit stays one transaction, so a run killed half-way leaves consistent state;
        only the indexes are missing then, and the next open of the file builds them (the schema
        is all IF NOT EXISTS). Readers meanwhile get the same rows, found by scanning.
        """
        with self._writing() as conn:
            empty = conn.execute(
                "SELECT 1 FROM history_decisions LIMIT 1").fetchone() is None
            if empty:
                for name in _DECISION_INDEXES:
                    conn.execute(f"DROP INDEX IF EXISTS {name}")
        try:
            yield
        finally:
            if empty:
                with self._lock:
                    conn = self._connection()
                    with self._transaction(conn, immediate=True):
                        for statement in _DECISION_INDEXES.values():
                            conn.execute(statement)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            if self._history is not None:
                self._history.close()
                self._history = None

    def __repr__(self) -> str:
        return f"SqliteStateStore({str(self.path)!r})"

    # --- pools ------------------------------------------------------------------------------

    def load_pools(self, windows: Mapping[str, Mapping[str, str]]) -> dict[str, PoolSnapshot]:
        result: dict[str, PoolSnapshot] = {}
        with self._lock:
            conn = self._connection()
            # One read transaction: every pool and count comes from the same WAL snapshot.
            with self._transaction(conn, immediate=False):
                for pool, members in windows.items():
                    snap = PoolSnapshot(pool=pool, counts={m: 0 for m in members})
                    row = conn.execute(
                        "SELECT version, last_served, credits FROM pools WHERE pool = ?", (pool,)
                    ).fetchone()
                    if row is not None:
                        snap.version, snap.last_served = int(row[0]), row[1]
                        snap.credits = {str(k): float(v) for k, v in json.loads(row[2]).items()}
                    wanted = sorted(set(members.values()))
                    if wanted:
                        marks = ",".join("?" * len(wanted))
                        stored = {
                            (member, window): int(count)
                            for member, window, count in conn.execute(
                                f'SELECT member, "window", count FROM pool_counts '
                                f'WHERE pool = ? AND "window" IN ({marks})',
                                (pool, *wanted),
                            )
                        }
                        for member, window in members.items():
                            snap.counts[member] = stored.get((member, window), 0)
                    result[pool] = snap
        return result

    def commit(
        self,
        expected: Mapping[str, int],
        changes: Sequence[PoolChange],
        decisions: Sequence[Decision],
    ) -> bool:
        # Everything that can fail on bad input is computed before the transaction starts.
        merged = merge_changes(changes)
        count_rows = [
            (m.pool, member, window, n)
            for m in merged
            for (member, window), n in m.increments.items()
        ]
        rows = self._rows
        decision_rows, unresolved = rows.encode(decisions)
        with self._lock:
            conn = self._connection()
            try:
                with self._transaction(conn, immediate=True):
                    for pool, version in expected.items():
                        row = conn.execute(
                            "SELECT version FROM pools WHERE pool = ?", (pool,)
                        ).fetchone()
                        if (int(row[0]) if row is not None else 0) != version:
                            conn.execute("ROLLBACK")
                            rows.rolled_back()
                            return False
                    for m in merged:
                        conn.execute(
                            "INSERT INTO pools (pool, version, last_served, credits) "
                            "VALUES (:pool, 1, :last, COALESCE(:credits, '{}')) "
                            "ON CONFLICT (pool) DO UPDATE SET version = version + 1, "
                            "last_served = excluded.last_served, "
                            "credits = COALESCE(:credits, credits)",
                            {
                                "pool": m.pool,
                                "last": m.last_served,
                                "credits": None if m.credits is None else json.dumps(m.credits),
                            },
                        )
                    conn.executemany(
                        'INSERT INTO pool_counts (pool, member, "window", count) '
                        "VALUES (?, ?, ?, ?) ON CONFLICT (pool, \"window\", member) "
                        "DO UPDATE SET count = count + excluded.count",
                        count_rows,
                    )
                    if decision_rows:
                        rows.resolve(conn, decision_rows, unresolved)
                        _insert_decisions(conn, decision_rows)
            except BaseException:
                rows.rolled_back()
                raise
            rows.committed()
        return True

    def record_events(self, events: Sequence[HistoryEvent]) -> None:
        """Store events in the file's history, in one transaction; an id already stored is
        kept as it is (events are idempotent by id)."""
        unique = {int(e.id): e for e in reversed(events)}
        if not unique:
            return
        # Refused before the transaction: data that is not JSON, a naive instant.
        prepared = [(i, e, codec.event_data(e), codec.to_us(e.at, "at"))
                    for i, e in unique.items()]
        rows = self._rows
        with self._lock:
            conn = self._connection()
            try:
                with self._transaction(conn, immediate=True):
                    conn.executemany(
                        "INSERT INTO history_events (id, decision_id, record_id, crm, object, "
                        "kind, at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (id) DO NOTHING",
                        [(i, e.decision_id, codec.store_text(e.record_id),
                          rows.label(conn, codec.CRM, e.crm),
                          rows.label(conn, codec.OBJECT, e.object),
                          rows.label(conn, codec.EVENT, e.kind), at, data)
                         for i, e, data, at in prepared])
            except BaseException:
                rows.rolled_back()
                raise
            rows.committed()

    # --- pauses -----------------------------------------------------------------------------

    def pauses(self, now: datetime) -> dict[str, datetime | None]:
        # Expired rows are ignored, not deleted: `now` may be a replay instant (`--now`), and a
        # pause that has expired at a replayed instant may still hold in real time.
        now_ts = _ts(now, "now")
        with self._lock:
            rows = self._connection().execute(
                "SELECT rep, until FROM pauses WHERE until IS NULL OR until > ? ORDER BY rep",
                (now_ts,),
            ).fetchall()
        return {rep: None if until is None else _from_ts(until) for rep, until in rows}

    def load_pools_and_pauses(self, windows: Mapping[str, Mapping[str, str]], now: datetime
                              ) -> tuple[dict[str, PoolSnapshot], dict[str, datetime | None]]:
        return self.load_pools(windows), self.pauses(now)  # in process: nothing to save

    def pause(self, rep: str, until: datetime | None = None) -> None:
        until_ts = None if until is None else _ts(until, "until")
        with self._lock:
            self._connection().execute(
                "INSERT INTO pauses (rep, until) VALUES (?, ?) "
                "ON CONFLICT (rep) DO UPDATE SET until = excluded.until",
                (rep, until_ts),
            )

    def resume(self, rep: str) -> bool:
        # Resume is an operator action in real time, so "was paused" is judged by the wall clock:
        # an expired pause is not a pause (and its row is cleaned up all the same).
        now_ts = _ts(datetime.now(UTC), "now")
        with self._writing() as conn:
            row = conn.execute("SELECT until FROM pauses WHERE rep = ?", (rep,)).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM pauses WHERE rep = ?", (rep,))
        return row[0] is None or row[0] > now_ts

    # --- audit: the history in this file (StateStore no longer declares these) ---------------

    def decisions(
        self,
        record_id: str | None = None,
        rep: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[Decision]:
        """The history's decisions (`History.decisions`), newest first."""
        return self.history.decisions(record_id=record_id, rep=rep, since=since, until=until,
                                      limit=limit)

    def load(self, since: datetime | None = None, until: datetime | None = None) -> list[LoadRow]:
        """The history's assignments (`History.load`)."""
        return self.history.load(since=since, until=until)

    # --- pipeline bookkeeping ---------------------------------------------------------------

    def get_checkpoint(self, name: str) -> str | None:
        with self._lock:
            row = self._connection().execute(
                "SELECT value FROM checkpoints WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else str(row[0])

    def set_checkpoint(self, name: str, value: str | None) -> None:
        # One autocommitted statement: in the WAL before this returns, so it survives a crashed
        # process. synchronous=NORMAL may lose it on power loss; that only means re-sweeping from
        # the previous checkpoint, never skipping records.
        with self._lock:
            conn = self._connection()
            if value is None:
                conn.execute("DELETE FROM checkpoints WHERE name = ?", (name,))
            else:
                conn.execute(
                    "INSERT INTO checkpoints (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (name, value),
                )

    def lock_records(self, keys: Sequence[str], token: str, ttl_seconds: float) -> set[str]:
        _check_ttl(ttl_seconds)
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return set()
        held: set[str] = set()
        with self._lock:
            conn = self._connection()
            # BEGIN IMMEDIATE serialises lockers across processes: the expiry sweep and the
            # take-if-free-or-mine below see no other writer in between, so a key is never
            # granted to two tokens.
            with self._transaction(conn, immediate=True):
                # Read the clock only once the write lock is ours: BEGIN may have waited, and
                # an expiry computed before the wait would be short by that long.
                now = time.time()
                # Dropping every expired lock (not just ours) keeps the table bounded by the
                # locks actually live, however many workers died holding some.
                conn.execute("DELETE FROM record_locks WHERE expires <= ?", (now,))
                for key in wanted:
                    # Inserted (free key) or refreshed (already ours): one changed row. Held by
                    # another live token: the WHERE fails and nothing changes.
                    cursor = conn.execute(
                        "INSERT INTO record_locks (record_key, token, expires) VALUES (?, ?, ?) "
                        "ON CONFLICT (record_key) DO UPDATE SET expires = excluded.expires "
                        "WHERE record_locks.token = excluded.token",
                        (key, token, now + ttl_seconds),
                    )
                    if cursor.rowcount == 1:
                        held.add(key)
        return held

    def unlock_records(self, keys: Sequence[str], token: str) -> None:
        rows = [(key, token) for key in dict.fromkeys(keys)]
        if not rows:
            return
        with self._lock:
            conn = self._connection()
            with self._transaction(conn, immediate=True):  # one commit, not one per key
                conn.executemany(
                    "DELETE FROM record_locks WHERE record_key = ? AND token = ?", rows
                )

    def add_failed(self, crm: str, object: str, ids: Sequence[str]) -> None:
        # DO NOTHING on a known id keeps its first failure time: a record failing on every run
        # keeps its place at the head of the queue instead of moving to the back.
        now = time.time()
        rows = [(crm, object, record_id, now) for record_id in dict.fromkeys(ids)]
        if not rows:
            return
        with self._writing() as conn:
            conn.executemany(
                "INSERT INTO failed_writes (crm, object, record_id, first_failed) "
                "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                rows,
            )

    def failed(self, crm: str, object: str) -> list[str]:
        # Ties (ids added in one call) order by id, as a Redis sorted set orders equal scores.
        with self._lock:
            rows = self._connection().execute(
                "SELECT record_id FROM failed_writes WHERE crm = ? AND object = ? "
                "ORDER BY first_failed, record_id",
                (crm, object),
            ).fetchall()
        return [str(record_id) for (record_id,) in rows]

    def remove_failed(self, crm: str, object: str, ids: Sequence[str]) -> None:
        rows = [(crm, object, record_id) for record_id in dict.fromkeys(ids)]
        if not rows:
            return
        with self._writing() as conn:
            conn.executemany(
                "DELETE FROM failed_writes WHERE crm = ? AND object = ? AND record_id = ?",
                rows,
            )

    def seen(self, key: str, ttl_seconds: float) -> bool:
        _check_ttl(ttl_seconds)
        with self._lock:
            conn = self._connection()
            # BEGIN IMMEDIATE: the expiry sweep and the insert see no other writer in between,
            # so of two processes marking the same key exactly one inserts it.
            with self._transaction(conn, immediate=True):
                now = time.time()  # read once the write lock is ours (BEGIN may have waited)
                return not _mark_seen(conn, key, now, ttl_seconds)

    def forget(self, key: str) -> None:
        with self._writing() as conn:
            conn.execute("DELETE FROM seen_keys WHERE key = ?", (key,))

    # --- first-touch SLA watch ----------------------------------------------------------------

    def watch(self, entries: Sequence[WatchEntry]) -> None:
        rows = [(e.key, e.decision_key, _ts(e.deadline, "deadline"),
                 json.dumps(e.to_dict(), separators=(",", ":"))) for e in entries]
        if not rows:
            return
        with self._writing() as conn:
            conn.executemany(
                "INSERT INTO sla_watch (key, decision_key, due, body) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET decision_key = excluded.decision_key, "
                "due = excluded.due, body = excluded.body", rows)

    def watch_entry(self, key: str) -> WatchEntry | None:
        with self._lock:
            row = self._connection().execute(
                "SELECT body FROM sla_watch WHERE key = ?", (key,)).fetchone()
        return None if row is None else WatchEntry.from_dict(json.loads(row[0]))

    def claim_due(self, now: datetime, limit: int, lease_seconds: float) -> list[WatchEntry]:
        _check_ttl(lease_seconds)
        check_limit(limit)
        at = _ts(now, "now")
        until = _ts(now + timedelta(seconds=lease_seconds), "now")
        with self._lock:
            conn = self._connection()
            # IMMEDIATE: the select and the lease bump are one step no other process splits.
            with self._transaction(conn, immediate=True):
                rows = conn.execute(
                    "SELECT key, body FROM sla_watch WHERE due <= ? ORDER BY due, key LIMIT ?",
                    (at, limit)).fetchall()
                conn.executemany("UPDATE sla_watch SET due = ? WHERE key = ?",
                                 [(until, key) for key, _ in rows])
        return [WatchEntry.from_dict(json.loads(body)) for _, body in rows]

    def end_watch(self, entries: Sequence[WatchEntry]) -> int:
        if not entries:
            return 0
        with self._writing() as conn:
            ended = 0
            for e in entries:
                ended += conn.execute(
                    "DELETE FROM sla_watch WHERE key = ? AND decision_key = ?",
                    (e.key, e.decision_key)).rowcount
        return ended

    def watching(self) -> int:
        with self._lock:
            row = self._connection().execute("SELECT count(*) FROM sla_watch").fetchone()
        return int(row[0])

    # --- own-write marks --------------------------------------------------------------------

    def set_owner_marks(self, marks: Sequence[OwnerMark], ttl_seconds: float) -> None:
        _check_ttl(ttl_seconds)
        if not marks:
            return
        with self._writing() as conn:
            now = time.time()
            # A stored mark written later stays (a redelivered follower is older news).
            _expire_then_upsert(
                conn, "owner_marks",
                "INSERT INTO owner_marks (crm, object, record_id, written_at, body, expires)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (crm, object, record_id) DO UPDATE"
                " SET written_at = excluded.written_at, body = excluded.body,"
                " expires = excluded.expires"
                " WHERE owner_marks.written_at <= excluded.written_at",
                [(m.crm, m.object, m.record_id, _ts(m.written_at, "written_at"),
                  m.to_json(), now + ttl_seconds) for m in marks], now)

    def owner_marks(self, crm: str, object: str, ids: Sequence[str]) -> dict[str, OwnerMark]:
        wanted = list(dict.fromkeys(ids))
        out: dict[str, OwnerMark] = {}
        with self._lock:
            conn = self._connection()
            now = time.time()
            for start in range(0, len(wanted), 500):  # under SQLite's bound-variable limit
                chunk = wanted[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for record_id, body in conn.execute(
                        f"SELECT record_id, body FROM owner_marks WHERE crm = ? AND object = ?"
                        f" AND expires > ? AND record_id IN ({marks})",
                        (crm, object, now, *chunk)):
                    out[record_id] = OwnerMark.from_json(body)
        return out

    def mark_overridden(self, mark: OwnerMark, to: str, at: datetime,
                        by: str | None = None) -> bool:
        with self._writing() as conn:
            row = conn.execute(
                "SELECT body FROM owner_marks WHERE crm = ? AND object = ?"
                " AND record_id = ? AND expires > ?",
                (mark.crm, mark.object, mark.record_id, time.time())).fetchone()
            if row is None:
                return False
            stored = OwnerMark.from_json(row[0])
            if stored.decision != mark.decision or stored.owner != mark.owner \
                    or stored.overridden:
                return False
            done = replace(stored, overridden_to=to,
                           overridden_at=as_utc(at, "at"), overridden_by=by)
            conn.execute(
                "UPDATE owner_marks SET body = ? WHERE crm = ? AND object = ?"
                " AND record_id = ?",
                (done.to_json(), mark.crm, mark.object, mark.record_id))
            return True

    # --- review items -----------------------------------------------------------------------

    def add_reviews(self, items: Sequence[ReviewItem]) -> None:
        rows = [(i.id, i.record_key, _ts(i.created_at, "created_at"),
                 json.dumps(i.to_dict(), separators=(",", ":"))) for i in items]
        if not rows:
            return
        with self._writing() as conn:
            for row in rows:
                # The partial unique index refuses a second open item for one record, the
                # primary key a known id: both are "already there", not errors.
                conn.execute(
                    "INSERT INTO review_items (id, record_key, open, created_at, body) "
                    "VALUES (?, ?, 1, ?, ?) ON CONFLICT DO NOTHING", row)

    def reviews(self, *, closed: bool = False, limit: int | None = None) -> list[ReviewItem]:
        order = "closed_at DESC" if closed else "created_at ASC"
        with self._lock:
            rows = self._connection().execute(
                f"SELECT body, escalated FROM review_items WHERE open = ? "
                f"ORDER BY {order}, id LIMIT ?",
                (0 if closed else 1, -1 if limit is None else limit)).fetchall()
        return [_review(body, escalated) for body, escalated in rows]

    def review(self, id: str) -> ReviewItem | None:
        with self._lock:
            row = self._connection().execute(
                "SELECT body, escalated FROM review_items WHERE id = ?", (id,)).fetchone()
        return None if row is None else _review(row[0], row[1])

    def under_review(self, crm: str, object: str, ids: Sequence[str]) -> set[str]:
        keys = {f"{crm}:{object}:{i}": i for i in ids}
        found: set[str] = set()
        wanted = list(keys)
        with self._lock:
            conn = self._connection()
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(keys[k] for (k,) in conn.execute(
                    f"SELECT record_key FROM review_items WHERE open = 1 "
                    f"AND record_key IN ({marks})", chunk))
        return found

    def claim_review(self, id: str, ttl_seconds: float) -> ReviewItem | None:
        _check_ttl(ttl_seconds)
        with self._lock:
            conn = self._connection()
            # BEGIN IMMEDIATE: read and lease in one write transaction, so of two processes
            # claiming the same item exactly one updates it.
            with self._transaction(conn, immediate=True):
                now = time.time()
                row = conn.execute(
                    "UPDATE review_items SET claim_expires = ? WHERE id = ? AND open = 1 "
                    "AND claim_expires <= ? RETURNING body, escalated",
                    (now + ttl_seconds, id, now)).fetchone()
        return None if row is None else _review(row[0], row[1])

    def release_review(self, id: str) -> None:
        with self._lock:
            self._connection().execute(
                "UPDATE review_items SET claim_expires = 0 WHERE id = ? AND open = 1", (id,))

    def close_review(self, item: ReviewItem) -> None:
        if item.status == REVIEW_OPEN or item.closed_at is None:
            raise ValueError("close_review takes a closed item (approved, reassigned, ...) "
                             "with its closed_at")
        closed_at = _ts(item.closed_at, "closed_at")
        horizon = _ts(item.closed_at - timedelta(days=CLOSED_REVIEW_DAYS), "closed_at")
        with self._writing() as conn:
            conn.execute(
                "UPDATE review_items SET open = 0, claim_expires = 0, closed_at = ?, "
                "body = ? WHERE id = ?",
                (closed_at, json.dumps(item.to_dict(), separators=(",", ":")), item.id))
            conn.execute("DELETE FROM review_items WHERE open = 0 AND closed_at < ?",
                         (horizon,))

    def escalate_review(self, id: str) -> bool:
        with self._lock:
            cursor = self._connection().execute(
                "UPDATE review_items SET escalated = 1 WHERE id = ? AND open = 1 "
                "AND escalated = 0", (id,))
        return cursor.rowcount == 1

    # --- decisions made before the CRM record -------------------------------------------------

    def put_answer(self, key: str, answer: str, ttl_seconds: float,
                   entry: Precreated | None = None) -> None:
        _check_ttl(ttl_seconds)
        with self._writing() as conn:
            now = time.time()
            _expire_then_upsert(
                conn, "api_answers",
                "INSERT INTO api_answers (key, answer, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET answer = excluded.answer, "
                "expires = excluded.expires", [(key, answer, now + ttl_seconds)], now)
            if entry is not None:
                _keep_precreated(conn, entry, now, ttl_seconds)

    def answer(self, key: str) -> str | None:
        with self._lock:
            row = self._connection().execute(
                "SELECT answer FROM api_answers WHERE key = ? AND expires > ?",
                (key, time.time())).fetchone()
        return None if row is None else str(row[0])

    def claim_answer(self, key: str, claim: str, claim_seconds: float
                     ) -> tuple[bool, str | None]:
        _check_ttl(claim_seconds)
        with self._lock:
            conn = self._connection()
            # BEGIN IMMEDIATE: the answer check and the mark see no other writer in between.
            with self._transaction(conn, immediate=True):
                now = time.time()
                row = conn.execute("SELECT answer FROM api_answers WHERE key = ? AND expires > ?",
                                   (key, now)).fetchone()
                if row is not None:
                    return False, str(row[0])
                return _mark_seen(conn, claim, now, claim_seconds), None

    def put_precreated(self, entry: Precreated, ttl_seconds: float) -> None:
        _check_ttl(ttl_seconds)
        with self._writing() as conn:
            _keep_precreated(conn, entry, time.time(), ttl_seconds)

    def take_precreated(self, crm: str, object: str, email: str | None, domain: str | None,
                        now: datetime) -> Precreated | None:
        return self.take_precreated_many(crm, object, [(email, domain)], now)[0]

    def take_precreated_many(self, crm: str, object: str,
                             keys: Sequence[tuple[str | None, str | None]], now: datetime
                             ) -> list[Precreated | None]:
        at = _ts(now, "now")
        found: list[Precreated | None] = [None] * len(keys)
        values = sorted({v for pair in keys for v in pair if v})
        if not values:
            return found
        marks = ", ".join("?" * len(values))
        with self._lock:
            conn = self._connection()
            # Most records have no decision waiting: a plain read says so without taking the
            # write lock the workers' commits need.
            if conn.execute(
                    f"SELECT 1 FROM precreated WHERE crm = ? AND object = ? "  # noqa: S608 - placeholders only
                    f"AND (email IN ({marks}) OR domain IN ({marks})) LIMIT 1",
                    (crm, object, *values, *values)).fetchone() is None:
                return found
            # BEGIN IMMEDIATE: the reads and deletes see no other writer in between, so of
            # two processes taking the same entry exactly one gets it.
            with self._transaction(conn, immediate=True):
                wall = time.time()
                for i, (email, domain) in enumerate(keys):
                    for column, value in (("email", email), ("domain", domain)):
                        if not value:
                            continue
                        row = conn.execute(
                            f"SELECT id, body FROM precreated WHERE crm = ? AND object = ? "  # noqa: S608 - column from the tuple above
                            f"AND {column} = ? AND decided_at <= ? AND expires_at > ? "
                            "AND expires > ? ORDER BY decided_at, id LIMIT 1",
                            (crm, object, value, at, at, wall)).fetchone()
                        if row is not None:
                            conn.execute("DELETE FROM precreated WHERE id = ?", (row[0],))
                            found[i] = Precreated.from_json(str(row[1]))
                            break
        return found

def _keep_precreated(conn: sqlite3.Connection, entry: Precreated, now: float,
                     ttl_seconds: float) -> None:
    """Store `entry` (inside the caller's write transaction) until `now + ttl_seconds`."""
    _expire_then_upsert(
        conn, "precreated",
        "INSERT OR REPLACE INTO precreated (id, crm, object, email, domain, decided_at, "
        "expires_at, body, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(entry.id, entry.crm, entry.object, entry.email, entry.domain,
          _ts(entry.decided_at, "decided_at"), _ts(entry.expires_at, "expires_at"),
          entry.to_json(), now + ttl_seconds)], now)


def _mark_seen(conn: sqlite3.Connection, key: str, now: float, ttl_seconds: float) -> bool:
    """Mark `key` seen until `now + ttl_seconds` (inside the caller's write transaction);
    False when a live mark was there already."""
    return _expire_then_upsert(
        conn, "seen_keys",
        "INSERT INTO seen_keys (key, expires) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [(key, now + ttl_seconds)], now) == 1


def _expire_then_upsert(conn: sqlite3.Connection, table: str, upsert: str,
                        rows: Sequence[Sequence[Any]], now: float) -> int:
    """Inside the caller's write transaction: drop the rows of `table` lapsed by `now`, then
    run `upsert` for each of `rows`; how many rows it changed. Every lapsed row goes, not only
    these keys': that keeps the table bounded by its live window."""
    conn.execute(f"DELETE FROM {table} WHERE expires <= ?", (now,))  # noqa: S608 - our tables
    return conn.executemany(upsert, rows).rowcount


def _review(body: str, escalated: int) -> ReviewItem:
    item = ReviewItem.from_dict(json.loads(body))
    # The flag lives in its own column (set atomically); the body keeps the rest.
    return item if item.escalated or not escalated else replace(item, escalated=True)


def _check_ttl(ttl_seconds: float) -> None:
    """A lock must expire, and after a positive time: 0 or negative would never be held."""
    if not 0 < ttl_seconds < math.inf:
        raise ValueError(f"ttl_seconds must be a positive finite number, got {ttl_seconds!r}")


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def _history_revision(conn: sqlite3.Connection) -> str | None:
    """The file's history schema revision (Alembic's table), None before the first upgrade."""
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:  # no such table
        return None
    return None if row is None else str(row[0])


# Columns in the order of `_HistoryRows` rows: the label ids and trace id a decision's shape
# resolves to, then its own values. The id is the file's rowid sequence.
_INSERT_DECISION = (
    "INSERT INTO history_decisions (crm, object, owner, previous_owner, owner_crm_id, pool, "
    "rule, \"trigger\", trace_id, matched, record_id, outcome, created_at, decided_at, "
    "written_at, write_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COLUMNS = 16
# Rows per multi-row INSERT: one statement execution per row (executemany) costs SQLite a
# statement start and end each, AUTOINCREMENT's sqlite_sequence read and write among them; a
# hundred rows a statement cut the insert's CPU by a quarter. 1,500 parameters, far below
# SQLite's limit (32,766 since 3.32; 999 before, hence the check).
_ROWS_PER_INSERT = 100 if sqlite3.sqlite_version_info >= (3, 32) else 1
_INSERT_DECISIONS = _INSERT_DECISION + (
    ", (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" * (_ROWS_PER_INSERT - 1))


def _insert_decisions(conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> None:
    """`executemany(_INSERT_DECISION, rows)`, in the same order (so the same ids), at less cost:
    full groups of _ROWS_PER_INSERT rows a statement, the rest one by one."""
    whole = len(rows) - len(rows) % _ROWS_PER_INSERT
    if _ROWS_PER_INSERT > 1:
        flat = tuple(chain.from_iterable(rows[:whole]))
        step = _ROWS_PER_INSERT * _COLUMNS
        for at in range(0, len(flat), step):
            conn.execute(_INSERT_DECISIONS, flat[at:at + step])
    if whole < len(rows):
        conn.executemany(_INSERT_DECISION, rows[whole:])


_LABEL_KINDS = tuple(kind for _, kind in codec.LABEL_FIELDS)
_CACHE_SIZE = 4096
_Shape = tuple[Any, ...]


class _HistoryRows:
    """Decisions as `history_decisions` rows on the hot path (route-file writes a million).

    A run repeats a few dozen decision *shapes*: the same labels (crm, object, owner, previous
    owner, CRM id, pool, rule, trigger) and the same trace. A shape's label and trace ids are
    looked up once and kept as one tuple, keyed by the labels and the trace's identity (hashing
    the steps cost more than the rest of the row; the cache entry holds the trace, so its id
    cannot be reused by another object meanwhile). Ids found or inserted inside a transaction
    are cached only once it commits: a rolled-back insert leaves no id behind."""

    def __init__(self) -> None:
        self.shapes: dict[_Shape, tuple[tuple[int | None, ...], object]] = {}
        self.labels: dict[tuple[str, str], int] = {}
        self.traces: dict[str, int] = {}
        self._pending_shapes: dict[_Shape, tuple[tuple[int | None, ...], object]] = {}
        self._pending_labels: dict[tuple[str, str], int] = {}
        self._pending_traces: dict[str, int] = {}
        self._columns = codec.RowEncoder()  # kept: batches of a run share their instant

    def encode(self, decisions: Sequence[Decision]) -> tuple[list[Any], list[int]]:
        """The rows, and the indexes of those whose shape is not cached yet (`resolve` fills
        them in). Everything that can fail on bad input (a naive instant, an unknown outcome)
        fails here, before any transaction."""
        shapes = self.shapes
        columns = self._columns.columns
        rows: list[Any] = []
        unresolved: list[int] = []
        for d in decisions:
            tail, offsets = columns(d)  # (record id, outcome, 3 instants, error): the row's end
            # The matched set by identity too: `decide` gives one tuple object per set.
            key = (id(d.trace), d.rule, d.reason, d.owner, d.previous_owner, d.owner_crm_id,
                   d.pool, d.crm, d.object, d.trigger, offsets, id(d.matched))
            shape = shapes.get(key)
            if shape is None:
                unresolved.append(len(rows))
                rows.append((key, d, tail))
            else:
                rows.append(shape[0] + tail)
        return rows, unresolved

    def resolve(self, conn: sqlite3.Connection, rows: list[Any], unresolved: list[int]) -> None:
        """Fill in the rows `encode` could not, finding or inserting their label and trace ids
        within `conn`'s transaction."""
        pending = self._pending_shapes
        for i in unresolved:
            key, d, tail = rows[i]
            shape = self.shapes.get(key) or pending.get(key)
            if shape is None:
                labels = (d.crm, d.object, d.owner, d.previous_owner, d.owner_crm_id, d.pool,
                          d.rule, d.trigger)
                ids = tuple(None if text is None else self.label(conn, kind, text)
                            for kind, text in zip(_LABEL_KINDS, labels, strict=True))
                body = codec.trace_body(d.rule, d.reason, d.trace, key[10])
                matched = None if d.matched is None else self.label(
                    conn, codec.MATCHED, codec.matched_text(d.matched))
                # The entry holds the trace and the matched set: their ids key it, so neither
                # object may be freed (and its id reused) while it is cached.
                shape = pending[key] = (ids + (self._trace(conn, body), matched),
                                        (d.trace, d.matched))
            rows[i] = shape[0] + tail

    def label(self, conn: sqlite3.Connection, kind: str, text: str) -> int:
        key = (kind, text)
        found = self.labels.get(key)
        if found is None:
            found = self._pending_labels.get(key)
        if found is None:
            stored = codec.store_text(text)
            digest = codec.digest(kind, stored)
            conn.execute("INSERT INTO history_labels (kind, text, digest) VALUES (?, ?, ?) "
                         "ON CONFLICT (digest) DO NOTHING", (kind, stored, digest))
            row = conn.execute("SELECT id FROM history_labels WHERE digest = ?",
                               (digest,)).fetchone()
            found = self._pending_labels[key] = int(row[0])
        return found

    def _trace(self, conn: sqlite3.Connection, body: str) -> int:
        found = self.traces.get(body)
        if found is None:
            found = self._pending_traces.get(body)
        if found is None:
            digest = codec.digest(body)
            conn.execute("INSERT INTO history_traces (digest, body) VALUES (?, ?) "
                         "ON CONFLICT (digest) DO NOTHING", (digest, body))
            row = conn.execute("SELECT id FROM history_traces WHERE digest = ?",
                               (digest,)).fetchone()
            found = self._pending_traces[body] = int(row[0])
        return found

    def committed(self) -> None:
        if len(self.shapes) + len(self._pending_shapes) > _CACHE_SIZE:
            self.shapes.clear()
        if len(self.traces) + len(self._pending_traces) > _CACHE_SIZE:
            self.traces.clear()
        self.shapes.update(self._pending_shapes)
        self.labels.update(self._pending_labels)
        self.traces.update(self._pending_traces)
        self.rolled_back()

    def rolled_back(self) -> None:
        self._pending_shapes.clear()
        self._pending_labels.clear()
        self._pending_traces.clear()


def _statements(script: str) -> list[str]:
    """Split the schema on `;`, dropping `--` comments (the schema has no `;` in literals)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
