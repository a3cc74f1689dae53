"""CSV file connector: reads exports for `route-file` and writes its result file.

See docs/operations.md#route-file-csv-in-and-out.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import IO, NamedTuple, cast

from sync.models import RECORD_FIELDS, Decision

OUTPUT_COLUMNS = ("id", "previous_owner", "owner", "outcome", "rule", "reason")

# The csv module's own default field limit: a longer field skips its record (never the file).
FIELD_LIMIT = 131_072
# A quoted field may hold newlines, but one left open by mistake would swallow the rest of the
# file: a record may span at most this many lines and characters, else its first line is reported
# broken and reading resumes at the next physical line.
MAX_RECORD_LINES = 1000
# Lines the reader takes at a time on its fast path (lines that are one record each).
_BLOCK_LINES = 256
MAX_RECORD_CHARS = 1 << 20
# The header is placed by reading at most this much (`CsvReader.data_start`).
_HEADER_BYTES = 1 << 16

# The limit is checked here, per record; the parser's own check would end the record mid-field,
# leaving no way to tell where it ends. Only ever raised, so other csv users keep their limit.
csv.field_size_limit(max(csv.field_size_limit(), MAX_RECORD_CHARS + 1))

# Undecodable bytes arrive as lone surrogates (errors="surrogateescape"); valid UTF-8 never
# decodes to one, so finding one means the line is not UTF-8.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
# First characters that make a spreadsheet run a cell as a formula (OWASP "CSV injection").
_FORMULA_START = "=+-@\t\r"


class InputError(Exception):
    """The input file cannot be used at all (unreadable, empty, or without an `id` column)."""


class OutputError(Exception):
    """The output file cannot be created or written. `started`: routing had begun (pool turns
    may have been taken) when it failed; False means nothing was routed."""

    def __init__(self, message: str, *, started: bool = False) -> None:
        super().__init__(message)
        self.started = started


class Row(NamedTuple):
    """One data row: its first physical line, and either its values or why it is malformed."""

    line: int
    values: dict[str, str]
    error: str | None = None

    @property
    def id(self) -> str:
        return self.values.get("id", "").strip()


class _BadLine(Exception):
    """A physical line that cannot start a record (not UTF-8, a NUL byte, far too long)."""

    def __init__(self, number: int, text: str, why: str) -> None:
        super().__init__(why)
        self.number, self.text, self.why = number, text, why


class _Runaway(Exception):
    """The record being read ran past MAX_RECORD_LINES/CHARS or into a bad line."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class _Lines:
    """The physical lines under the csv parser, one record at a time.

    It remembers the lines of the record being parsed, so a record found broken gives its
    lines back (`push_back`) and parsing resumes at the line after its first one.
    """

    def __init__(self, fh: IO[str]) -> None:
        self._fh = fh
        self.number = 0  # physical lines read from the file so far
        self._back: list[tuple[int, str, str | None]] = []  # pushed back, last first
        self.record: list[tuple[int, str]] = []
        self._chars = 0

    def __iter__(self) -> _Lines:
        return self

    def start(self) -> None:
        self.record = []
        self._chars = 0

    def take(self, n: int) -> tuple[int, list[str]]:
        """Up to `n` lines that can be read as they are, with the number of the first, for the
        reader's fast path. It stops before a line that cannot (pushed back with why, for the
        record-by-record path to report as `__next__` would)."""
        first = self.number + 1
        readline = self._fh.readline
        texts: list[str] = []
        for _ in range(n):
            text = readline(MAX_RECORD_CHARS + 1)
            if not text:
                break
            self.number += 1
            if "\x00" in text or not text.isascii() or len(text) > MAX_RECORD_CHARS:
                why = _line_problem(self._fh, text)
                if why is not None:
                    if len(text) > MAX_RECORD_CHARS:
                        text = text[:200]
                    self._back.append((self.number, text, why))
                    break
            texts.append(text)
        return first, texts

    def push_back(self, lines: list[tuple[int, str]]) -> None:
        self._back.extend((n, text, None) for n, text in reversed(lines))

    def __next__(self) -> str:
        # The common case inlined (a plain line, nothing pushed back): this runs once a line.
        if self._back:
            number, text, why = self._back.pop()
        else:
            text = self._fh.readline(MAX_RECORD_CHARS + 1)
            if not text:
                raise StopIteration
            self.number = number = self.number + 1
            why = None
            if "\x00" in text or not text.isascii() or len(text) > MAX_RECORD_CHARS:
                why = _line_problem(self._fh, text)
                if why is not None and len(text) > MAX_RECORD_CHARS:
                    text = text[:200]
        record = self.record
        if why is not None:
            if not record:
                raise _BadLine(number, text, why)
            self._back.append((number, text, why))  # reported on its own, after the record
            raise _Runaway(f"a quoted field runs into line {number}, which cannot be read")
        if record and (len(record) >= MAX_RECORD_LINES
                       or self._chars + len(text) > MAX_RECORD_CHARS):
            self._back.append((number, text, None))
            raise _Runaway(f"a quoted field does not close within {MAX_RECORD_LINES:,} lines "
                           f"or {MAX_RECORD_CHARS:,} characters")
        record.append((number, text))
        self._chars += len(text)
        return text


def _line_problem(fh: IO[str], text: str) -> str | None:
    """Why a physical line cannot be (part of) a record, or None."""
    if len(text) > MAX_RECORD_CHARS and text[-1] not in "\r\n":
        while True:  # drop the rest of the over-long line; it cannot be a record
            more = fh.readline(MAX_RECORD_CHARS)
            if not more or more[-1] in "\r\n":
                break
        return f"the line is longer than {MAX_RECORD_CHARS:,} characters"
    if not text.isascii():
        bad = _NOT_UTF8.search(text)
        if bad is not None:
            byte = ord(bad.group()) - 0xDC00
            return f"not UTF-8 text (byte 0x{byte:02x}); save the file as UTF-8"
    if "\x00" in text:
        return "contains a NUL byte; is this a binary or UTF-16 file?"
    return None


class RowMaker:
    """Makes `Row`s of parsed records for one header's columns (the reader's, and `read_span`'s
    in worker processes, so both give the same rows)."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        # Every column named (the usual header): a row's values are a plain zip, in C.
        self._all_named = all(self.columns)
        # ... and one of them `id` (its last, as the zip keeps the last of equal names):
        # `_whole_records` then makes the usual row itself.
        self.id_at = len(self.columns) - 1 - self.columns[::-1].index("id") \
            if "id" in self.columns else -1
        self.plain = self._all_named and self.id_at >= 0

    def row(self, start: int, raw: list[str], chars: int) -> Row:
        """The row of one parsed record starting on line `start`, `chars` long."""
        columns = self.columns
        width = len(columns)
        # Columns without a header name carry nothing a rule could name.
        values = dict(zip(columns, raw, strict=False)) if self._all_named else {
            c: v for c, v in zip(columns, raw, strict=False) if c}
        if len(raw) != width:
            return Row(start, values, f"line {start}: expected {width} columns, found {len(raw)}")
        if not values["id"].strip():
            return Row(start, values, f"line {start}: empty id")
        if chars > FIELD_LIMIT and any(len(v) > FIELD_LIMIT for v in raw):
            big = next(i for i, v in enumerate(raw) if len(v) > FIELD_LIMIT)
            name = columns[big] or f"column {big + 1}"
            return Row(start, {c: v[:200] for c, v in values.items()},
                       f"line {start}: field {name!r} is {len(raw[big]):,} characters, "
                       f"over the limit of {FIELD_LIMIT:,}")
        return Row(start, values)

    def broken(self, number: int, text: str, why: str) -> Row:
        # Best effort for the report: the line's own values, so its id names the record.
        clean = _printable(text)
        raw = _lenient(clean)
        values = {c: v for c, v in zip(self.columns, raw, strict=False) if c}
        return Row(number, values, f"line {number}: {why}")


class CsvReader:
    """Streams rows in input order; a malformed row is yielded with its error, never dropped.

    Every physical line that holds a record comes out as exactly one row: a line that cannot be
    read (an unclosed quote, bytes that are not UTF-8, a NUL byte, an over-long field) is a row
    with its line number and the reason, and the lines after it are read as usual.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            # utf-8-sig: exports from Excel carry a BOM, which must not end up in the `id` header.
            # surrogateescape: a bad byte spoils its own line, not the rest of the file.
            # newline="": lines end at \n, \r\n or a lone \r, and quoted newlines stay intact.
            self._fh: IO[str] = self.path.open("r", encoding="utf-8-sig",
                                               errors="surrogateescape", newline="")
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read input: {_os_reason(exc)}") from None
        self._lines = _Lines(self._fh)
        self._ahead = 0  # lines of the current fast-path block after the row given out
        self._reader = csv.reader(self._lines, strict=True)
        try:
            header = self._header()
            self.columns = [_column(name) for name in header]
            if "id" not in self.columns:
                raise InputError(f"{self.path}: no `id` column in the header "
                                 f"(found: {', '.join(header) or 'nothing'})")
            named = [c for c in self.columns if c]
            self._make = RowMaker(self.columns)
            duplicates = sorted({c for c in named if named.count(c) > 1})
            if duplicates:
                # A repeated column would silently lose one of its values in every row.
                raise InputError(f"{self.path}: line 1: duplicate column "
                                 f"{', '.join(repr(c) for c in duplicates)} in the header")
        except InputError:
            self._fh.close()
            raise
        except OSError as exc:
            self._fh.close()
            raise InputError(f"{self.path}: cannot read input: {_os_reason(exc)}") from None

    def _header(self) -> list[str]:
        # Unlike a data row, a header that does not read makes the whole file unusable.
        self._lines.start()
        try:
            header = next(self._reader, None)
        except _BadLine as bad:
            raise InputError(f"{self.path}: line {bad.number}: {bad.why}") from None
        except (_Runaway, csv.Error):
            raise InputError(f"{self.path}: line 1: the header does not read as CSV "
                             f"(a quote is not closed?)") from None
        if header is None:
            raise InputError(f"{self.path}: the file is empty (expected a header with `id`)")
        return header

    @property
    def lines_read(self) -> int:
        """Physical lines read so far, the header included (for progress): up to the end of the
        last row given out."""
        back = self._lines._back
        return (back[-1][0] - 1 if back else self._lines.number) - self._ahead

    def __iter__(self) -> Iterator[Row]:
        try:
            yield from self._rows()
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read input: {_os_reason(exc)}") from None
        finally:
            self._fh.close()

    def _rows(self) -> Iterator[Row]:
        width = len(self.columns)
        lines = self._lines
        reader = self._reader
        while True:
            if not lines._back:
                # The fast path: a block of lines that are one record each, parsed at once.
                first, texts = lines.take(_BLOCK_LINES)
                if texts:
                    rows = self._block(first, texts)
                    if rows is not None:
                        last = first + len(texts) - 1
                        for row in rows:
                            self._ahead = last - row.line  # read, not yet given out
                            yield row
                        self._ahead = 0
                        continue
                    # A record spans lines, or a line does not parse: record by record.
                    lines.push_back(list(zip(range(first, first + len(texts)), texts,
                                             strict=True)))
                elif not lines._back:
                    return  # the end of the file
            lines.record = []  # start(), inlined: once a record
            lines._chars = 0
            try:
                raw = next(reader)
            except StopIteration:
                return
            except _BadLine as bad:
                yield self._make.broken(bad.number, bad.text, bad.why)
                continue
            except _Runaway as runaway:
                yield self._runaway(runaway.why)
                continue
            except csv.Error as exc:
                if str(exc) == "unexpected end of data":
                    yield self._runaway("a quoted field is not closed before the end of the file")
                    continue
                if len(lines.record) > 1 and self._swallowed(width):
                    yield self._runaway(f"a quoted field spanning lines {lines.record[0][0]}-"
                                        f"{lines.record[-1][0]} does not parse ({exc})")
                    continue
                # e.g. `"a"b`: read as the forgiving parser always did (`ab`).
                raw = _lenient("".join(text for _, text in lines.record))
            if not raw:
                continue  # blank line: not a row at all
            start = lines.record[0][0]
            if len(raw) != width and len(lines.record) > 1 and self._swallowed(width):
                yield self._runaway(f"a quoted field spanning lines {start}-"
                                    f"{lines.record[-1][0]} gives {len(raw)} columns, "
                                    f"expected {width}")
                continue
            yield self._make.row(start, raw, lines._chars)

    def _block(self, first: int, texts: list[str]) -> list[Row] | None:
        """The rows of lines that each hold one whole record (numbered from `first`), or None
        when one does not (a quoted field spans lines, or does not parse)."""
        return _whole_records(self._make, first, texts)

    def _swallowed(self, width: int) -> bool:
        """Whether a malformed multi-line record has whole records inside its quoted field:
        then its quote was opened by mistake (and closed by another one lines later), and the
        lines in between are records of their own, not text."""
        return any('"' not in text and len(_lenient(text)) == width
                   for _, text in self._lines.record[1:-1])

    def _runaway(self, why: str) -> Row:
        """The current record's first line is broken; its other lines are read again."""
        first, *rest = self._lines.record
        self._lines.push_back(rest)
        return self._make.broken(first[0], first[1], why)

    def data_start(self) -> tuple[int, int] | None:
        """Where the data rows begin, before any is read: (byte offset, number of the first data
        line), for `spans`; None when the header is too long to place cheaply (then read rows
        with this reader)."""
        header = self._lines.number
        with self.path.open("rb") as fh:
            data = fh.read(_HEADER_BYTES)
        bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
        text = data[bom:].decode("utf-8", "surrogateescape")
        lines = io.StringIO(text, newline="").readlines()[:header]
        taken = "".join(lines)
        # Something must follow within what was read: a `\r` at the very end may be the first
        # half of a `\r\n`.
        if len(lines) < header or len(taken) >= len(text):
            return None
        return bom + len(taken.encode("utf-8", "surrogateescape")), header + 1

    def skip_to(self, line: int) -> None:
        """Start reading rows at physical line `line`, before any row is read. The lines before
        it must be whole records each (as `read_span` found them): they are not parsed."""
        lines = self._lines
        if lines._back or lines.number >= line:
            raise ValueError(f"cannot skip to line {line} from line {lines.number}")
        readline = self._fh.readline
        while lines.number < line - 1 and readline(MAX_RECORD_CHARS + 1):
            lines.number += 1

    def close(self) -> None:
        self._fh.close()


class Span(NamedTuple):
    """Whole physical lines of the input: bytes [start, end), lines `line`..`line + lines - 1`.
    `end` is -1 when no line break was found for far too long (the rest of the file)."""

    start: int
    end: int
    line: int
    lines: int


def spans(path: str | Path, start: tuple[int, int], size: int) -> Iterator[Span]:
    """The file from `start` (`CsvReader.data_start`) cut into spans of about `size` bytes, at
    line breaks. Counting line breaks is all this reads: the bytes are parsed by `read_span`,
    in other processes."""
    offset, line = start
    limit = size + 4 * MAX_RECORD_CHARS + 4  # a longer line cannot be a record anyway
    with Path(path).open("rb") as fh:
        fh.seek(offset)
        data = b""
        while True:
            block = fh.read(size)
            data = data + block if data else block
            if not block:
                if data:
                    yield Span(offset, offset + len(data), line,
                               _line_breaks(data) + (data[-1:] not in b"\r\n"))
                return
            # After a \n (never between \r and \n), else after a lone \r (old Mac files) whose
            # next byte has been read.
            cut = data.rfind(b"\n") + 1 or data.rfind(b"\r", 0, len(data) - 1) + 1
            if not cut:
                if len(data) > limit:
                    yield Span(offset, -1, line, 0)
                    return
                continue
            piece, data = data[:cut], data[cut:]
            lines = _line_breaks(piece)
            yield Span(offset, offset + cut, line, lines)
            offset += cut
            line += lines


def _line_breaks(data: bytes) -> int:
    # A line ends at \n, \r\n or a lone \r, as the reader splits them.
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def read_span(path: str | Path, span: Span, columns: Sequence[str]) -> list[Row] | None:
    """The rows of a span, the same as `CsvReader` gives for its lines, when each line is one
    whole record (or a line that cannot be read); None when one is not (a quoted field runs
    over a line break, or a line is over-long): then only the reader, reading on from before
    the span, knows where its records end."""
    with Path(path).open("rb") as fh:
        fh.seek(span.start)
        data = fh.read(span.end - span.start)
    text = data.decode("utf-8", "surrogateescape")
    texts = io.StringIO(text, newline="").readlines()
    if len(data) != span.end - span.start or len(texts) != span.lines:
        return None  # the file changed under us
    make = RowMaker(columns)
    if "\x00" not in text and (text.isascii() or _NOT_UTF8.search(text) is None) and (
            max(map(len, texts), default=0) <= MAX_RECORD_CHARS):
        return _whole_records(make, span.line, texts)
    rows: list[Row] = []
    first = span.line
    for k, line in enumerate(texts):
        if len(line) > MAX_RECORD_CHARS:
            return None
        why = _line_problem(io.StringIO(), line)  # (reads on only for an over-long line)
        if why is not None:  # a row of its own, between whole records
            good = _whole_records(make, first, texts[first - span.line:k])
            if good is None:
                return None
            rows.extend(good)
            rows.append(make.broken(span.line + k, line, why))
            first = span.line + k + 1
    good = _whole_records(make, first, texts[first - span.line:])
    return None if good is None else rows + good


def _whole_records(make: RowMaker, first: int, texts: list[str]) -> list[Row] | None:
    """`CsvReader._block`: the rows of lines that each hold one record, or None."""
    try:
        parsed = list(csv.reader(texts, strict=True))
    except csv.Error:
        return None
    # A line ends a record unless a quoted field runs on: fewer records than lines then.
    if len(parsed) != len(texts):
        return None
    row = make.row
    if not make.plain:
        return [row(first + k, raw, len(texts[k])) for k, raw in enumerate(parsed) if raw]
    # `make.row` inlined for the usual record (every column, an id, no field near the limit:
    # its line is shorter than the limit), a call per row less; any other goes through it.
    columns, width, at = make.columns, len(make.columns), make.id_at
    rows: list[Row] = []
    append = rows.append
    for k, raw in enumerate(parsed):
        if len(raw) == width and raw[at].strip() and len(texts[k]) <= FIELD_LIMIT:
            append(_new_row((first + k, dict(zip(columns, raw, strict=False)), None)))
        elif raw:
            append(row(first + k, raw, len(texts[k])))
    return rows


# A Row from its fields without running the named tuple's Python __new__.
_new_row = cast(Callable[[tuple[int, dict[str, str], None]], Row], partial(tuple.__new__, Row))


def _lenient(text: str) -> list[str]:
    """One line as the forgiving parser reads it (an unclosed quote runs to the line's end)."""
    try:
        return next(csv.reader([text]), [])
    except csv.Error:
        return []


def _printable(text: str) -> str:
    """Bad bytes and NULs as U+FFFD: the text must survive being written as UTF-8 and stored."""
    if not text.isascii():
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text.replace("\x00", "\ufffd")


def _column(name: str) -> str:
    name = name.strip()
    # Normalized field names match case-insensitively (`Id`, `Owner`); other columns keep theirs.
    return name.lower() if name.lower() in RECORD_FIELDS else name


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def count_rows(path: str | Path) -> int:
    """Data lines in a file (physical lines after the header), for a progress total; checks the
    header reads first (raises InputError as `CsvReader` would). Cheap: bytes are counted, not
    parsed, so a 1,000,000-row file is not read twice."""
    CsvReader(path).close()
    lines = 0
    pending_cr = False
    last = b""
    try:
        with Path(path).open("rb") as fh:
            while chunk := fh.read(1 << 20):
                # A line ends at \n, \r\n or a lone \r, as the reader splits them.
                lines += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
                if pending_cr and chunk[:1] == b"\n":
                    lines -= 1  # a \r\n split across two chunks
                pending_cr = chunk[-1:] == b"\r"
                last = chunk[-1:]
    except OSError as exc:
        raise InputError(f"{path}: cannot read input: {_os_reason(exc)}") from None
    if last and last not in b"\r\n":
        lines += 1  # a last line without a line break
    return max(lines - 1, 0)


def escape_formula(cell: str) -> str:
    """A cell a spreadsheet would evaluate (`=`, `+`, `-`, `@`, tab, CR first) gets a leading `'`,
    which spreadsheets show as text and hide (OWASP, CSV injection)."""
    return "'" + cell if cell and cell[0] in _FORMULA_START else cell


class CsvWriter:
    """Writes `id,previous_owner,owner,outcome,rule,reason`: UTF-8 without BOM, `\\n` endings,
    and no cell a spreadsheet would run as a formula."""

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
        self._tails: dict[tuple[object, ...], str] = {}

    def write(self, row_id: str, decision: Decision) -> None:
        # Inlined escape_formula: six cells a row, a million rows.
        self._writer.writerow([
            "'" + cell if cell and cell[0] in _FORMULA_START else cell
            for cell in (row_id, decision.previous_owner or "", decision.owner or "",
                         str(decision.outcome), decision.rule or "", decision.reason)])

    def write_many(self, rows: Iterable[tuple[str, Decision]]) -> None:
        """`write` for each (row id, decision), the same bytes at a fraction of the cost: a long
        file repeats a few decisions, so each distinct row tail is formatted once."""
        tails = self._tails
        parts = []
        for row_id, d in rows:
            key = (d.previous_owner, d.owner, d.outcome, d.rule, d.reason)
            tail = tails.get(key)
            if tail is None:
                if len(tails) >= _TAIL_CACHE_SIZE:
                    tails.clear()
                tail = tails[key] = "," + _format([
                    d.previous_owner or "", d.owner or "", str(d.outcome), d.rule or "",
                    d.reason])
            if _CELL_NEEDS_CARE.search(row_id) is not None:
                row_id = _format([row_id])[:-1]
            parts.append(row_id + tail)
        self._fh.write("".join(parts))

    def close(self) -> None:
        if self._owned:
            self._fh.close()
        else:
            self._fh.flush()


# Distinct row tails (all but the id) remembered by `write_many`.
_TAIL_CACHE_SIZE = 4096
# A cell the csv module would quote (delimiter, quote, line break) or that reads as a formula.
_CELL_NEEDS_CARE = re.compile(r'[,"\r\n]|^[=+\-@\t]')


def _format(cells: list[str]) -> str:
    """One output line exactly as `CsvWriter.write` writes it, for these cells."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(
        ["'" + cell if cell and cell[0] in _FORMULA_START else cell for cell in cells])
    return buffer.getvalue()


def render(decisions: list[tuple[str, Decision]]) -> str:
    """The output file's text for a list of (row id, decision), for tests and previews."""
    buffer = io.StringIO()
    writer = CsvWriter(buffer)
    for row_id, decision in decisions:
        writer.write(row_id, decision)
    return buffer.getvalue()
