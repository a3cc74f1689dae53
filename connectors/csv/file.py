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


class OutputError(Exception):
    """The output file cannot be created or written. `started`: routing had begun (pool turns
    may have been taken) when it failed; False means nothing was routed."""

    def __init__(self, message: str, *, started: bool = False) -> None:
        super().__init__(message)
        self.started = started


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
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read input: {_os_reason(exc)}") from None
        try:
            self._reader = csv.reader(self._fh)
            header = next(self._reader, None)
            if header is None:
                raise InputError(f"{self.path}: the file is empty (expected a header with `id`)")
            self.columns = [_column(name) for name in header]
            if "id" not in self.columns:
                raise InputError(f"{self.path}: no `id` column in the header "
                                 f"(found: {', '.join(header) or 'nothing'})")
            named = [c for c in self.columns if c]
            duplicates = sorted({c for c in named if named.count(c) > 1})
            if duplicates:
                # A repeated column would silently lose one of its values in every row.
                raise InputError(f"{self.path}: line 1: duplicate column "
                                 f"{', '.join(repr(c) for c in duplicates)} in the header")
        except InputError:
            self._fh.close()
            raise
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            self._fh.close()
            raise InputError(self._read_error(exc, 1)) from None

    def __iter__(self) -> Iterator[Row]:
        width = len(self.columns)
        reader = self._reader
        try:
            while True:
                # A quoted field may span lines: report the line the record starts on.
                start = reader.line_num + 1
                try:
                    raw = next(reader)
                except StopIteration:
                    return
                if not raw:
                    continue  # blank line: not a row at all
                # Columns without a header name carry nothing a rule could name.
                values = {c: v for c, v in zip(self.columns, raw, strict=False) if c}
                if len(raw) != width:
                    yield Row(start, values,
                              f"line {start}: expected {width} columns, found {len(raw)}")
                elif not values["id"].strip():
                    yield Row(start, values, f"line {start}: empty id")
                else:
                    yield Row(start, values)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise InputError(self._read_error(exc, reader.line_num + 1)) from None
        finally:
            self._fh.close()

    def _read_error(self, exc: BaseException, line: int) -> str:
        if isinstance(exc, UnicodeDecodeError):
            # The text layer decodes ahead of the CSV parser: find the offending line itself.
            line, byte = _first_bad_utf8(self.path)
            return (f"{self.path}: line {line}: not UTF-8 text (byte 0x{byte:02x}); "
                    f"save the file as UTF-8")
        if isinstance(exc, OSError):
            return f"{self.path}: cannot read input: {_os_reason(exc)}"
        return f"{self.path}: line {line}: {exc}"

    def close(self) -> None:
        self._fh.close()


def _column(name: str) -> str:
    name = name.strip()
    # Normalized field names match case-insensitively (`Id`, `Owner`); other columns keep theirs.
    return name.lower() if name.lower() in RECORD_FIELDS else name


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _first_bad_utf8(path: Path) -> tuple[int, int]:
    """(line number, byte) of the first byte that is not UTF-8; a newline byte never occurs
    inside a multi-byte UTF-8 sequence, so lines can be decoded one at a time."""
    try:
        with path.open("rb") as fh:
            for number, data in enumerate(fh, start=1):
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    return number, data[exc.start]
    except OSError:
        pass
    return 0, 0


def count_rows(path: str | Path) -> int:
    """Data rows in a file, checking the whole file reads (header, encoding, CSV syntax) before
    anything is routed: raises InputError as `CsvReader` would. Rows include malformed ones."""
    return sum(1 for _ in CsvReader(path))


class CsvWriter:
    """Writes `id,previous_owner,owner,outcome,rule,reason`: UTF-8 without BOM, `\\n` endings."""

    def __init__(self, target: str | Path | IO[str]) -> None:
        if isinstance(target, str | Path):
            try:
                self._fh: IO[str] = Path(target).open(  # noqa: SIM115 - closed in close()
                    "w", encoding="utf-8", newline="")
            except OSError as exc:
                raise OutputError(f"{target}: cannot write output: {_os_reason(exc)}") from None
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
