"""The CSV file connector: `CsvReader` for route-file input, `CsvWriter` for its result file."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.csv.file import (
    OUTPUT_COLUMNS,
    CsvReader,
    CsvWriter,
    InputError,
    OutputError,
    count_rows,
    render,
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
        (b"id,name\n1,a\n2,Caf\xe9\n", "line 3: not UTF-8 text (byte 0xe9)"),
        (b"id,na\xffme\n", "line 1: not UTF-8 text (byte 0xff)"),
        (b"\xff\xfei\x00d\x00\n\x00", "line 1: not UTF-8"),  # UTF-16
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


def test_given_a_bad_byte_deep_in_the_file_when_reading_then_rows_before_it_were_yielded(
    tmp_path: Path,
) -> None:
    body = "".join(f"{i},name{i}\n" for i in range(5000))
    path = write(tmp_path, b"id,name\n" + body.encode() + b"x,\xe9\n")
    seen = []

    with pytest.raises(InputError, match="line 5002: not UTF-8"):
        seen.extend(row.id for row in CsvReader(path))

    assert seen[:3] == ["0", "1", "2"]


def test_given_a_file_with_malformed_and_blank_rows_when_counting_then_rows_are_counted(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "id,a\n1,x\n\n2\n,y\n3,z,extra\n")

    assert count_rows(path) == 4
    assert count_rows(write(tmp_path, "id\n", "header.csv")) == 0


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
