"""`History`: decisions and events in SQL (PostgreSQL or SQLite), written in batches, queried."""

from __future__ import annotations

import json
import math
import os
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Self

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    Select,
    create_engine,
    delete,
    event,
    func,
    literal,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry

from config.urls import redact_url, redact_urls
from sync.history import codec
from sync.history.schema import HEAD_REVISION
from sync.history.schema import decisions as D
from sync.history.schema import events as E
from sync.history.schema import labels as L
from sync.history.schema import traces as T
from sync.models import Decision, HistoryEvent, Outcome
from sync.state import OUTCOMES_WITH_LOAD, check_limit, load_sort_key
from sync.state.base import LoadRow

UPGRADE_COMMAND = "account-router db upgrade"
ACCEPTED_FORMS = ("postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB, "
                  "sqlite:///relative/path.db or sqlite:////absolute/path.db")
MIGRATIONS = Path(__file__).with_name("migrations")
# Rows per INSERT statement: SQLAlchemy's "insertmanyvalues" folds a batch into multi-row
# VALUES statements of this many rows, one round trip each (PostgreSQL takes up to 65,535
# parameters a statement: 16 columns x 2,000 rows stays under).
_PAGE = 2000
# Any constant: the transaction-scoped advisory lock that serialises concurrent upgrades.
_UPGRADE_LOCK = 0x6163_6374_726F_7574 & 0x7FFF_FFFF_FFFF_FFFF
_SHAPE_CACHE_SIZE = 4096
# Record ids per `latest` query: an IN list this long keeps each statement's parameters and
# plan small on both databases.
_LATEST_CHUNK = 500
# A row's label ids before they are resolved (crm ... trigger).
_NO_LABELS = (None,) * 8
# (row position, trace key if its id is unknown, label strings if their ids are, decision)
_Missing = tuple[int, "tuple[Any, ...] | None", "tuple[str | None, ...] | None", Decision]
_LABEL_KINDS = tuple(kind for _, kind in codec.LABEL_FIELDS)
# The trigger of a first-touch SLA re-route (sync/sla.py), whose assignment moves between reps.
SLA_TRIGGER = "sla"
_LOAD_CODES = tuple(codec.OUTCOME_CODES[Outcome(o)] for o in OUTCOMES_WITH_LOAD)


class SchemaOutOfDate(RuntimeError):
    """The database's history schema is not the one this code expects."""


@dataclass(frozen=True, slots=True)
class SpeedPoint:
    """One time bucket of speed to lead: seconds from the record's creation to its owner write
    (to the decision when never written), over the assigned and fallback decisions."""

    start: datetime
    count: int
    p50: float | None
    p95: float | None


@dataclass(frozen=True, slots=True)
class MatchedGroup:
    """`count` decisions of a window that matched the rules `matched` (None: not known) and
    were won by `rule` (None: by no rule) with `outcome`."""

    matched: tuple[str, ...] | None
    rule: str | None
    outcome: Outcome
    count: int


@dataclass(frozen=True, slots=True)
class FirstTouchRow:
    """Speed to first touch for one rep under one rule (None: no rule won, e.g. the top-level
    fallback) over a window: how many of their assignments they touched and how fast (p50 and
    p95 seconds from the owner write to the touch), how many first-touch SLAs they let lapse
    (`breaches`), and how many of those the router re-routed away from them (`reroutes`)."""

    rep: str
    rule: str | None
    touched: int
    p50: float | None
    p95: float | None
    breaches: int
    reroutes: int


def describe_error(exc: BaseException) -> str:
    """A database error in one line, URLs redacted: the driver's own message (SQLAlchemy's
    wrapper adds the statement, parameters and a link; none of it helps an operator)."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return redact_urls(lines[0].strip() if lines else type(orig).__name__)


def normalize_url(url: str) -> str:
    """`url` checked and with the psycopg 3 driver named; ValueError quoting it redacted."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"empty database URL; expected one of: {ACCEPTED_FORMS}")
    url = url.strip()
    shown = redact_url(url)
    if url.startswith("sqlite:"):
        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///") \
                or "?" in url or url.endswith(":memory:"):
            raise ValueError(f"bad SQLite database URL {shown!r}: a file path follows three "
                             f"slashes (expected one of: {ACCEPTED_FORMS})")
        return url
    scheme, sep, rest = url.partition("://")
    # psycopg2 is not installed: a plain postgresql:// URL means psycopg 3 here.
    if sep and scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        if not rest or rest.startswith("/") and "host=" not in rest:
            raise ValueError(f"bad PostgreSQL database URL {shown!r}: no host "
                             f"(expected one of: {ACCEPTED_FORMS})")
        return f"postgresql+psycopg://{rest}"
    raise ValueError(f"unsupported database URL {shown!r}; expected one of: {ACCEPTED_FORMS}")


def _sqlite_path(url: str) -> Path:
    return Path(url[len("sqlite:///"):])


class History:
    """The decision history on one database. Thread-safe; fork-safe (a child process opens its
    own connections). Labels and trace bodies are cached once committed: they are never deleted,
    so a cached id stays valid."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.shown_url = redact_url(self.url)
        self._lock = threading.RLock()
        self._labels: dict[tuple[str, str], int] = {}
        self._label_texts: dict[int, str] = {}
        self._traces: dict[str, int] = {}
        self._trace_bodies: dict[int, str] = {}
        self._label_sets: dict[tuple[str | None, ...], tuple[int | None, ...]] = {}
        self._trace_keys: dict[tuple[Any, ...], int] = {}
        self._matched_ids: dict[tuple[str, ...], int] = {}  # a matched set -> its label id
        self._engine = self._create_engine()
        self._pid = os.getpid()
        self.dialect = self._engine.dialect.name
        self._insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert

    def _create_engine(self) -> Engine:
        if self.url.startswith("sqlite:"):
            _sqlite_path(self.url).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(self.url, connect_args={"timeout": 30.0})

            # pysqlite's own transaction handling defers BEGIN and cannot take the write lock
            # up front: emit BEGIN ourselves (the SQLAlchemy recipe), IMMEDIATE for writes, so
            # two processes upgrading or inserting wait for each other instead of failing with
            # "database is locked" on lock upgrade.
            @event.listens_for(engine, "connect")
            def _connect(dbapi: DBAPIConnection, _entry: ConnectionPoolEntry) -> None:
                dbapi.isolation_level = None  # sqlite3: we issue BEGIN (below)
                cursor = dbapi.cursor()
                # WAL: readers (the dashboard) never block the router's writes.
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

            @event.listens_for(engine, "begin")
            def _begin(conn: Connection) -> None:
                write = conn.get_execution_options().get("write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

            return engine
        # pre-ping: a PostgreSQL restart (the outbox waits it out) must not leave dead
        # connections in the pool; connect_timeout: an unreachable host fails in seconds.
        return create_engine(self.url, pool_pre_ping=True,
                             connect_args={"connect_timeout": 10})

    def _engine_here(self) -> Engine:
        # A forked child (a Celery prefork worker) must not share its parent's sockets.
        if self._pid != os.getpid():
            self._engine.dispose(close=False)
            self._pid = os.getpid()
        return self._engine

    def _write(self) -> Any:
        """A write transaction (BEGIN IMMEDIATE on SQLite)."""
        return self._engine_here().execution_options(write=True).begin()

    def _read(self) -> Any:
        return self._engine_here().connect()

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"History({self.shown_url!r})"

    # --- schema -----------------------------------------------------------------------------

    def current_revision(self) -> str | None:
        """The Alembic revision the database is at (None: no history schema yet)."""
        from alembic.runtime.migration import MigrationContext

        with self._read() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
            conn.rollback()
        return revision

    def is_current(self) -> bool:
        return self.current_revision() == HEAD_REVISION

    def require_current(self) -> None:
        revision = self.current_revision()
        if revision != HEAD_REVISION:
            raise SchemaOutOfDate(
                f"the history database {self.shown_url} is at schema revision "
                f"{revision or 'none'}, this version needs {HEAD_REVISION}: "
                f"run `{UPGRADE_COMMAND}`"
            )

    def upgrade(self, revision: str = "head") -> None:
        """Apply the migrations up to head (or `revision`: tests of a later migration start
        from an older schema), in one transaction (PostgreSQL and SQLite both have
        transactional DDL), serialised against concurrent upgrades."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        # `%` would be read as configparser interpolation.
        config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
        with self._lock, self._write() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, revision)

    # --- labels and traces ------------------------------------------------------------------

    def _label_ids(self, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Ids of (kind, text) labels, inserting the new ones in their own committed transaction
        (so that only committed ids are cached) and re-reading them: a concurrent writer's
        insert of the same label wins the conflict and we read its id."""
        cache = self._labels
        missing = {key for key in wanted if key not in cache}
        if missing:
            found: dict[tuple[str, str], int] = {}
            with self._lock:
                with self._write() as conn:
                    ensure_labels(conn, missing, found, self._insert)
                # Cached only now, once committed.
                cache.update(found)
                self._label_texts.update((i, key[1]) for key, i in found.items())
        return cache

    def _trace_ids(self, bodies: Iterable[str]) -> dict[str, int]:
        cache = self._traces
        missing = {body for body in bodies if body not in cache}
        if missing:
            found: dict[str, int] = {}
            with self._lock:
                with self._write() as conn:
                    ensure_traces(conn, missing, found, self._insert)
                cache.update(found)
                self._trace_bodies.update((i, body) for body, i in found.items())
        return cache

    def _texts(self, conn: Connection, ids: Iterable[int | None]) -> dict[int, str]:
        known = self._label_texts
        missing = {i for i in ids if i is not None and i not in known}
        for chunk in _chunks(sorted(missing), 500):
            for label_id, label_text in conn.execute(
                    select(L.c.id, L.c.text).where(L.c.id.in_(chunk))):
                known[label_id] = codec.load_text(label_text)
        return known

    def _bodies(self, conn: Connection, ids: Iterable[int]) -> dict[int, str]:
        known = self._trace_bodies
        missing = {i for i in ids if i not in known}
        for chunk in _chunks(sorted(missing), 500):
            for trace_id, body in conn.execute(
                    select(T.c.id, T.c.body).where(T.c.id.in_(chunk))):
                known[trace_id] = body
        return known

    def _find_label(self, kind: str, value: str) -> int | None:
        """The id of an existing label, for filters; None when never stored."""
        key = (kind, value)
        if key in self._labels:
            return self._labels[key]
        with self._read() as conn:
            found = conn.execute(select(L.c.id).where(
                L.c.digest == codec.digest(kind, codec.store_text(value)))).scalar()
        if found is not None:
            self._labels[key] = int(found)
            self._label_texts[int(found)] = value
        return None if found is None else int(found)

    # --- writes -----------------------------------------------------------------------------

    def record(self, rows: Sequence[tuple[int, Decision]]) -> int:
        """Insert decisions under their ids; an id already stored is skipped (the outbox may
        deliver a batch twice). Returns how many were new."""
        unique = {int(i): d for i, d in reversed(rows)}  # the first of duplicate ids wins
        if not unique:
            return 0
        # Ascending ids. Ids grow with time, so the id and decided_at B-trees then only ever
        # append to their rightmost page, which PostgreSQL splits 90/10; a batch in any other
        # order splits pages in half and leaves both indexes ~1.8x the size (297 -> 247 bytes a
        # decision in benchmarks/history.py).
        table_rows = self._rows(unique)
        with self._write() as conn:
            if self.dialect == "postgresql":
                return _copy_decisions(conn, table_rows)
            stmt = self._insert(D).on_conflict_do_nothing(index_elements=[D.c.id]) \
                .returning(D.c.id)
            params = [dict(zip(_STAGE_COLUMNS, row, strict=True)) for row in table_rows]
            return sum(len(conn.execute(stmt, chunk).all()) for chunk in _chunks(params, _PAGE))

    def _rows(self, unique: Mapping[int, Decision]) -> list[list[Any]]:
        """`history_decisions` rows (columns in table order) of `unique`, ascending ids.

        The hot path of the outbox flush, so one pass a decision with two cached lookups: the
        eight label strings to their ids, and the trace (rule, reason, steps, UTC offsets) to
        its trace id, by content (decisions from the outbox share no objects; encoding a trace
        cost more than the rest of the row, and a run repeats a few dozen). Ids are cached
        once committed (`_label_ids`, `_trace_ids` commit them first) and are never deleted."""
        label_sets, trace_ids = self._label_sets, self._trace_keys
        columns = codec.RowEncoder().columns
        matched_ids = self._matched_ids
        unmatched: list[int] = []  # rows whose matched set's label id is not cached
        unique_rows: list[Decision] = []
        rows: list[list[Any]] = []
        missing: list[_Missing] = []
        for i in sorted(unique):
            d = unique[i]
            unique_rows.append(d)
            (record_id, outcome, created, decided, written, error), offsets = columns(d)
            trace = d.trace
            if type(trace) is not tuple:  # a trace built as a list still keys the cache
                trace = tuple(trace)
            trace_key = (d.rule, d.reason, trace, offsets)
            label_key = (d.crm, d.object, d.owner, d.previous_owner, d.owner_crm_id, d.pool,
                         d.rule, d.trigger)
            labels = label_sets.get(label_key)
            trace_id = trace_ids.get(trace_key)
            if labels is None or trace_id is None:
                # Only what is missing, so `_fill` hashes no trace it does not need (a tuple
                # of steps is hashed afresh at every lookup).
                missing.append((len(rows), None if trace_id is not None else trace_key,
                                None if labels is not None else label_key, d))
            matched = d.matched
            matched_id = None if matched is None else matched_ids.get(matched)
            if matched is not None and matched_id is None:
                unmatched.append(len(rows))
            rows.append([i, created, decided, written, *(labels or _NO_LABELS), trace_id,
                         outcome, record_id, error, matched_id])
        if missing:
            self._fill(rows, missing)
        if unmatched:
            self._fill_matched(rows, [unique_rows[k] for k in unmatched], unmatched)
        return rows

    def _fill_matched(self, rows: list[list[Any]], decisions: list[Decision],
                      positions: list[int]) -> None:
        """The matched-set label ids `_rows` had not cached: inserted, read back, filled in."""
        matched_ids = self._matched_ids
        if len(matched_ids) >= _SHAPE_CACHE_SIZE:
            matched_ids.clear()
        sets = {d.matched for d in decisions if d.matched is not None}
        texts = {names: codec.matched_text(names) for names in sets}
        labels = self._label_ids({(codec.MATCHED, text) for text in texts.values()})
        matched_ids.update((names, labels[(codec.MATCHED, text)])
                           for names, text in texts.items())
        for position, d in zip(positions, decisions, strict=True):
            assert d.matched is not None  # only those were left unresolved
            rows[position][16] = matched_ids[d.matched]

    def _fill(self, rows: list[list[Any]], missing: list[_Missing]) -> None:
        """Resolve the label sets and traces `_rows` had not cached: inserted (each in its own
        committed transaction) and read back, then written into the rows."""
        label_sets, trace_ids = self._label_sets, self._trace_keys
        if len(label_sets) >= _SHAPE_CACHE_SIZE:
            label_sets.clear()
        if len(trace_ids) >= _SHAPE_CACHE_SIZE:
            trace_ids.clear()
        bodies: dict[tuple[Any, ...], str] = {}
        new_sets: set[tuple[str | None, ...]] = set()
        for _, trace_key, label_key, d in missing:
            if trace_key is not None and trace_key not in bodies:
                bodies[trace_key] = codec.trace_body(d.rule, d.reason, d.trace, trace_key[3])
            if label_key is not None:
                new_sets.add(label_key)
        labels = self._label_ids({(kind, text) for key in new_sets
                                  for kind, text in zip(_LABEL_KINDS, key, strict=True)
                                  if text is not None})
        resolved_sets = {key: tuple(None if text is None else labels[(kind, text)]
                                    for kind, text in zip(_LABEL_KINDS, key, strict=True))
                         for key in new_sets}
        label_sets.update(resolved_sets)
        ids = self._trace_ids(set(bodies.values())) if bodies else {}
        resolved_traces = {key: ids[body] for key, body in bodies.items()}
        trace_ids.update(resolved_traces)
        for position, trace_key, label_key, _ in missing:
            row = rows[position]
            if label_key is not None:
                row[4:12] = resolved_sets[label_key]
            if trace_key is not None:
                row[12] = resolved_traces[trace_key]

    def record_events(self, events: Sequence[HistoryEvent]) -> int:
        """Insert events under their ids; an id already stored is skipped. Returns how many
        were new. ValueError naming the event when its data is not JSON."""
        unique = {int(e.id): e for e in reversed(events)}
        if not unique:
            return 0
        data = {i: codec.event_data(e) for i, e in unique.items()}
        labels = self._label_ids({
            key for e in unique.values()
            for key in ((codec.CRM, e.crm), (codec.OBJECT, e.object), (codec.EVENT, e.kind))
        })
        params = [{
            "id": i, "decision_id": e.decision_id, "record_id": codec.store_text(e.record_id),
            "crm": labels[(codec.CRM, e.crm)], "object": labels[(codec.OBJECT, e.object)],
            "kind": labels[(codec.EVENT, e.kind)], "at": codec.to_us(e.at, "at"),
            "data": data[i],
        } for i, e in unique.items()]
        stmt = self._insert(E).on_conflict_do_nothing(index_elements=[E.c.id]) \
            .returning(E.c.id)
        with self._write() as conn:
            return sum(len(conn.execute(stmt, chunk).all()) for chunk in _chunks(params, _PAGE))

    def prune(self, before: datetime) -> int:
        """Delete decisions decided before `before`, their events, and any event older than
        `before`; returns how many decisions went. Undated decisions are kept."""
        cut = codec.to_us(before, "before")
        with self._write() as conn:
            old = select(D.c.id).where(D.c.decided_at < cut)
            conn.execute(delete(E).where(or_(E.c.at < cut, E.c.decision_id.in_(old))))
            return int(conn.execute(delete(D).where(D.c.decided_at < cut)).rowcount)

    # --- reads ------------------------------------------------------------------------------

    def decision_ids(
        self,
        record_id: str | None = None,
        rep: str | None = None,
        rule: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[tuple[int, Decision]]:
        """(id, decision) pairs, newest first (by decided_at, then id; undated last), filtered
        by record id, owner rep, rule, outcome and decided_at in [since, until)."""
        check_limit(limit)
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        where = self._where(record_id, rep, rule, outcome, since, until)
        if where is None:
            return []
        # Dated decisions first, in the order a backward scan of the decided_at (or owner,
        # decided_at) index gives: `DESC NULLS LAST` in one statement would not match it on
        # PostgreSQL (where NULLs sort high) and sort the whole table for a page of 50.
        dated = _DECISION_COLUMNS.where(*where, D.c.decided_at.is_not(None)) \
            .order_by(D.c.decided_at.desc(), D.c.id.desc()).limit(limit).offset(offset or None)
        found = self._decisions(dated)
        if since is not None or until is not None or (limit is not None
                                                       and len(found) >= limit):
            return found  # a window has no undated rows; or the page is full
        # Then the undated ones (none in practice: every decision the router makes is dated).
        if found:
            skip = 0
        elif offset:
            with self._read() as conn:
                dated_count = conn.execute(select(func.count()).select_from(D).where(
                    *where, D.c.decided_at.is_not(None))).scalar_one()
            skip = max(0, offset - int(dated_count))
        else:
            skip = 0
        undated = _DECISION_COLUMNS.where(*where, D.c.decided_at.is_(None)) \
            .order_by(D.c.id.desc()).offset(skip or None) \
            .limit(None if limit is None else limit - len(found))
        return found + self._decisions(undated)

    def decisions(
        self,
        record_id: str | None = None,
        rep: str | None = None,
        rule: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Decision]:
        """Decisions, newest first; the filters of `decision_ids`."""
        return [d for _, d in self.decision_ids(record_id, rep, rule, outcome, since, until,
                                                limit, offset)]

    def decision(self, id: int) -> Decision | None:
        found = self._decisions(_DECISION_COLUMNS.where(D.c.id == int(id)))
        return found[0][1] if found else None

    def latest(self, crm: str, object: str, record_ids: Sequence[str]) -> dict[str, Decision]:
        """The newest decision (by decided_at, then id; an undated one only when a record has
        nothing else) of each of `record_ids` recorded for `crm` and `object` (the record kind:
        account, lead, contact); records never decided are absent. One query per 500 ids, each
        an IN list on the record_id index."""
        crm_id = self._find_label(codec.CRM, crm)
        object_id = self._find_label(codec.OBJECT, object)
        if crm_id is None or object_id is None:
            return {}  # nothing was ever recorded for this CRM object
        stored = {codec.store_text(i): i for i in dict.fromkeys(record_ids)}
        found: dict[str, Decision] = {}
        for chunk in _chunks(sorted(stored), _LATEST_CHUNK):
            # The newest row per record, picked in the database so only the winners travel
            # and are decoded: a record re-routed by every sweep may have hundreds.
            # `decided_at IS NULL` first: NULLs sort high on PostgreSQL and low on SQLite.
            newest = func.row_number().over(
                partition_by=D.c.record_id,
                order_by=(D.c.decided_at.is_(None), D.c.decided_at.desc(), D.c.id.desc()),
            ).label("newest")
            ranked = select(D.c.id, newest).where(
                D.c.record_id.in_(chunk), D.c.crm == crm_id, D.c.object == object_id,
            ).subquery()
            winners = select(ranked.c.id).where(ranked.c.newest == 1)
            for _, d in self._decisions(_DECISION_COLUMNS.where(D.c.id.in_(winners))):
                found[d.record_id] = d
        return found

    def events(
        self,
        decision_id: int | None = None,
        record_id: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[HistoryEvent]:
        """Events, newest first (by `at`, then id), filtered; `at` in [since, until)."""
        check_limit(limit)
        where: list[ColumnElement[bool]] = []
        if decision_id is not None:
            where.append(E.c.decision_id == int(decision_id))
        if record_id is not None:
            where.append(E.c.record_id == codec.store_text(record_id))
        if kind is not None:
            kind_id = self._find_label(codec.EVENT, kind)
            if kind_id is None:
                return []
            where.append(E.c.kind == kind_id)
        where += _window(E.c.at, since, until)
        stmt = select(E).where(*where).order_by(E.c.at.desc(), E.c.id.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
            texts = self._texts(conn, {i for r in rows for i in (r.crm, r.object, r.kind)})
        return [HistoryEvent(
            id=int(r.id), decision_id=r.decision_id, record_id=codec.load_text(r.record_id),
            crm=texts[r.crm], object=texts[r.object], kind=texts[r.kind],
            at=codec.from_us(r.at) or codec.EPOCH, data=json.loads(r.data),
        ) for r in rows]

    def load(self, since: datetime | None = None, until: datetime | None = None) -> list[LoadRow]:
        """Assignments (outcomes assigned/fallback with an owner) grouped by rep, pool, outcome,
        decided_at in [since, until). A first-touch SLA re-route (trigger `sla`) that landed
        moves its assignment from the rep who breached (`previous_owner`) to the new owner,
        as the pool counts do; one that did not land counts for nobody."""
        where = [D.c.owner.is_not(None), D.c.outcome.in_(_LOAD_CODES),
                 *_window(D.c.decided_at, since, until)]
        sla = self._find_label(codec.TRIGGER, SLA_TRIGGER)
        if sla is not None:
            where.append(or_(D.c.trigger != sla, D.c.written_at.is_not(None)))
        stmt = (select(D.c.owner, D.c.pool, D.c.outcome, func.count()).where(*where)
                .group_by(D.c.owner, D.c.pool, D.c.outcome))
        with self._read() as conn:
            counts: Counter[tuple[int, int | None, int]] = Counter(
                {(owner, pool, outcome): int(n)
                 for owner, pool, outcome, n in conn.execute(stmt)})
            if sla is not None:
                moved = (select(D.c.previous_owner, D.c.pool, D.c.outcome, func.count())
                         .where(D.c.trigger == sla, D.c.written_at.is_not(None),
                                D.c.previous_owner.is_not(None),
                                D.c.outcome.in_(_LOAD_CODES),
                                *_window(D.c.decided_at, since, until))
                         .group_by(D.c.previous_owner, D.c.pool, D.c.outcome))
                for owner, pool, outcome, n in conn.execute(moved):
                    counts[(owner, pool, outcome)] -= int(n)
            # A breacher whose assignment was made before the window: nothing to take from.
            rows = [(k, n) for k, n in counts.items() if n > 0]
            texts = self._texts(conn, {i for (o, p, _), _ in rows for i in (o, p)})
        return sorted(
            (LoadRow(rep=texts[owner], pool=None if pool is None else texts[pool],
                     outcome=str(codec.OUTCOMES_BY_CODE[outcome]), count=n)
             for (owner, pool, outcome), n in rows),
            key=load_sort_key,
        )

    def outcome_counts(self, since: datetime | None = None,
                       until: datetime | None = None) -> dict[str, int]:
        """Decisions per outcome in [since, until); every outcome is present (0 when none)."""
        stmt = select(D.c.outcome, func.count()).where(
            *_window(D.c.decided_at, since, until)).group_by(D.c.outcome)
        counts = {str(o): 0 for o in codec.OUTCOME_CODES}
        with self._read() as conn:
            for code, n in conn.execute(stmt):
                counts[str(codec.OUTCOMES_BY_CODE[code])] = int(n)
        return counts

    def rule_hits(self, since: datetime | None = None,
                  until: datetime | None = None) -> dict[str, int]:
        """Decisions per winning rule in [since, until); "" counts those no rule won."""
        stmt = select(D.c.rule, func.count()).where(
            *_window(D.c.decided_at, since, until)).group_by(D.c.rule)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
            texts = self._texts(conn, {r[0] for r in rows})
        hits = {"" if rule is None else texts[rule]: int(n) for rule, n in rows}
        return dict(sorted(hits.items(), key=lambda item: (-item[1], item[0])))

    def matched_groups(self, since: datetime | None = None, until: datetime | None = None
                       ) -> list[MatchedGroup]:
        """Decisions in [since, until) grouped by the rules they matched, the winning rule and
        the outcome (what `overlaps` needs of each record), counted in SQL: a window holds a
        handful of distinct groups however many decisions. `matched` None: decisions that do
        not carry the set (decided before it was recorded, or not by the rules)."""
        stmt = select(D.c.matched, D.c.rule, D.c.outcome, func.count()).where(
            *_window(D.c.decided_at, since, until)).group_by(D.c.matched, D.c.rule, D.c.outcome)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
            texts = self._texts(conn, {i for r in rows for i in r[:2]})
        return [MatchedGroup(matched=None if m is None else codec.parse_matched(texts[m]),
                             rule=None if rule is None else texts[rule],
                             outcome=codec.OUTCOMES_BY_CODE[code], count=int(n))
                for m, rule, code, n in rows]

    def speed_to_lead(self, since: datetime, until: datetime, buckets: int) -> list[SpeedPoint]:
        """[since, until) cut into `buckets` equal spans by decided_at; per span, how many
        assigned or fallback decisions had a creation time, and the p50/p95 of their seconds
        from creation to the owner write (to the decision when never written), interpolated
        like PostgreSQL's percentile_cont."""
        if buckets < 1:
            raise ValueError(f"buckets must be >= 1, got {buckets}")
        start, end = codec.to_us(since, "since"), codec.to_us(until, "until")
        assert start is not None and end is not None
        if end <= start:
            raise ValueError("until must be after since")
        width = max(1, math.ceil((end - start) / buckets))
        seconds = (func.coalesce(D.c.written_at, D.c.decided_at) - D.c.created_at) / 1e6
        bucket = ((D.c.decided_at - start) // width).label("bucket")
        where = (D.c.created_at.is_not(None), D.c.outcome.in_(_LOAD_CODES),
                 D.c.decided_at >= start, D.c.decided_at < end)
        found: dict[int, tuple[int, float | None, float | None]] = {}
        with self._read() as conn:
            if self.dialect == "postgresql":
                # One aggregate per bucket over its own decided_at range (a LATERAL join on the
                # bucket numbers), not GROUP BY bucket: the grouped form sorted the whole window
                # by bucket first (300k rows over 30 days, spilling to disk) before each
                # percentile sorted its group again; 394 -> ~170 ms on 1M decisions.
                # benchmarks/history.py measures it.
                number = func.generate_series(0, buckets - 1).table_valued("b").render_derived()
                lo = literal(start, BigInteger()) + number.c.b * literal(width, BigInteger())
                per = select(
                    func.count().label("n"),
                    func.percentile_cont(postgresql.array([0.5, 0.95]))
                    .within_group(seconds).label("p"),
                ).where(
                    D.c.created_at.is_not(None), D.c.outcome.in_(_LOAD_CODES),
                    D.c.decided_at >= lo,
                    D.c.decided_at < func.least(lo + literal(width, BigInteger()), end),
                ).lateral("per")
                stmt = select(number.c.b, per.c.n, per.c.p).select_from(number.join(per, true()))
                for b, n, p in conn.execute(stmt):
                    if n:
                        found[int(b)] = (int(n), float(p[0]), float(p[1]))
            else:
                values: dict[int, list[float]] = {}
                for b, s in conn.execute(select(bucket, seconds).where(*where)):
                    values.setdefault(int(b), []).append(float(s))
                for b, vals in values.items():
                    vals.sort()
                    found[b] = (len(vals), _percentile(vals, 0.5), _percentile(vals, 0.95))
        points = []
        for b in range(buckets):
            n, p50, p95 = found.get(b, (0, None, None))
            points.append(SpeedPoint(start=since + timedelta(microseconds=b * width),
                                     count=n, p50=p50, p95=p95))
        return points

    def first_touch(self, since: datetime | None = None, until: datetime | None = None
                    ) -> list[FirstTouchRow]:
        """Speed to first touch per rep and rule from the `touched`, `sla_breach` and
        `rerouted` events in [since, until) (by the event's instant), ordered by rep then rule;
        percentiles interpolated like PostgreSQL's percentile_cont. Breaches and re-routes
        count against the rep who let the SLA lapse."""
        seconds: dict[tuple[str, str | None], list[float]] = {}
        breaches: Counter[tuple[str, str | None]] = Counter()
        reroutes: Counter[tuple[str, str | None]] = Counter()
        for found in self.events(kind="touched", since=since, until=until):
            rep, value = found.data.get("rep"), found.data.get("seconds")
            if isinstance(rep, str) and isinstance(value, int | float):
                seconds.setdefault((rep, _rule(found.data)), []).append(float(value))
        for kind, counter, who in (("sla_breach", breaches, "rep"),
                                   ("rerouted", reroutes, "from")):
            for found in self.events(kind=kind, since=since, until=until):
                rep = found.data.get(who)
                if isinstance(rep, str):
                    counter[(rep, _rule(found.data))] += 1
        rows = []
        for key in sorted(seconds.keys() | breaches.keys() | reroutes.keys(),
                          key=lambda k: (k[0], k[1] is not None, k[1] or "")):
            values = sorted(seconds.get(key, ()))
            rows.append(FirstTouchRow(
                rep=key[0], rule=key[1], touched=len(values),
                p50=_percentile(values, 0.5) if values else None,
                p95=_percentile(values, 0.95) if values else None,
                breaches=breaches[key], reroutes=reroutes[key]))
        return rows

    # --- helpers ----------------------------------------------------------------------------

    def _where(self, record_id: str | None, rep: str | None, rule: str | None,
               outcome: str | None, since: datetime | None, until: datetime | None,
               ) -> list[ColumnElement[bool]] | None:
        """The WHERE terms of a decision query; None when a named label was never stored (so
        nothing can match)."""
        where: list[ColumnElement[bool]] = []
        if record_id is not None:
            where.append(D.c.record_id == codec.store_text(record_id))
        for column, kind, value in ((D.c.owner, codec.OWNER, rep), (D.c.rule, codec.RULE, rule)):
            if value is not None:
                label_id = self._find_label(kind, value)
                if label_id is None:
                    return None
                where.append(column == label_id)
        if outcome is not None:
            try:
                code = codec.OUTCOME_CODES[Outcome(outcome)]
            except ValueError:
                raise ValueError(f"unknown outcome {outcome!r}; expected one of: "
                                 f"{', '.join(str(o) for o in Outcome)}") from None
            where.append(D.c.outcome == code)
        where += _window(D.c.decided_at, since, until)
        return where

    def _decisions(self, stmt: Select[Any]) -> list[tuple[int, Decision]]:
        with self._read() as conn:
            rows = conn.execute(stmt).all()
            texts = self._texts(conn, {i for r in rows for i in (*r[2:10], r[16])})
            bodies = self._bodies(conn, {r[14] for r in rows})
        out = []
        for r in rows:
            def label(i: int | None) -> str | None:
                return None if i is None else texts[i]

            crm, obj, trigger = texts[r[2]], texts[r[3]], texts[r[9]]
            out.append((int(r[0]), codec.decode(codec.EncodedDecision(
                record_id=r[1], crm=crm, object=obj, outcome=r[10], owner=label(r[4]),
                previous_owner=label(r[5]), owner_crm_id=label(r[6]), pool=label(r[7]),
                rule=label(r[8]), trigger=trigger, created_at=r[11], decided_at=r[12],
                written_at=r[13], body=bodies[r[14]], write_error=r[15],
                matched=label(r[16]),
            ))))
        return out


_DECISION_COLUMNS = select(
    D.c.id, D.c.record_id, D.c.crm, D.c.object, D.c.owner, D.c.previous_owner,
    D.c.owner_crm_id, D.c.pool, D.c.rule, D.c.trigger, D.c.outcome, D.c.created_at,
    D.c.decided_at, D.c.written_at, D.c.trace_id, D.c.write_error, D.c.matched,
)


def _window(column: Any, since: datetime | None,
            until: datetime | None) -> list[ColumnElement[bool]]:
    """`column` in [since, until): half-open, so adjacent report windows never double count."""
    where = []
    if since is not None:
        where.append(column >= codec.to_us(since, "since"))
    if until is not None:
        where.append(column < codec.to_us(until, "until"))
    return where


def _rule(data: Mapping[str, Any]) -> str | None:
    rule = data.get("rule")
    return rule if isinstance(rule, str) else None


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (PostgreSQL's percentile_cont)."""
    pos = q * (len(values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _labels(d: Decision) -> tuple[str | None, ...]:
    """`d`'s label strings in `codec.LABEL_FIELDS` order (the table's column order)."""
    return (d.crm, d.object, d.owner, d.previous_owner, d.owner_crm_id, d.pool, d.rule,
            d.trigger)


def decision_params(id: int | None, e: codec.EncodedDecision,
                    labels: Mapping[tuple[str, str], int],
                    traces: Mapping[str, int]) -> dict[str, Any]:
    """The `history_decisions` row of an encoded decision, labels and body as their ids."""
    row: dict[str, Any] = {
        "id": id, "record_id": e.record_id, "outcome": e.outcome,
        "created_at": e.created_at, "decided_at": e.decided_at, "written_at": e.written_at,
        "trace_id": traces[e.body], "write_error": e.write_error,
    }
    for name, kind in codec.LABEL_FIELDS:
        value = getattr(e, name)
        row[name] = None if value is None else labels[(kind, value)]
    return row


# A session-private staging table: COPY fills it, one INSERT moves the new rows over, and
# the commit empties it. Created on first use by each connection (IF NOT EXISTS: a pooled
# connection already has it; quietly, as the notice it would raise is noise).
_STAGE = "history_decisions_stage"
_STAGE_DDL = (
    "SET LOCAL client_min_messages = warning; "
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (LIKE {D.name}) ON COMMIT DELETE ROWS"
)
_STAGE_COLUMNS = tuple(c.name for c in D.columns)


def _copy_decisions(conn: Connection, rows: Sequence[Sequence[Any]]) -> int:
    """Insert `rows` (columns in table order, ascending ids) into history_decisions on
    PostgreSQL, skipping ids already there; how many were new. COPY rather than a multi-row
    INSERT: psycopg parses a VALUES statement of thousands of placeholders in Python, which
    held the batch insert at ~3,500 decisions/s; COPY streams the rows as they are.

    A batch is nearly always new (the outbox hands one over twice only when a flusher died
    between storing it and removing it), so it is first COPied straight into the table under a
    savepoint: each row written once. Only when an id is already there (a unique violation,
    rolled back to the savepoint) does it go through a staging table and INSERT ... ON CONFLICT
    DO NOTHING, which writes every row twice."""
    import psycopg  # PostgreSQL only: embedded SQLite never pays the import

    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)  # the engine is postgresql+psycopg
    columns = ", ".join(_STAGE_COLUMNS)
    statement = "SAVEPOINT history_copy"
    try:
        with raw.cursor() as cursor:
            cursor.execute(statement)
            statement = f"COPY {D.name} ({columns}) FROM STDIN"
            try:
                with cursor.copy(statement) as copy:
                    for row in rows:
                        copy.write_row(row)
            except psycopg.errors.UniqueViolation:
                cursor.execute("ROLLBACK TO SAVEPOINT history_copy")
            else:
                cursor.execute("RELEASE SAVEPOINT history_copy")
                return len(rows)
            statement = _STAGE_DDL
            cursor.execute(statement)
            statement = f"COPY {_STAGE} ({columns}) FROM STDIN"
            with cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
            # The heap scan returns the rows in COPY order: still ascending ids.
            statement = (f"INSERT INTO {D.name} ({columns}) SELECT {columns} FROM {_STAGE} "
                         "ON CONFLICT (id) DO NOTHING")
            cursor.execute(statement)
            return max(cursor.rowcount, 0)
    except psycopg.Error as exc:
        # The driver's error wrapped as SQLAlchemy wraps its own executions (DataError for a
        # value the database refuses, OperationalError for a lost server...): callers such as
        # the outbox flush tell "bad row" from "database down" by those classes.
        raise DBAPIError.instance(statement, None, exc, psycopg.Error,
                                  dialect=conn.dialect) from exc


def ensure_labels(conn: Connection, keys: Iterable[tuple[str, str]],
                  cache: dict[tuple[str, str], int], insert: Any) -> None:
    """Insert the (kind, text) labels not stored yet and put every key's id in `cache` (the
    caller's transaction; shared with the legacy migration)."""
    by_digest = {codec.digest(kind, codec.store_text(value)): (kind, value)
                 for kind, value in keys}
    if not by_digest:
        return
    rows = [{"kind": k, "text": codec.store_text(v), "digest": d}
            for d, (k, v) in by_digest.items()]
    conn.execute(insert(L).on_conflict_do_nothing(index_elements=[L.c.digest]), rows)
    for chunk in _chunks(sorted(by_digest), 500):
        for label_id, label_digest in conn.execute(
                select(L.c.id, L.c.digest).where(L.c.digest.in_(chunk))):
            cache[by_digest[label_digest]] = int(label_id)


def ensure_traces(conn: Connection, bodies: Iterable[str], cache: dict[str, int],
                  insert: Any) -> None:
    """Like `ensure_labels`, for trace bodies."""
    by_digest = {codec.digest(body): body for body in bodies}
    if not by_digest:
        return
    conn.execute(insert(T).on_conflict_do_nothing(index_elements=[T.c.digest]),
                 [{"digest": d, "body": b} for d, b in by_digest.items()])
    for chunk in _chunks(sorted(by_digest), 500):
        for trace_id, trace_digest in conn.execute(
                select(T.c.id, T.c.digest).where(T.c.digest.in_(chunk))):
            cache[by_digest[trace_digest]] = int(trace_id)
