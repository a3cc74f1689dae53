"""Offline routing of a CSV export (`account-router route-file`), in input order, in chunks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from connectors.csv.file import CsvReader, CsvWriter, OutputError, Row
from sync.compiler import CompiledRouting
from sync.engine import route_batch, skipped
from sync.models import OBJECTS, Decision, Outcome, Record
from sync.normalize import build_record, id_key
from sync.state.base import StateStore

CHUNK = 1000  # rows decided per snapshot and committed per transaction


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


def _build(row: Row) -> Record | str:
    try:
        return build_record(row.values)
    except ValueError as exc:
        return f"line {row.line}: {exc}"


def _previous(row: Row, routing: CompiledRouting) -> str | None:
    owner = row.values.get("owner", "").strip()
    if not owner:
        return None
    return routing.owner_to_rep.get(id_key(owner)) or owner


def seed_account_owners(path: Path) -> dict[str, str]:
    """Domain -> existing owner of the file's account rows, for `account_owner` targets: the
    file stands in for the CRM, so a lead may follow an account listed anywhere in it."""
    owned: list[dict[str, str]] = []
    has_leads = False
    for row in CsvReader(path):
        if row.error:
            continue
        kind = (row.values.get("object") or "account").strip().lower()
        if kind in ("lead", "contact"):
            has_leads = True
        elif row.values.get("owner", "").strip():
            owned.append(row.values)
    if not has_leads:
        return {}  # nobody to follow an account: skip normalizing the accounts twice
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
    return owners


def route_file(
    routing: CompiledRouting,
    store: StateStore,
    input_path: Path,
    output_path: Path,
    now: datetime,
    progress: Callable[[int], None] | None = None,
) -> FileSummary:
    """Route every row of `input_path` into `output_path`; every input row appears once."""
    reader = CsvReader(input_path)  # raises InputError before anything is written
    needs_accounts = any(rule.kind == "account_owner" for rule in routing.rules)
    account_owners = seed_account_owners(input_path) if needs_accounts else {}
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
    try:
        chunk: list[Row] = []
        for row in reader:
            chunk.append(row)
            if len(chunk) >= CHUNK:
                _flush(chunk, routing, store, now, writer, summary, account_owners)
                if progress is not None:
                    progress(len(chunk))
                chunk = []
        if chunk:
            _flush(chunk, routing, store, now, writer, summary, account_owners)
            if progress is not None:
                progress(len(chunk))
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
    return summary


def _flush(rows: list[Row], routing: CompiledRouting, store: StateStore, now: datetime,
           writer: CsvWriter, summary: FileSummary, account_owners: dict[str, str]) -> None:
    built: list[Record | str] = [row.error or _build(row) for row in rows]
    records = [b for b in built if isinstance(b, Record)]
    bad: list[Decision] = []
    for row, b in zip(rows, built, strict=True):
        if isinstance(b, str):
            summary.malformed.append(b)
            obj = row.values.get("object", "").strip().lower()
            bad.append(skipped(row.id or f"line {row.line}", b, now,
                               object=obj if obj in OBJECTS else "account",
                               previous_owner=_previous(row, routing)))
    decisions = iter(route_batch(records, routing, store, now, trigger="file",
                                 account_owners=account_owners, extra=bad))
    bad_iter = iter(bad)
    for row, b in zip(rows, built, strict=True):
        decision = next(bad_iter) if isinstance(b, str) else next(decisions)
        writer.write(row.id, decision)
        summary.add(decision)
