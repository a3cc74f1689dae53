"""The CSV file connector: `CsvReader` for route-file input, `CsvWriter` for its result file."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

import connectors.csv.file as csv_file
from connectors.csv.file import (
    FIELD_LIMIT,
    OUTPUT_COLUMNS,
    CsvReader,
    CsvWriter,
    InputError,
    OutputError,
    Row,
    count_rows,
    escape_formula,
    read_span,
    render,
    spans,
)
from sync.models import Decision, Outcome

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def write(tmp_path: Path, data: str | bytes, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def decision(record_id: str, **kw: object) -> Decision:
    values: dict[str, object] = {"object": "account", "crm": "file",
                                 "outcome": Outcome.ASSIGNED, "decided_at": NOW}
    values.update(kw)
    return Decision(record_id=record_id, **values)  # type: ignore[arg-type]


# --- reader -------------------------------------------------------------------------------


def test_given_a_bom_and_crlf_when_reading_then_columns_and_values_are_clean(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, b"\xef\xbb\xbfid,name,owner\r\n1,Acme,ava\r\n2,Beta,\r\n")

    reader = CsvReader(path)
    got = list(reader)

    assert reader.columns == ["id", "name", "owner"]
    assert [(r.line, r.id, r.values, r.error) for r in got] == [
        (2, "1", {"id": "1", "name": "Acme", "owner": "ava"}, None),
        (3, "2", {"id": "2", "name": "Beta", "owner": ""}, None),
    ]


def test_given_record_field_headers_in_any_case_when_reading_then_they_are_normalized(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, " ID ,Owner,Tier\n1,ava,gold\n")

    reader = CsvReader(path)

    assert reader.columns == ["id", "owner", "Tier"]  # other columns keep their spelling
    assert [r.values for r in reader] == [{"id": "1", "owner": "ava", "Tier": "gold"}]


def test_given_malformed_rows_when_reading_then_each_is_yielded_with_its_start_line(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, (
        "id,name\n"              # 1
        '1,"two\nlines"\n'       # 2-3: a quoted newline is one record
        "2,a,b\n"                # 4: too many columns
        "\n"                     # 5: blank, not a row
        "3\n"                    # 6: too few
        ",x\n"                   # 7: empty id
        "  ,x\n"                 # 8: blank id
        '4,"x\ny",z\n'           # 9-10: too many, starting on line 9
        "5,ok\n"                 # 11
    ))

    got = [(r.line, r.id, r.error) for r in CsvReader(path)]

    assert got == [
        (2, "1", None),
        (4, "2", "line 4: expected 2 columns, found 3"),
        (6, "3", "line 6: expected 2 columns, found 1"),
        (7, "", "line 7: empty id"),
        (8, "", "line 8: empty id"),
        (9, "4", "line 9: expected 2 columns, found 3"),
        (11, "5", None),
    ]


def test_given_a_blank_header_column_when_reading_then_its_values_are_not_fields(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "id,name,,\n1,Acme,,\n")

    [row] = CsvReader(path)

    assert row.error is None
    assert row.values == {"id": "1", "name": "Acme"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"name,owner\nAcme,ava\n", "no `id` column in the header (found: name, owner)"),
        (b"id,name,ID\n1,a,2\n", "duplicate column 'id'"),
        (b"id,na\xffme\n", "line 1: not UTF-8 text (byte 0xff)"),
        (b"\xff\xfei\x00d\x00\n\x00", "line 1: not UTF-8"),  # UTF-16
        (b"id,\x00name\n1,a\n", "line 1: contains a NUL byte"),
        (b'id,"name\n1,a\n', "line 1: the header does not read as CSV"),
    ],
)
def test_given_an_unusable_file_when_opening_and_counting_then_input_error_says_why(
    tmp_path: Path, data: bytes, message: str
) -> None:
    path = write(tmp_path, data)

    with pytest.raises(InputError) as caught:
        count_rows(path)

    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_given_a_missing_file_when_opening_then_input_error_names_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing.csv: cannot read input"):
        CsvReader(tmp_path / "missing.csv")


def test_given_a_directory_when_opening_then_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read input"):
        CsvReader(tmp_path)


def test_given_any_line_endings_when_counting_then_data_lines_after_the_header_are_counted(
    tmp_path: Path,
) -> None:
    # A progress total: physical lines, counted in bytes rather than parsed.
    assert count_rows(write(tmp_path, "id,a\n1,x\n\n2\n,y\n3,z,extra\n")) == 5
    assert count_rows(write(tmp_path, "id\r\n1\r\n2", "crlf.csv")) == 2
    assert count_rows(write(tmp_path, "id\r1\r2\r", "cr.csv")) == 2
    assert count_rows(write(tmp_path, "id\n", "header.csv")) == 0


def rows_of(path: Path) -> list[tuple[int, str, str | None]]:
    return [(r.line, r.id, r.error) for r in CsvReader(path)]


def test_given_an_unclosed_quote_when_reading_then_only_its_line_is_broken_and_reading_resumes(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, (
        "id,name,domain\n"
        "1,Acme,acme.com\n"
        '2,"Broken,foo.com\n'      # the quote never closes: it must not swallow the file
        "3,Three,three.com\n"
        "4,Four,four.com\n"
        "5,Five,five.com\n"
    ))

    assert rows_of(path) == [
        (2, "1", None),
        (3, "2", "line 3: a quoted field is not closed before the end of the file"),
        (4, "3", None),
        (5, "4", None),
        (6, "5", None),
    ]


def test_given_a_quote_closed_by_accident_lines_later_when_reading_then_no_line_is_swallowed(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, (
        "id,name,domain\n"
        '1,"Broken,one.com\n'      # opens a quoted field ...
        "2,Two,two.com\n"
        '3,Three,three.com"\n'     # ... that this stray quote closes: 2 columns, not 3
        "4,Four,four.com\n"
    ))

    got = rows_of(path)

    assert [(line, row_id) for line, row_id, _ in got] == [(2, "1"), (3, "2"), (4, "3"),
                                                           (5, "4")]
    assert got[0][2] == "line 2: a quoted field spanning lines 2-4 gives 2 columns, expected 3"
    assert [error for _, _, error in got[1:]] == [None, None, None]


def test_given_a_quoted_field_past_the_line_bound_when_reading_then_its_first_line_is_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(csv_file, "MAX_RECORD_LINES", 3)
    path = write(tmp_path, (
        "id,note\n"
        '1,"three\nshort\nlines"\n'   # 3 lines: still one record
        '2,"open\n'
        "3,x\n"
        "4,y\n"
        '5,"closes far too late"\n'
        "6,z\n"
    ))

    got = [(r.line, r.id, r.values.get("note"), r.error) for r in CsvReader(path)]

    assert got == [
        (2, "1", "three\nshort\nlines", None),
        (5, "2", "open\n", "line 5: a quoted field does not close within 3 lines or "
                             "1,048,576 characters"),
        (6, "3", "x", None),
        (7, "4", "y", None),
        (8, "5", "closes far too late", None),
        (9, "6", "z", None),
    ]


def test_given_bad_bytes_and_nuls_on_some_lines_when_reading_then_each_is_a_row_with_why(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, (
        b"id,name\n"
        b"1,ok\n"
        b"2,Caf\xe9\n"                  # Latin-1, not UTF-8
        b"3,nul\x00here\n"
        b'4,"multi\n\xff line"\n'        # a bad byte inside a quoted field
        b"5,M\xc3\xbcller\n"             # real UTF-8 is fine
    ))

    got = list(CsvReader(path))

    assert [(r.line, r.id, r.error) for r in got] == [
        (2, "1", None),
        (3, "2", "line 3: not UTF-8 text (byte 0xe9); save the file as UTF-8"),
        (4, "3", "line 4: contains a NUL byte; is this a binary or UTF-16 file?"),
        (5, "4", "line 5: a quoted field runs into line 6, which cannot be read"),
        (6, '\ufffd line"', "line 6: not UTF-8 text (byte 0xff); save the file as UTF-8"),
        (7, "5", None),
    ]
    # What is reported must itself be writable as UTF-8 (and storable): no lone surrogates.
    assert got[1].values["name"] == "Caf\ufffd"
    assert got[2].values["name"] == "nul\ufffdhere"
    assert got[5].values["name"] == "Müller"


def test_given_a_field_over_the_csv_limit_when_reading_then_only_its_record_is_skipped(
    tmp_path: Path,
) -> None:
    huge = "x" * (FIELD_LIMIT + 1)
    path = write(tmp_path, f'id,note\n1,{huge}\n2,"{huge}\nmore"\n3,fine\n')

    got = rows_of(path)

    assert got == [
        (2, "1", f"line 2: field 'note' is {FIELD_LIMIT + 1:,} characters, over the limit "
                 f"of {FIELD_LIMIT:,}"),
        (3, "2", f"line 3: field 'note' is {FIELD_LIMIT + 6:,} characters, over the limit "
                 f"of {FIELD_LIMIT:,}"),
        (5, "3", None),
    ]


def test_given_a_line_longer_than_any_record_when_reading_then_it_is_skipped_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(csv_file, "MAX_RECORD_CHARS", 50)
    path = write(tmp_path, "id,note\n1," + "y" * 500 + "\n2,fine\n")

    assert rows_of(path) == [
        (2, "1", "line 2: the line is longer than 50 characters"),
        (3, "2", None),
    ]


def test_given_old_mac_line_endings_when_reading_then_each_line_is_a_row(tmp_path: Path) -> None:
    path = write(tmp_path, 'id,note\r1,a\r2,"b\rc"\r3,d\r')

    assert [(r.line, r.id, r.values["note"]) for r in CsvReader(path)] == [
        (2, "1", "a"), (3, "2", "b\rc"), (5, "3", "d")]


# --- writer -------------------------------------------------------------------------------


def test_given_decisions_when_writing_then_bytes_are_exact_utf8_lf_and_quoted(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.csv"
    writer = CsvWriter(out)
    writer.write("1", decision("1", previous_owner="ben", owner="ava", rule="named",
                               reason="rule named: rep ava"))
    writer.write("2", decision("2", outcome=Outcome.KEPT_EXISTING, previous_owner="x,y",
                               owner="x,y", reason='kept "x,y"'))
    writer.write("3", decision("3", outcome=Outcome.SKIPPED, reason="line 4: bad\nrow"))
    writer.write("4", decision("4", outcome=Outcome.UNASSIGNED, reason="Müller"))
    writer.close()

    assert out.read_bytes() == (
        b"id,previous_owner,owner,outcome,rule,reason\n"
        b"1,ben,ava,assigned,named,rule named: rep ava\n"
        b'2,"x,y","x,y",kept_existing,,"kept ""x,y"""\n'
        b'3,,,skipped,,"line 4: bad\nrow"\n'
        b"4,,,unassigned,,M\xc3\xbcller\n"
    )


def test_given_no_decisions_when_rendering_then_only_the_header() -> None:
    assert render([]) == ",".join(OUTPUT_COLUMNS) + "\n"
    assert OUTPUT_COLUMNS == ("id", "previous_owner", "owner", "outcome", "rule", "reason")


def test_given_a_stream_when_writing_then_it_is_flushed_not_closed() -> None:
    buffer = io.StringIO()
    writer = CsvWriter(buffer)
    writer.write("9", decision("9", owner="ava"))
    writer.close()

    assert not buffer.closed
    assert buffer.getvalue().splitlines()[1] == "9,,ava,assigned,,"


def test_given_a_missing_directory_when_opening_the_writer_then_output_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(OutputError, match="cannot write output"):
        CsvWriter(tmp_path / "nope" / "out.csv")


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("a=b", "a=b"),
        ("", ""),
        ("ava", "ava"),
    ],
)
def test_given_a_cell_a_spreadsheet_would_run_when_escaping_then_a_quote_leads_it(
    cell: str, written: str
) -> None:
    assert escape_formula(cell) == written


def test_given_formula_cells_when_writing_then_every_column_is_escaped() -> None:
    buffer = io.StringIO()
    writer = CsvWriter(buffer)
    writer.write("=1+1", decision("=1+1", previous_owner="@ben", owner="+ava", rule="-r",
                                  reason="=cmd|' /C calc'!A0"))
    writer.close()

    row = buffer.getvalue().splitlines()[1]
    assert row == "'=1+1,'@ben,'+ava,assigned,'-r,'=cmd|' /C calc'!A0"


def test_given_repeated_and_odd_cells_when_writing_many_then_the_bytes_of_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(csv_file, "_TAIL_CACHE_SIZE", 2)  # the cache fills and starts over
    rows = [
        ("1", decision("1", previous_owner="ben", owner="ava", rule="named", reason="r")),
        ("2", decision("2", previous_owner="ben", owner="ava", rule="named", reason="r")),
        ("a,b", decision("a,b", outcome=Outcome.KEPT_EXISTING, previous_owner="x,y",
                         owner="x,y", reason='kept "x,y"')),
        ('q"1', decision('q"1', outcome=Outcome.SKIPPED, reason="line 4: bad\nrow")),
        ("=1+1", decision("=1+1", previous_owner="@ben", owner="+ava", rule="-r",
                          reason="=cmd|' /C calc'!A0")),
        ("7", decision("7", owner="ava")),
        ("-5", decision("-5", owner="ava")),
        ("line\n2", decision("line\n2", outcome=Outcome.UNASSIGNED, reason="Müller")),
        ("", decision("", outcome=Outcome.SKIPPED, reason="line 9: empty id")),
        ("\rx", decision("\rx", owner="ava")),
        ("1", decision("1", previous_owner="ben", owner="ava", rule="named", reason="r")),
    ]
    one_by_one, many = io.StringIO(), io.StringIO()
    writer = CsvWriter(one_by_one)
    for row_id, d in rows:
        writer.write(row_id, d)
    batched = CsvWriter(many)

    # Chunks with no id to quote, one that starts a formula, and one that starts it mid-chunk.
    for at, end in ((0, 2), (2, 4), (4, 5), (5, 7), (7, len(rows))):
        batched.write_many(iter(rows[at:end]))

    assert many.getvalue() == one_by_one.getvalue()


FUZZ_CELLS = ["a", "b c", '"q,1"', '"multi\nline"', '"open', 'x"y', '"a"b', "", " ", '"', '""',
              '"x""y"', "Müller", "\x00", "=1", "\r", 'end"', '"\r\n"']


def fuzz_file(path: Path, seed: int, *, multiline: bool = True) -> Path:
    rng = random.Random(seed)
    end = rng.choice(["\n", "\r\n", "\r"])
    # Without the cells that open a quoted field over a line break, every line is one record
    # (or one broken line).
    cells = FUZZ_CELLS if multiline else [
        c for c in FUZZ_CELLS if c.count('"') % 2 == 0 and "\n" not in c and "\r" not in c]
    lines = [",".join(rng.choice(cells) if rng.random() < 0.3 else f"v{rng.randint(0, 99)}"
                      for _ in range(rng.choice([3, 3, 3, 2, 4])))
             if rng.random() > 0.1 else "" for _ in range(rng.randint(0, 40))]
    data = end.join(["id,name,owner", *lines]).encode("utf-8")
    if rng.random() < 0.2:
        data = data.replace(b"v1", b"\xff\xfe", 1)  # not UTF-8
    path.write_bytes(data + (end.encode() if rng.random() < 0.5 else b""))
    return path


def read_with_progress(path: Path) -> list[tuple[Row, int]]:
    reader = CsvReader(path)
    return [(row, reader.lines_read) for row in reader]


@pytest.mark.parametrize("block", [1, 3, 256])
def test_given_tricky_files_when_read_in_blocks_then_the_rows_of_record_by_record_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int,
) -> None:
    monkeypatch.setattr(csv_file, "_BLOCK_LINES", block)
    for seed in range(150):
        path = fuzz_file(tmp_path / f"{seed}.csv", seed)
        fast = read_with_progress(path)
        with monkeypatch.context() as slow:
            slow.setattr(CsvReader, "_block", lambda self, first, texts: None)
            assert fast == read_with_progress(path), seed


def read_by_spans(path: Path, size: int) -> tuple[list[Row], int]:
    """Rows as `route-file`'s workers read them: span by span while each span's lines are
    whole records, then on from the first span that is not with the reader; and how many
    spans were read on their own."""
    reader = CsvReader(path)
    start = reader.data_start()
    rows: list[Row] = []
    alone = 0
    if start is not None:
        for span in spans(path, start, size):
            got = None if span.end < 0 else read_span(path, span, reader.columns)
            if got is None:
                reader.skip_to(span.line)
                break
            rows.extend(got)
            alone += 1
        else:
            reader.close()
            return rows, alone
    return rows + list(reader), alone


@pytest.mark.parametrize("size", [1, 7, 64])
def test_given_tricky_files_when_read_in_spans_then_the_rows_of_the_reader(
    tmp_path: Path, size: int,
) -> None:
    alone = 0
    for seed in range(150):
        path = fuzz_file(tmp_path / f"{seed}.csv", seed, multiline=seed % 2 == 0)
        by_spans, n = read_by_spans(path, size)
        assert by_spans == list(CsvReader(path)), seed
        alone += n
    assert alone > 100  # many spans were read on their own, not by the reader


def test_given_a_file_when_cut_in_spans_then_they_cover_its_lines_and_bytes(
    tmp_path: Path,
) -> None:
    data = "\ufeffid,name\r\n1,a\r\n\r\n2,\"b\"\r3,c\n4,Müller"
    path = write(tmp_path, data)
    reader = CsvReader(path)
    start = reader.data_start()
    assert start == (len("\ufeffid,name\r\n".encode()), 2)

    cut = list(spans(path, start, 5))

    assert [(s.line, s.lines) for s in cut] == [(2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]
    assert cut[0].start == start[0] and cut[-1].end == len(data.encode())
    assert all(a.end == b.start for a, b in zip(cut, cut[1:], strict=False))
    rows = [row for s in cut for row in read_span(path, s, reader.columns) or []]
    assert [(r.line, r.values["name"]) for r in rows] == [
        (2, "a"), (4, "b"), (5, "c"), (6, "Müller")]


def test_given_a_quoted_field_over_a_line_break_when_reading_its_span_then_none(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, 'id,note\n1,"two\nlines"\n2,x\n')
    reader = CsvReader(path)
    start = reader.data_start()
    assert start is not None

    (span,) = spans(path, start, 1 << 16)

    assert read_span(path, span, reader.columns) is None


def test_given_no_line_break_for_megabytes_when_cut_then_the_rest_is_one_unread_span(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "id,note\n1,a\n2," + "x" * (5 * csv_file.MAX_RECORD_CHARS) + "\n3,b\n")
    reader = CsvReader(path)
    start = reader.data_start()
    assert start is not None

    cut = list(spans(path, start, 1 << 16))

    assert cut[-1].end == -1 and cut[-1].line == 3
    assert read_span(path, cut[0], reader.columns) == [Row(2, {"id": "1", "note": "a"})]
