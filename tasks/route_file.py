"""Offline routing of a CSV export (`account-router route-file`), in input order, in chunks.

Three stages, streamed: the main process reads rows (`CsvReader`), worker processes normalize
them and evaluate every rule's `when` (pure, the bulk of the work), and the main process takes
the pool turns, commits state and writes the output, chunk by chunk in input order. Turns are
only ever taken in the main process, so a parallel run gives the same owners, in the same
round-robin order, as a single-process run.
"""

from __future__ import annotations

import gc
import json
import marshal
import multiprocessing
import os
import sqlite3
import sys
from collections import Counter, deque, namedtuple
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from functools import partial
from multiprocessing.pool import AsyncResult, Pool
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple, cast

from config.routing import RoutingFile
from connectors.csv.file import CsvReader, CsvWriter, OutputError, Row, Span, read_span, spans
from sync.compiler import CompiledRouting, compile_routing
from sync.decide import Traces
from sync.engine import route_batch, skipped
from sync.enrich import AccountIndex, EnrichData
from sync.models import OBJECTS, Decision, Outcome, Record, TraceStep
from sync.normalize import build_record, forget_hosts, id_key, record_fields
from sync.state.base import StateStore

CHUNK = 5000  # rows decided per snapshot and committed per transaction
# Bytes of input a worker reads, parses and describes at a time: about CHUNK rows of a usual
# export, decided per snapshot and committed per transaction like them.
SPAN_BYTES = 384 << 10
SPANS_AHEAD = 4  # spans in flight per worker
# Below this input size worker processes cost more (start-up, imports) than they save.
PARALLEL_MIN_BYTES = 4 << 20
WORKER_CHUNKS = 8  # chunks a worker process prepares between emptying its host caches
# Allocations between young-generation collections while routing (CPython's default: 700).
# Rows, records and decisions are acyclic and short-lived, yet each collection of a chunk in
# flight walks them all: at the default, collection took more time than unpickling itself.
GC_THRESHOLD = 100_000


@dataclass
class FileSummary:
    """Counts for the closing table: per outcome, per rule, per rep, per pool."""

    rows: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    reps: Counter[str] = field(default_factory=Counter)
    pools: dict[str, Counter[str]] = field(default_factory=dict)
    malformed: list[str] = field(default_factory=list)

    def add(self, decision: Decision) -> None:
        self.rows += 1
        self.outcomes[str(decision.outcome)] += 1
        if decision.outcome in (Outcome.ASSIGNED, Outcome.FALLBACK):
            self.rules[decision.rule or "(top-level fallback)"] += 1
            if decision.owner:
                self.reps[decision.owner] += 1
            if decision.turn is not None:
                # A pool turn; an overflow assignment names the pool but is nobody's turn.
                self.pools.setdefault(decision.pool or decision.turn.pool, Counter())[
                    decision.turn.member] += 1
        elif decision.outcome == Outcome.KEPT_EXISTING:
            self.rules["(kept existing owner)"] += 1
        elif decision.outcome == Outcome.UNASSIGNED:
            self.rules["(unassigned)"] += 1

    def add_many(self, decisions: Sequence[Decision]) -> None:
        """`add` for each decision: counted by kind first, as a long file repeats a few."""
        kinds = Counter(map(_SUMMARY_KEY, decisions))
        for (outcome, rule, owner), n in kinds.items():
            self.rows += n
            self.outcomes[str(outcome)] += n
            if outcome in (Outcome.ASSIGNED, Outcome.FALLBACK):
                self.rules[rule or "(top-level fallback)"] += n
                if owner:
                    self.reps[owner] += n
            elif outcome == Outcome.KEPT_EXISTING:
                self.rules["(kept existing owner)"] += n
            elif outcome == Outcome.UNASSIGNED:
                self.rules["(unassigned)"] += n
        for decision in decisions:
            if decision.turn is not None:
                # A pool turn; an overflow assignment names the pool but is nobody's turn.
                self.pools.setdefault(decision.pool or decision.turn.pool, Counter())[
                    decision.turn.member] += 1


_SUMMARY_KEY = attrgetter("outcome", "rule", "owner")


class Prepared(NamedTuple):
    """What routing needs of a record, made in a worker: the fields `decide` reads and the
    indexes of every rule whose `when` matches (`decide` asks for the first from some index).

    It stands in for a `Record` in the main process, which gets its fields as a plain tuple.
    """

    id: str
    object: str
    crm: str
    owner: str | None
    domain: str | None
    domain_keys: tuple[str, ...]
    freemail: bool
    created_at: datetime | None
    matches: tuple[int, ...]


# A Prepared from its fields without running the named tuple's Python __new__.
_as_prepared = cast(Callable[[tuple[Any, ...]], Prepared], partial(tuple.__new__, Prepared))

# One input row as the main process needs it, made where the row was parsed:
#   routable: (line, output id or None when it is the record id, previous owner, Prepared
#              fields)
#   skipped:  (line, output id, previous owner, why, record id, object)
# Plain tuples of str/int/None: they cross from worker processes as `marshal` bytes, which
# load at a fraction of pickle's cost, and `_describe` gives repeated values (objects, owners,
# match lists) as one object, which marshal then writes once and loads once.
Item = tuple[Any, ...]


def _describe(rows: Sequence[Row], routing: CompiledRouting, follow: bool,
              data: EnrichData | None = None) -> list[Item]:
    """Normalize each row and evaluate every rule's `when` (the bulk of the work).

    `follow`: leads and contacts may follow an account (`account_owner` rules, and the file has
    leads or contacts). Only then does `decide` read their domain keys and free-mail flag, and
    the engine an account's domain: rows carry no more than that across.
    With `enrich:` steps, each record is enriched first (`data`: what they may read); a row
    they changed carries their trace steps as a fifth element.
    """
    enrichment = routing.enrichment
    data = data if data is not None else EnrichData()
    first = routing.first_match
    shared: dict[Any, Any] = {}
    one = shared.setdefault
    previous: dict[str, str | None] = {}
    items: list[Item] = []
    append = items.append
    for row in rows:
        values = row.values
        out_id = values.get("id", "").strip()
        owner = values.get("owner", "")
        before = previous.get(owner, _UNSEEN)
        if before is _UNSEEN:
            before = previous[owner] = _previous_owner(owner, routing)
        why = row.error
        if why is None:
            notes: tuple[TraceStep, ...] = ()
            try:
                if enrichment is None:
                    record = _view(record_fields(values))
                else:
                    record, notes = enrichment.run(Record(*record_fields(values)), data)
            except ValueError as exc:
                why = f"line {row.line}: {exc}"
            else:
                matches = []
                i = first(record, 0)
                while i >= 0:
                    matches.append(i)
                    i = first(record, i + 1)
                obj = one(record.object, record.object)
                if not follow:
                    domain, keys, freemail = None, (), False
                elif obj == "account":
                    domain, keys, freemail = record.domain, (), False
                else:
                    domain, keys, freemail = (record.domain, tuple(one(k, k) for k in
                                              record.domain_keys), record.freemail)
                found = tuple(matches)
                item: Item = (row.line, None if out_id == record.id else out_id, before, (
                    record.id, obj, one(record.crm, record.crm), one(record.owner, record.owner),
                    domain, keys, freemail, record.created_at, one(found, found)))
                if notes:
                    item += (tuple(tuple(step.to_dict().values()) for step in notes),)
                append(item)
                continue
        obj = values.get("object", "").strip().lower()
        append((row.line, out_id, before, why, out_id or f"line {row.line}",
                obj if obj in OBJECTS else "account"))
    return items


# `route_file`'s `observe`: a chunk's (matched rule indexes or None, decision) in input order.
Observer = Callable[[list[tuple[tuple[int, ...] | None, Decision]]], None]

_UNSEEN = object()
# A `Record`'s fields as a named tuple: what rules read, made at a fraction of the cost.
_RecordView = namedtuple("_RecordView", [f.name for f in fields(Record)])  # type: ignore[misc]
_view = cast(Callable[[tuple[Any, ...]], Record], partial(tuple.__new__, _RecordView))


def _first_match(record: Record, start: int) -> int:
    """`CompiledRouting.first_match` read off a `Prepared` row's precomputed matches."""
    # (No typing.cast here or below: a function call per row and per rule asked.)
    for i in record.matches:  # type: ignore[attr-defined]  # a Prepared row
        if i >= start:
            return i
    return -1


# `CompiledRouting.known_matches` of a `Prepared` row: what its worker computed.
_known_matches = cast(Callable[[Record], tuple[int, ...]], attrgetter("matches"))


# --- worker processes ----------------------------------------------------------------------

_WORKER_ROUTING: CompiledRouting | None = None
_WORKER_FOLLOW = False  # `_describe`'s `follow`
_WORKER_DATA: EnrichData | None = None  # `_describe`'s `data`


def _init_worker(routing_file: RoutingFile, follow: bool, data: EnrichData | None = None
                 ) -> None:
    # Compiled rules hold generated functions, which do not pickle: each worker compiles the
    # (already validated) routing file itself.
    global _WORKER_ROUTING, _WORKER_FOLLOW, _WORKER_DATA
    _WORKER_ROUTING = compile_routing(routing_file)
    _WORKER_FOLLOW = follow
    _WORKER_DATA = data
    _quiet_gc()


@contextmanager
def _few_collections() -> Iterator[None]:
    """`_quiet_gc` for the length of a run, then the collector as it was."""
    threshold = gc.get_threshold()
    _quiet_gc()
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def _quiet_gc() -> None:
    # Everything alive now (modules, the compiled routing) is never scanned again; copies of
    # forked pages are not touched by the collector either, so the workers share more of them.
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


_worker_chunks = 0


def _worker_turn() -> None:
    global _worker_chunks
    _worker_chunks += 1
    if _worker_chunks % WORKER_CHUNKS == 0:
        forget_hosts()  # tens of MB of hosts seen once, in every worker


def _worker_span(path: str, span: Span, columns: list[str]) -> bytes | None:
    """A span's rows read, parsed and described here: the main process only cut the file.
    None when its lines are not one record each (the main process reads them itself)."""
    assert _WORKER_ROUTING is not None
    _worker_turn()
    rows = read_span(path, span, columns)
    return None if rows is None else marshal.dumps(
        _describe(rows, _WORKER_ROUTING, _WORKER_FOLLOW, _WORKER_DATA))


def _worker_rows(rows: list[Row]) -> bytes:
    """Rows the main process read, described here."""
    assert _WORKER_ROUTING is not None
    _worker_turn()
    return marshal.dumps(_describe(rows, _WORKER_ROUTING, _WORKER_FOLLOW, _WORKER_DATA))


def _auto_workers(path: Path) -> int:
    try:
        size = path.stat().st_size
    except OSError:
        return 0
    if size < PARALLEL_MIN_BYTES:
        return 0
    return min(os.cpu_count() or 1, 4)


# --- duplicate ids -------------------------------------------------------------------------


_LOOKUP = 500  # ids looked up per statement without JSON
_SELECT_SEEN = f"SELECT id, line FROM seen WHERE id IN ({','.join('?' * _LOOKUP)})"


class _SeenIds:
    """Ids already routed in this file, with the line they came from.

    Kept in a temporary on-disk SQLite table rather than a dict: a million ids would cost
    ~130 MB of Python objects, and memory must not grow with the input.
    """

    def __init__(self, *, use_json: bool | None = None) -> None:
        self._db = sqlite3.connect("")  # "": a private temporary file, deleted on close
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE seen (id TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")
        # A chunk's ids go in as one JSON text, unpacked by SQLite (json_each, built in since
        # 3.38): half the cost of binding them one by one. Without it, they are bound.
        self._json = _has_json_each(self._db) if use_json is None else use_json

    def first_lines(self, ids: Sequence[str]) -> dict[str, int]:
        """The line each of `ids` was first routed on, for those seen before."""
        if self._json:
            return dict(self._db.execute(
                "SELECT id, line FROM seen WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids, ensure_ascii=False),)))
        found: dict[str, int] = {}
        unique = list(dict.fromkeys(ids))
        for at in range(0, len(unique), _LOOKUP):
            part = unique[at:at + _LOOKUP]
            # Always _LOOKUP ids, the last repeated: one prepared statement for the whole run.
            # A statement per chunk length, kept in sqlite3's statement cache, held ~50 MB.
            part += part[-1:] * (_LOOKUP - len(part))
            found.update(self._db.execute(_SELECT_SEEN, part))
        return found

    def add(self, rows: Sequence[tuple[str, int]]) -> None:
        """Remember (id, line) pairs; the ids are new and distinct."""
        with self._db:
            if self._json:
                self._db.execute("INSERT INTO seen (id, line) SELECT key, value FROM json_each(?)",
                                 (json.dumps(dict(rows), ensure_ascii=False),))
            else:
                self._db.executemany("INSERT INTO seen (id, line) VALUES (?, ?)", rows)

    def close(self) -> None:
        self._db.close()


def _has_json_each(db: sqlite3.Connection) -> bool:
    try:
        db.execute("SELECT value FROM json_each('[1]')").fetchall()
    except sqlite3.OperationalError:
        return False
    return True


# --- routing ---------------------------------------------------------------------------------


def _previous_owner(value: str, routing: CompiledRouting) -> str | None:
    """A row's existing owner as the output reports it (a rep id when it is one)."""
    owner = value.strip()
    if not owner:
        return None
    return routing.owner_to_rep.get(id_key(owner)) or owner


class AccountOwners(NamedTuple):
    """What `account_owner` targets need from the file, found before routing starts."""

    owners: dict[str, str]  # domain -> existing owner of the file's account rows
    wanted: frozenset[str]  # every domain key some lead or contact will look up


def seed_account_owners(path: Path) -> AccountOwners | None:
    """The file stands in for the CRM, so a lead may follow an account listed anywhere in it:
    the existing owners of its account rows, and the domains its leads and contacts look up.
    None when the file has no lead or contact row (then no account needs remembering)."""
    reader = CsvReader(path)
    if "object" not in reader.columns:
        reader.close()
        return None  # every row is an account: no second pass
    owned: list[dict[str, str]] = []
    leads: list[dict[str, str]] = []
    for row in reader:
        if row.error:
            continue
        kind = (row.values.get("object") or "account").strip().lower()
        if kind in ("lead", "contact"):
            leads.append(row.values)
        elif row.values.get("owner", "").strip():
            owned.append(row.values)
    if not leads:
        return None
    wanted: set[str] = set()
    for values in leads:
        with suppress(ValueError):
            wanted.update(build_record(values).domain_keys)
    owners: dict[str, str] = {}
    for values in owned:
        try:
            # The same normalization as routing, so the domain comes from domain, email or
            # website exactly as it will for the leads that look it up.
            record = build_record(values)
        except ValueError:
            continue
        if record.object == "account" and record.owner and record.domain:
            owners.setdefault(record.domain, record.owner)
    return AccountOwners(owners, frozenset(wanted))


def seed_account_names(path: Path) -> AccountIndex | None:
    """The file's accounts by company name, for `company_match` (the file stands in for the
    CRM); None when the file has no lead or contact row (nothing to match)."""
    reader = CsvReader(path)
    if "object" not in reader.columns:
        reader.close()
        return None
    accounts: list[tuple[str, str]] = []
    leads = False
    for row in reader:
        if row.error:
            continue
        kind = (row.values.get("object") or "account").strip().lower()
        if kind != "account":
            leads = True
            continue
        try:
            # The same normalization as routing: the domain from domain, email or website.
            record = build_record(row.values)
        except ValueError:
            continue
        name = record.raw.get("name")
        if name and record.domain:
            accounts.append((name, record.domain))
    return AccountIndex.build(accounts) if leads else None


def _enriched(items: list[Item]) -> dict[str, tuple[TraceStep, ...]]:
    """Enrichment's trace steps of a chunk's rows, by record id."""
    return {item[3][0]: tuple(TraceStep(*step) for step in item[4])
            for item in items if len(item) == 5}


class _Chunk(NamedTuple):
    rows: list[Row]
    lines: int  # physical lines read up to its end, for progress


def _chunks(reader: CsvReader, size: int) -> Iterator[_Chunk]:
    chunk: list[Row] = []
    for row in reader:
        chunk.append(row)
        if len(chunk) >= size:
            yield _Chunk(chunk, reader.lines_read)
            chunk = []
    if chunk:
        yield _Chunk(chunk, reader.lines_read)


# (items, the last physical line they cover, for progress)
_Described = tuple[list[Item], int]


def _described_chunks(reader: CsvReader, routing: CompiledRouting, workers: int, follow: bool,
                      data: EnrichData | None = None) -> Iterator[_Described]:
    """Each chunk of rows described, in input order; with workers, a few chunks ahead."""
    if workers <= 0:
        for chunk in _chunks(reader, CHUNK):
            yield _describe(chunk.rows, routing, follow, data), chunk.lines
        return
    # fork where there is one: no re-import of the caller's main module (spawn re-runs an
    # unguarded script) and no start-up cost. The children only compute: they never print or
    # log, so a lock another thread held at fork time (the progress bar's) is never wanted
    # there, and they are terminated, not asked to exit and flush.
    # Linux only: macOS system libraries are not fork-safe.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    context = multiprocessing.get_context(method)
    # Workers live for the whole run and empty their host caches now and then instead of being
    # replaced: each replacement was a fork of this process, whose pages it then copied back
    # on write (at a worker per 8 chunks, a tenth of this process's time).
    pool: Pool = context.Pool(workers, initializer=_init_worker,
                              initargs=(routing.file, follow, data))
    try:
        start = reader.data_start()
        if start is not None:
            # Workers read and parse the file themselves, span by span; the main process only
            # finds the line breaks to cut at. A span whose lines are not one record each
            # (a quoted field over a line break) is read from there on by the reader here.
            resume = yield from _span_chunks(reader, start, pool, workers)
            if resume is None:
                pool.close()
                return
            reader.skip_to(resume)
        # Bounded read-ahead (Pool.imap would read the whole file into its queue).
        pending: deque[tuple[int, AsyncResult[bytes]]] = deque()
        for chunk in _chunks(reader, CHUNK):
            pending.append((chunk.lines, pool.apply_async(_worker_rows, (chunk.rows,))))
            if len(pending) > workers:
                lines, result = pending.popleft()
                yield marshal.loads(result.get()), lines
        while pending:
            lines, result = pending.popleft()
            yield marshal.loads(result.get()), lines
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _span_chunks(reader: CsvReader, start: tuple[int, int], pool: Pool, workers: int
                 ) -> Generator[_Described, None, int | None]:
    """The file's spans described by the workers, in order; returns the line to read on from
    when a span cannot be read on its own (None: the whole file was)."""
    columns = list(reader.columns)
    path = str(reader.path)
    pending: deque[tuple[Span, AsyncResult[bytes | None]]] = deque()
    cut = spans(reader.path, start, SPAN_BYTES)
    resume: int | None = None
    while True:
        span = next(cut, None) if resume is None else None
        if span is not None:
            if span.end < 0:  # no line break for megabytes: the reader's business
                resume = span.line
            else:
                pending.append((span, pool.apply_async(_worker_span, (path, span, columns))))
                # A few spans ahead per worker (a span's answer is ~60 bytes a row): while this
                # process waits for a core, the workers keep working instead of idling.
                if len(pending) <= SPANS_AHEAD * workers:
                    continue
        if not pending:
            return resume
        done, result = pending.popleft()
        data = result.get()
        if data is None:
            return done.line  # the spans after it are dropped with `pending`
        yield marshal.loads(data), done.line + done.lines - 1


def route_file(
    routing: CompiledRouting,
    store: StateStore,
    input_path: Path,
    output_path: Path,
    now: datetime,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    observe: Observer | None = None,
) -> FileSummary:
    """Route every row of `input_path` into `output_path`; every input row appears once.

    `progress` is told how many more input lines were done after each chunk. `workers`:
    processes that prepare rows (0: none, all in this process; None: by input size and CPUs);
    the output is the same either way. `observe` is handed each chunk's decisions with the
    indexes of the rules each row matched (None for a row that never reached the rules), in
    input order (`overlaps` counts them).
    """
    reader = CsvReader(input_path)  # raises InputError before anything is written
    accounts = seed_account_owners(input_path) if routing.uses_account_owner else None
    data = None
    if routing.enrichment is not None and routing.enrichment.needs_accounts:
        # company_match: the file's accounts stand in for the CRM's, as for account_owner.
        index = seed_account_names(input_path)
        data = EnrichData(index)
        if accounts is not None and index is not None:
            # A lead matched by name follows an account this run may route: remember its owner.
            accounts = accounts._replace(wanted=accounts.wanted | index.domains)
    summary = FileSummary()
    # Write to a sibling temp file and rename at the end, so a crash never leaves half a file.
    tmp = output_path.with_name(output_path.name + ".partial")
    try:
        if output_path.is_dir():
            raise OutputError(f"{output_path}: cannot write output: it is a directory")
        writer = CsvWriter(tmp)  # raises OutputError before anything is routed
    except OutputError:
        reader.close()
        raise
    if workers is None:
        workers = _auto_workers(input_path)
    # `decide` asks for the first matching rule from some index: the workers already know.
    precomputed = replace(routing, first_match=_first_match, known_matches=_known_matches)
    seen = _SeenIds()
    # SQLite builds its audit indexes once at the end of a run into an empty trail.
    bulk = cast(Callable[[], AbstractContextManager[None]] | None,
                getattr(store, "bulk_audit", None))
    try:
        with _few_collections(), bulk() if bulk is not None else nullcontext():
            _route_chunks(reader, routing, precomputed, store, now, writer, summary, accounts,
                          seen, workers, progress, observe, {}, data)
        writer.close()
        tmp.replace(output_path)
    except BaseException as exc:
        with suppress(OSError):  # the file may be what failed: closing may fail again
            writer.close()
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # the reader raises InputError; stores raise their own
            raise OutputError(f"{output_path}: cannot write output: {exc.strerror or exc}",
                              started=True) from None
        raise
    finally:
        seen.close()
        reader.close()
    return summary


def _route_chunks(reader: CsvReader, routing: CompiledRouting, precomputed: CompiledRouting,
                  store: StateStore, now: datetime, writer: CsvWriter, summary: FileSummary,
                  accounts: AccountOwners | None, seen: _SeenIds, workers: int,
                  progress: Callable[[int], None] | None, observe: Observer | None,
                  traces: Traces, data: EnrichData | None = None) -> None:
    done = reader.lines_read  # the header
    # Without leads or contacts in the file (no `accounts`), no row follows an account.
    follow = routing.uses_account_owner and accounts is not None
    for items, lines in _described_chunks(reader, routing, workers, follow, data):
        _flush(items, precomputed, store, now, writer, summary, accounts, seen, observe, traces)
        if progress is not None:
            progress(lines - done)
            done = lines
    if progress is not None and reader.lines_read > done:
        progress(reader.lines_read - done)  # blank lines after the last row


def _flush(items: list[Item], routing: CompiledRouting, store: StateStore, now: datetime,
           writer: CsvWriter, summary: FileSummary, accounts: AccountOwners | None,
           seen: _SeenIds, observe: Observer | None = None, traces: Traces | None = None
           ) -> None:
    # `traces`: one for the run, so a trace is one object in every chunk, and the history's
    # cache of encoded shapes (keyed by the trace's identity) finds it in the next chunk too.
    # A duplicate id is routed once, at its first row; later rows report it and take no turn.
    # Routable rows are 4 long (5 with enrichment's trace steps); skipped rows 6.
    record_ids = [item[3][0] for item in items if len(item) < 6]
    enriched = _enriched(items) if routing.enrichment is not None else None
    earlier = seen.first_lines(record_ids)
    if not earlier and len(record_ids) == len(items) == len(set(record_ids)):
        # The usual chunk: every row routable, no id seen before. The loop below, in bulk.
        routed = route_batch(
            [_as_prepared(item[3]) for item in items],  # type: ignore[misc]  # Records' stand-ins
            routing, store, now, trigger="file",
            account_owners=None if accounts is None else accounts.owners,
            learn=None if accounts is None else accounts.wanted, enriched=enriched,
            traces=traces)
        seen.add([(item[3][0], item[0]) for item in items])
        writer.write_many(zip([item[3][0] if item[1] is None else item[1] for item in items],
                              routed, strict=True))
        summary.add_many(routed)
        if observe is not None:
            observe([(item[3][8], d) for item, d in zip(items, routed, strict=True)])
        return
    fresh: list[tuple[str, int]] = []
    records: list[Record] = []
    bad: list[Decision | None] = []
    ids: list[str] = []
    for item in items:
        line, out_id, before = item[0], item[1], item[2]
        if len(item) < 6:
            p = _as_prepared(item[3])
            record_id = p.id
            ids.append(record_id if out_id is None else out_id)
            first = earlier.get(record_id)
            if first is None:
                earlier[record_id] = line
                fresh.append((record_id, line))
                records.append(p)  # type: ignore[arg-type]  # stands in for a Record
                bad.append(None)
                continue
            why = f"line {line}: duplicate id {record_id}, routed once on line {first}"
            obj = p.object
            if out_id is not None:
                record_id = out_id  # the row's id as written, as for any skipped row
        else:
            ids.append(out_id)
            why, record_id, obj = item[3], item[4], item[5]
        summary.malformed.append(why)
        bad.append(skipped(record_id, why, now, object=obj, previous_owner=before))
    decisions = iter(route_batch(
        records, routing, store, now, trigger="file",
        account_owners=None if accounts is None else accounts.owners,
        learn=None if accounts is None else accounts.wanted,
        extra=[d for d in bad if d is not None], enriched=enriched, traces=traces))
    seen.add(fresh)
    out = [next(decisions) if b is None else b for b in bad]
    writer.write_many(zip(ids, out, strict=True))
    summary.add_many(out)
    if observe is not None:
        # A duplicate row's matches are its first row's: it is reported, not routed again.
        observe([(item[3][8] if len(item) < 6 and b is None else None, d)
                 for item, b, d in zip(items, bad, out, strict=True)])
