"""CSV file connector: reads exports for `route-file` and writes its result file (DESIGN.md §5)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sync.models import RECORD_FIELDS, Decision

OUTPUT_COLUMNS = ("id", "previous_owner", "owner", "outcome", "rule", "reason")


class InputError(Exception):
    """The input file cannot be used at all (unreadable, empty, or without an `id` column)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One data row: its physical line, and either its values or why it is malformed."""

    line: int
    values: dict[str, str]
    error: str | None = None

    @property
    def id(self) -> str:
        return self.values.get("id", "").strip()


class CsvReader:
    """Streams rows in input order; a malformed row is yielded with its error, never dropped."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            # utf-8-sig: exports from Excel carry a BOM, which must not end up in the `id` header.
            self._fh: IO[str] = self.path.open("r", encoding="utf-8-sig", newline="")
            self._reader = csv.reader(self._fh)
            header = next(self._reader, None)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise InputError(f"{self.path}: cannot read input: {exc}") from None
        if header is None:
            self._fh.close()
            raise InputError(f"{self.path}: the file is empty (expected a header with `id`)")
        self.columns = [_column(name) for name in header]
        if "id" not in self.columns:
            self._fh.close()
            raise InputError(f"{self.path}: no `id` column in the header "
                             f"(found: {', '.join(header) or 'nothing'})")

    def __iter__(self) -> Iterator[Row]:
        width = len(self.columns)
        try:
            for raw in self._reader:
                line = self._reader.line_num
                if not raw or raw == [""]:
                    continue  # blank line: not a row at all
                values = dict(zip(self.columns, raw, strict=False))
                if len(raw) != width:
                    yield Row(line, values,
                              f"line {line}: expected {width} columns, found {len(raw)}")
                elif not values["id"].strip():
                    yield Row(line, values, f"line {line}: empty id")
                else:
                    yield Row(line, values)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"{self.path}: line {self._reader.line_num}: {exc}") from None
        finally:
            self._fh.close()

    def close(self) -> None:
        self._fh.close()


def _column(name: str) -> str:
    name = name.strip()
    # Normalized field names match case-insensitively (`Id`, `Owner`); other columns keep theirs.
    return name.lower() if name.lower() in RECORD_FIELDS else name


def count_rows(path: str | Path) -> int:
    """Data rows in a file (for the progress bar); cheap enough to read the file twice."""
    with Path(path).open("r", encoding="utf-8-sig", newline="") as fh:
        return max(sum(1 for _ in csv.reader(fh)) - 1, 0)


class CsvWriter:
    """Writes `id,previous_owner,owner,outcome,rule,reason`: UTF-8 without BOM, `\\n` endings."""

    def __init__(self, target: str | Path | IO[str]) -> None:
        if isinstance(target, str | Path):
            self._fh: IO[str] = Path(target).open(  # noqa: SIM115 - closed in close()
                "w", encoding="utf-8", newline="")
            self._owned = True
        else:
            self._fh = target
            self._owned = False
        self._writer = csv.writer(self._fh, lineterminator="\n")
        self._writer.writerow(OUTPUT_COLUMNS)

    def write(self, row_id: str, decision: Decision) -> None:
        self._writer.writerow((
            row_id,
            decision.previous_owner or "",
            decision.owner or "",
            str(decision.outcome),
            decision.rule or "",
            decision.reason,
        ))

    def close(self) -> None:
        if self._owned:
            self._fh.close()
        else:
            self._fh.flush()


def render(decisions: list[tuple[str, Decision]]) -> str:
    """The output file's text for a list of (row id, decision), for tests and previews."""
    buffer = io.StringIO()
    writer = CsvWriter(buffer)
    for row_id, decision in decisions:
        writer.write(row_id, decision)
    return buffer.getvalue()
