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
from datetime import UTC, datetime
from pathlib import Path

from sync.models import Decision, Outcome, TraceStep
from sync.state import OUTCOMES_WITH_LOAD, as_utc, check_limit, load_sort_key, merge_changes
from sync.state.base import ClosesOnExit, LoadRow, PoolChange, PoolSnapshot

# 2 added the pipeline bookkeeping tables, 3 the webhook dedupe keys, 4 the audit bodies table;
# every statement is IF NOT EXISTS, so an older file gains them the next time it is opened, and
# `decisions.body_id` is added to an older file's table in place (`_migrate`).
SCHEMA_VERSION = 4

# The audit trail's indexes, by name: `bulk_audit` drops and rebuilds them around a long run.
_DECISION_INDEXES = {
    "decisions_by_record":
        "CREATE INDEX IF NOT EXISTS decisions_by_record ON decisions (record_id, decided_at)",
    "decisions_by_owner":
        "CREATE INDEX IF NOT EXISTS decisions_by_owner ON decisions (owner, decided_at)",
    "decisions_by_time": "CREATE INDEX IF NOT EXISTS decisions_by_time ON decisions (decided_at)",
}

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
CREATE TABLE IF NOT EXISTS decisions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id  TEXT NOT NULL,
    crm        TEXT NOT NULL,
    object     TEXT NOT NULL,
    owner      TEXT,
    pool       TEXT,
    outcome    TEXT NOT NULL,
    decided_at TEXT,
    -- A row's body is in `bodies` (body_id), stored once however many rows share it: a file
    -- run repeats a few dozen bodies a million times. Rows written before version 4 hold it
    -- here, with body_id NULL; newer rows hold ''.
    body       TEXT NOT NULL,
    body_id    INTEGER
);
CREATE TABLE IF NOT EXISTS bodies (
    id   INTEGER PRIMARY KEY,
    body TEXT NOT NULL UNIQUE
);
-- (x, decided_at) indexes also carry the rowid, so `ORDER BY decided_at DESC, id DESC` with a
-- LIMIT is read straight off the index instead of sorting the whole trail.
""" + "".join(f"{statement};\n" for statement in _DECISION_INDEXES.values()) + """
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
        # Audit bodies by content: a file run repeats a few bodies a million times over.
        self._bodies: dict[tuple[object, ...], tuple[object, str]] = {}
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
            _migrate(conn)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

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

    @contextmanager
    def bulk_audit(self) -> Iterator[None]:
        """Around one long run of commits (`route-file`): when the audit trail is empty at the
        start, its indexes are dropped and built once at the end, a sort per index instead of a
        B-tree insert per row and index (a third of a million-row file's time).

        Every commit stays one transaction, so a run killed half-way leaves consistent state;
        only the indexes are missing then, and the next open of the file builds them (the schema
        is all IF NOT EXISTS). Readers meanwhile get the same rows, found by scanning.
        """
        with self._lock:
            conn = self._connection()
            with self._transaction(conn, immediate=True):
                empty = conn.execute("SELECT 1 FROM decisions LIMIT 1").fetchone() is None
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
        decision_rows = [_decision_row(d, self._bodies) for d in decisions]
        with self._lock:
            conn = self._connection()
            with self._transaction(conn, immediate=True):
                for pool, version in expected.items():
                    row = conn.execute(
                        "SELECT version FROM pools WHERE pool = ?", (pool,)
                    ).fetchone()
                    if (int(row[0]) if row is not None else 0) != version:
                        conn.execute("ROLLBACK")
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
                    'INSERT INTO pool_counts (pool, member, "window", count) VALUES (?, ?, ?, ?) '
                    'ON CONFLICT (pool, "window", member) DO UPDATE SET count = count + '
                    "excluded.count",
                    count_rows,
                )
                if decision_rows:
                    # Body ids are looked up afresh in each transaction (a few dozen distinct
                    # bodies a batch), never cached: a rolled-back insert leaves no id behind.
                    body_ids = {body: _body_id(conn, str(body))
                                for body in {row[7] for row in decision_rows}}
                    conn.executemany(
                        "INSERT INTO decisions "
                        "(record_id, crm, object, owner, pool, outcome, decided_at, body, "
                        "body_id) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?)",
                        [(*row[:7], body_ids[row[7]]) for row in decision_rows],
                    )
        return True

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
        with self._lock:
            conn = self._connection()
            with self._transaction(conn, immediate=True):
                row = conn.execute("SELECT until FROM pauses WHERE rep = ?", (rep,)).fetchone()
                if row is None:
                    return False
                conn.execute("DELETE FROM pauses WHERE rep = ?", (rep,))
        return row[0] is None or row[0] > now_ts

    # --- audit ------------------------------------------------------------------------------

    def decisions(
        self,
        record_id: str | None = None,
        rep: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[Decision]:
        check_limit(limit)
        where, args = _filters(since, until)
        if record_id is not None:
            where.append("record_id = ?")
            args.append(record_id)
        if rep is not None:
            where.append("owner = ?")
            args.append(rep)
        sql = ("SELECT record_id, crm, object, owner, pool, outcome, "
               "COALESCE(bodies.body, decisions.body) "
               "FROM decisions LEFT JOIN bodies ON bodies.id = decisions.body_id")
        if where:
            sql += " WHERE " + " AND ".join(where)
        # NULLs sort lowest in SQLite, so undated decisions come last in descending order.
        sql += " ORDER BY decided_at DESC, decisions.id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._connection().execute(sql, args).fetchall()
        return [_decision(*row) for row in rows]

    def load(self, since: datetime | None = None, until: datetime | None = None) -> list[LoadRow]:
        where, args = _filters(since, until)
        where += ["owner IS NOT NULL", f"outcome IN ({','.join('?' * len(OUTCOMES_WITH_LOAD))})"]
        args += list(OUTCOMES_WITH_LOAD)
        sql = (
            "SELECT owner, pool, outcome, COUNT(*) FROM decisions WHERE "
            + " AND ".join(where)
            + " GROUP BY owner, pool, outcome"
        )
        with self._lock:
            rows = self._connection().execute(sql, args).fetchall()
        return sorted(
            (LoadRow(rep=o, pool=p, outcome=out, count=int(n)) for o, p, out, n in rows),
            key=load_sort_key,
        )

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
        with self._lock:
            conn = self._connection()
            with self._transaction(conn, immediate=True):
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
        with self._lock:
            conn = self._connection()
            with self._transaction(conn, immediate=True):
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
                # Dropping every expired mark keeps the table bounded by the live window.
                conn.execute("DELETE FROM seen_keys WHERE expires <= ?", (now,))
                cursor = conn.execute(
                    "INSERT INTO seen_keys (key, expires) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (key, now + ttl_seconds),
                )
                return cursor.rowcount != 1

    def forget(self, key: str) -> None:
        with self._lock:
            conn = self._connection()
            with self._transaction(conn, immediate=True):
                conn.execute("DELETE FROM seen_keys WHERE key = ?", (key,))


def _check_ttl(ttl_seconds: float) -> None:
    """A lock must expire, and after a positive time: 0 or negative would never be held."""
    if not 0 < ttl_seconds < math.inf:
        raise ValueError(f"ttl_seconds must be a positive finite number, got {ttl_seconds!r}")


def _filters(since: datetime | None, until: datetime | None) -> tuple[list[str], list[object]]:
    """decided_at in [since, until): half-open, so adjacent report windows never double count."""
    where: list[str] = []
    args: list[object] = []
    if since is not None:
        where.append("decided_at >= ?")
        args.append(_ts(since, "since"))
    if until is not None:
        where.append("decided_at < ?")
        args.append(_ts(until, "until"))
    return where, args


# The stock trace step, stored as its rule name alone: most steps of most decisions are this.
_NO_MATCH = ("no_match", "conditions not met")
_BODY_CACHE_SIZE = 4096


def _decision_row(d: Decision, bodies: dict[tuple[object, ...], tuple[object, str]]
                  ) -> tuple[object, ...]:
    decided = None
    if d.decided_at is not None:
        # A batch shares its instant: format it once (the cache holds it beside the bodies).
        at = ("decided_at", d.decided_at)
        known = bodies.get(at)
        if known is None:
            known = bodies[at] = (None, _ts(d.decided_at, "decided_at"))
        decided = known[1]
    # The trace by identity: hashing its steps (dataclasses) cost more than the rest of the row,
    # and decisions that share a body share one trace object. The entry holds the trace, so
    # its id cannot be reused by another object while it is cached.
    key = (d.previous_owner, d.owner_crm_id, d.rule, d.reason, id(d.trace), d.trigger,
           d.created_at, d.decided_at, d.written_at, d.write_error)
    cached = bodies.get(key)
    if cached is None:
        if len(bodies) >= _BODY_CACHE_SIZE:
            bodies.clear()
        cached = bodies[key] = (d.trace, _body(d))
    return (d.record_id, d.crm, d.object, d.owner, d.pool, str(d.outcome), decided, cached[1])


def _body(d: Decision) -> str:
    """The audit body: what the row's columns do not already hold, defaults left out and the
    trace in short form (about 150 bytes where the full JSON took 650). Bodies of the older,
    full form (a `record_id` key) are still read."""
    body: dict[str, object] = {}
    if d.previous_owner is not None:
        body["p"] = d.previous_owner
    if d.owner_crm_id is not None:
        body["c"] = d.owner_crm_id
    if d.rule is not None:
        body["r"] = d.rule
    trace = d.trace
    # The reason of a rule win is the rule and its trace detail: rebuilt on read.
    if not (trace and d.rule is not None and trace[-1].result == "won"
            and d.reason == f"rule {d.rule}: {trace[-1].detail}"):
        body["m"] = d.reason
    if trace:
        body["t"] = [s.rule if (s.result, s.detail) == _NO_MATCH else [s.rule, s.result, s.detail]
                     for s in trace]
    if d.trigger != "file":
        body["g"] = d.trigger
    for name, value in (("ca", d.created_at), ("d", d.decided_at), ("w", d.written_at)):
        if value is not None:
            body[name] = value.isoformat()  # the instant as given, offset included
    if d.write_error is not None:
        body["e"] = d.write_error
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def _decision(record_id: str, crm: str, object: str, owner: str | None, pool: str | None,
              outcome: str, body: str) -> Decision:
    data = json.loads(body)
    if "record_id" in data:
        return Decision.from_dict(data)  # the older, full form
    trace = tuple(TraceStep(s, *_NO_MATCH) if isinstance(s, str) else TraceStep(*s)
                  for s in data.get("t", ()))
    rule = data.get("r")
    reason = data["m"] if "m" in data else f"rule {rule}: {trace[-1].detail}"
    created, decided, written = (data.get(k) for k in ("ca", "d", "w"))
    return Decision(
        record_id=record_id, object=object, crm=crm, outcome=Outcome(outcome),
        previous_owner=data.get("p"), owner=owner, owner_crm_id=data.get("c"), rule=rule,
        reason=reason, trace=trace, trigger=data.get("g", "file"), pool=pool,
        created_at=None if created is None else datetime.fromisoformat(created),
        decided_at=None if decided is None else datetime.fromisoformat(decided),
        written_at=None if written is None else datetime.fromisoformat(written),
        write_error=data.get("e"),
    )


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring an older file's tables to this schema in place (inside the setup transaction)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(decisions)")}
    if "body_id" not in columns:
        # Adding a nullable column rewrites nothing: the existing rows read it as NULL and keep
        # their bodies inline.
        conn.execute("ALTER TABLE decisions ADD COLUMN body_id INTEGER")


def _body_id(conn: sqlite3.Connection, body: str) -> int:
    """The id of `body` in `bodies`, inserting it when new (inside the caller's transaction)."""
    conn.execute("INSERT INTO bodies (body) VALUES (?) ON CONFLICT (body) DO NOTHING", (body,))
    row = conn.execute("SELECT id FROM bodies WHERE body = ?", (body,)).fetchone()
    return int(row[0])


def _statements(script: str) -> list[str]:
    """Split the schema on `;`, dropping `--` comments (the schema has no `;` in literals)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
