"""Offline routing of a CSV export (`account-router route-file`), in input order, in chunks.

Three stages, streamed: the main process reads rows (`CsvReader`), worker processes normalize
them and evaluate every rule's `when` (pure, the bulk of the work), and the main process takes
the pool turns, commits state and writes the output, chunk by chunk in input order. Turns are
only ever taken in the main process, so a parallel run gives the same owners, in the same
round-robin order, as a single-process run.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sqlite3
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from multiprocessing.pool import AsyncResult, Pool
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple, cast

from config.routing import RoutingFile
from connectors.csv.file import CsvReader, CsvWriter, OutputError, Row
from sync.compiler import CompiledRouting, compile_routing
from sync.engine import route_batch, skipped
from sync.models import OBJECTS, Decision, Outcome, Record
from sync.normalize import build_record, id_key
from sync.state.base import StateStore

CHUNK = 5000  # rows decided per snapshot and committed per transaction
# Below this input size worker processes cost more (start-up, imports) than they save.
PARALLEL_MIN_BYTES = 4 << 20
WORKER_CHUNKS = 8  # chunks a worker process prepares before it is replaced
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

    It stands in for a `Record` in the main process. Workers send its fields as a plain tuple,
    which pickles in C at half the cost of even a reduced named tuple.
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

    def __reduce__(self) -> tuple[Any, ...]:  # `object` is a field name here
        # Unpickled by tuple.__new__ directly: the generated __new__ of a NamedTuple is Python
        # code.
        return (tuple.__new__, (Prepared, tuple(self)))


# A Prepared from its fields without running the named tuple's Python __new__.
_as_prepared = cast(Callable[[tuple[Any, ...]], Prepared], partial(tuple.__new__, Prepared))


def _prepare(values: Mapping[str, str], routing: CompiledRouting) -> Prepared | str:
    """Normalize one row and evaluate every rule's `when`; a string says why it cannot be."""
    try:
        record = build_record(values)
    except ValueError as exc:
        return str(exc)
    first = routing.first_match
    matches = []
    i = first(record, 0)
    while i >= 0:
        matches.append(i)
        i = first(record, i + 1)
    return Prepared(record.id, record.object, record.crm, record.owner, record.domain,
                    record.domain_keys, record.freemail, record.created_at, tuple(matches))


def _prepare_chunk(rows: Sequence[Mapping[str, str] | None],
                   routing: CompiledRouting) -> list[Prepared | str | None]:
    return [None if values is None else _prepare(values, routing) for values in rows]


def _first_match(record: Record, start: int) -> int:
    """`CompiledRouting.first_match` read off a `Prepared` row's precomputed matches."""
    # (No typing.cast here or below: a function call per row and per rule asked.)
    for i in record.matches:  # type: ignore[attr-defined]  # a Prepared row
        if i >= start:
            return i
    return -1


# --- worker processes ----------------------------------------------------------------------

_WORKER_ROUTING: CompiledRouting | None = None


def _init_worker(routing_file: RoutingFile) -> None:
    # Compiled rules hold generated functions, which do not pickle: each worker compiles the
    # (already validated) routing file itself.
    global _WORKER_ROUTING
    _WORKER_ROUTING = compile_routing(routing_file)
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


def _worker_chunk(rows: list[Mapping[str, str] | None]) -> list[tuple[Any, ...] | str | None]:
    assert _WORKER_ROUTING is not None
    return [tuple(p) if type(p) is Prepared else p for p in _prepare_chunk(rows, _WORKER_ROUTING)]


def _received(result: list[tuple[Any, ...] | str | None]) -> list[Prepared | str | None]:
    """A worker's answer with its rows made `Prepared` again."""
    return [_as_prepared(p) if type(p) is tuple else p for p in result]  # type: ignore[misc]


def _auto_workers(path: Path) -> int:
    try:
        size = path.stat().st_size
    except OSError:
        return 0
    if size < PARALLEL_MIN_BYTES:
        return 0
    return min(os.cpu_count() or 1, 4)


# --- duplicate ids -------------------------------------------------------------------------


class _SeenIds:
    """Ids already routed in this file, with the line they came from.

    Kept in a temporary on-disk SQLite table rather than a dict: a million ids would cost
    ~130 MB of Python objects, and memory must not grow with the input.
    """

    def __init__(self) -> None:
        self._db = sqlite3.connect("")  # "": a private temporary file, deleted on close
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE seen (id TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")

    def first_lines(self, ids: Sequence[str]) -> dict[str, int]:
        """The line each of `ids` was first routed on, for those seen before."""
        found: dict[str, int] = {}
        unique = list(dict.fromkeys(ids))
        for at in range(0, len(unique), 30000):  # under SQLite's limit of bound variables
            part = unique[at:at + 30000]
            found.update(self._db.execute(
                f"SELECT id, line FROM seen WHERE id IN ({','.join('?' * len(part))})", part))
        return found

    def add(self, rows: Sequence[tuple[str, int]]) -> None:
        with self._db:
            self._db.executemany("INSERT INTO seen (id, line) VALUES (?, ?)", rows)

    def close(self) -> None:
        self._db.close()


# --- routing ---------------------------------------------------------------------------------


def _previous(row: Row, routing: CompiledRouting) -> str | None:
    owner = row.values.get("owner", "").strip()
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


def _prepared_chunks(chunks: Iterator[_Chunk], routing: CompiledRouting, workers: int
                     ) -> Iterator[tuple[_Chunk, list[Prepared | str | None]]]:
    """Each chunk with its rows prepared, in input order; with workers, a few chunks ahead."""
    if workers <= 0:
        for chunk in chunks:
            yield chunk, _prepare_chunk([None if r.error else r.values for r in chunk.rows],
                                        routing)
        return
    # fork where there is one: no re-import of the caller's main module (spawn re-runs an
    # unguarded script) and no start-up cost. The children only compute: they never print or
    # log, so a lock another thread held at fork time (the progress bar's) is never wanted
    # there, and they are terminated, not asked to exit and flush.
    # Linux only: macOS system libraries are not fork-safe.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    context = multiprocessing.get_context(method)
    # A fresh worker now and then: normalization caches (tens of MB of one-off domains) are
    # dropped instead of growing in every worker for the whole file.
    pool: Pool = context.Pool(workers, initializer=_init_worker, initargs=(routing.file,),
                              maxtasksperchild=WORKER_CHUNKS)
    try:
        # Bounded read-ahead (Pool.imap would read the whole file into its queue).
        pending: deque[tuple[_Chunk, AsyncResult[list[tuple[Any, ...] | str | None]]]] = deque()
        for chunk in chunks:
            pending.append((chunk, pool.apply_async(
                _worker_chunk, ([None if r.error else r.values for r in chunk.rows],))))
            if len(pending) > workers:
                rows, result = pending.popleft()
                yield rows, _received(result.get())
        while pending:
            rows, result = pending.popleft()
            yield rows, _received(result.get())
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def route_file(
    routing: CompiledRouting,
    store: StateStore,
    input_path: Path,
    output_path: Path,
    now: datetime,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> FileSummary:
    """Route every row of `input_path` into `output_path`; every input row appears once.

    `progress` is told how many more input lines were done after each chunk. `workers`:
    processes that prepare rows (0: none, all in this process; None: by input size and CPUs);
    the output is the same either way.
    """
    reader = CsvReader(input_path)  # raises InputError before anything is written
    accounts = seed_account_owners(input_path) if routing.uses_account_owner else None
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
    precomputed = replace(routing, first_match=_first_match)
    seen = _SeenIds()
    # SQLite builds its audit indexes once at the end of a run into an empty trail.
    bulk = cast(Callable[[], AbstractContextManager[None]] | None,
                getattr(store, "bulk_audit", None))
    try:
        with _few_collections(), bulk() if bulk is not None else nullcontext():
            _route_chunks(reader, routing, precomputed, store, now, writer, summary, accounts,
                          seen, workers, progress)
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
                  progress: Callable[[int], None] | None) -> None:
    done = 1  # the header line
    for chunk, prepared in _prepared_chunks(_chunks(reader, CHUNK), routing, workers):
        _flush(chunk.rows, prepared, precomputed, store, now, writer, summary, accounts, seen)
        if progress is not None:
            progress(chunk.lines - done)
            done = chunk.lines
    if progress is not None and reader.lines_read > done:
        progress(reader.lines_read - done)  # blank lines after the last row


def _flush(rows: list[Row], prepared: list[Prepared | str | None], routing: CompiledRouting,
           store: StateStore, now: datetime, writer: CsvWriter, summary: FileSummary,
           accounts: AccountOwners | None, seen: _SeenIds) -> None:
    # A duplicate id is routed once, at its first row; later rows report it and take no turn.
    earlier = seen.first_lines([p.id for p in prepared if isinstance(p, Prepared)])
    fresh: list[tuple[str, int]] = []
    records: list[Record] = []
    bad: list[Decision | None] = []
    for row, p in zip(rows, prepared, strict=True):
        if isinstance(p, Prepared):
            first = earlier.get(p.id)
            if first is None:
                earlier[p.id] = row.line
                fresh.append((p.id, row.line))
                records.append(p)  # type: ignore[arg-type]  # stands in for a Record
                bad.append(None)
                continue
            why = f"line {row.line}: duplicate id {p.id}, routed once on line {first}"
            obj = p.object
        else:
            why = row.error or f"line {row.line}: {p}"
            obj = row.values.get("object", "").strip().lower()
        summary.malformed.append(why)
        bad.append(skipped(row.id or f"line {row.line}", why, now,
                           object=obj if obj in OBJECTS else "account",
                           previous_owner=_previous(row, routing)))
    decisions = iter(route_batch(
        records, routing, store, now, trigger="file",
        account_owners=None if accounts is None else accounts.owners,
        learn=None if accounts is None else accounts.wanted,
        extra=[d for d in bad if d is not None]))
    seen.add(fresh)
    out = [next(decisions) if b is None else b for b in bad]
    # Row.id, inlined: a property call per row.
    writer.write_many(zip([row.values.get("id", "").strip() for row in rows], out, strict=True))
    summary.add_many(out)
