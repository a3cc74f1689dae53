"""`tasks.route_file.route_file`: chunked, in-order routing of a CSV file against a state store."""

from __future__ import annotations

import errno
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tasks.route_file as route_file_module
from connectors.csv.file import CsvReader, CsvWriter, InputError, OutputError, count_rows
from sync.compiler import CompiledRouting, load_routing
from sync.engine import route_batch, skipped
from sync.normalize import build_record
from sync.state import StateStore, open_store
from sync.state.sqlite import SqliteStateStore
from tasks.cli import app
from tasks.route_file import route_file
from tests.builders import write_routing

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)

ROUTING = """\
version: 1
timezone: UTC
reps: [{id: ben}, {id: cara}, {id: dev}, {id: maya}]
pools:
  smb: {members: [ben, cara, dev], strategy: round_robin}
  capped: {members: [ben, cara], strategy: round_robin, cap: {max: 1, per: day},
           overflow: {rep: maya}}
rules:
  - name: follow-account
    when: {object: {in: [lead, contact]}}
    assign: {account_owner: true}
  - name: big
    when: {employees: {gt: 1000}}
    assign: {pool: capped}
  - name: everyone
    assign: {pool: smb}
"""


@pytest.fixture
def routing(tmp_path: Path) -> CompiledRouting:
    return load_routing(write_routing(tmp_path, ROUTING))


@pytest.fixture
def store(sqlite_store: SqliteStateStore) -> SqliteStateStore:
    return sqlite_store  # tests/conftest.py: the embedded store, state.db in tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


def output_rows(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "id,previous_owner,owner,outcome,rule,reason"
    assert lines[-1] == ""
    return [line.split(",")[:5] for line in lines[1:-1]]


def test_given_more_rows_than_a_chunk_when_routing_then_order_rotation_and_progress_hold(
    routing: CompiledRouting, store: StateStore, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(route_file_module, "CHUNK", 3)
    source = write(tmp_path / "in.csv", "id\n" + "".join(f"r{i}\n" for i in range(8)))
    out = tmp_path / "out.csv"
    ticks: list[int] = []

    summary = route_file(routing, store, source, out, NOW, progress=ticks.append)

    assert ticks == [3, 3, 2]
    assert [r[0] for r in output_rows(out)] == [f"r{i}" for i in range(8)]
    # Strict rotation across chunk boundaries: each chunk starts after the last one's turn.
    assert [r[2] for r in output_rows(out)] == ["ben", "cara", "dev"] * 2 + ["ben", "cara"]
    assert summary.rows == 8
    assert summary.outcomes == {"assigned": 8}
    assert summary.pools == {"smb": {"ben": 3, "cara": 3, "dev": 2}}
    assert len(store.decisions()) == 8


def test_given_malformed_rows_in_a_chunk_when_routing_then_they_are_audited_and_counted(
    routing: CompiledRouting, store: StateStore, tmp_path: Path
) -> None:
    source = write(tmp_path / "in.csv", "id,name\na,x\n,y\nc,z,extra\nd,w\n")
    out = tmp_path / "out.csv"

    summary = route_file(routing, store, source, out, NOW)

    assert [r[:4] for r in output_rows(out)] == [
        ["a", "", "ben", "assigned"],
        ["", "", "", "skipped"],
        ["c", "", "", "skipped"],
        ["d", "", "cara", "assigned"],
    ]
    assert summary.outcomes == {"assigned": 2, "skipped": 2}
    assert summary.malformed == ["line 3: empty id", "line 4: expected 2 columns, found 3"]
    [audited] = store.decisions(record_id="c")
    assert audited.outcome == "skipped" and audited.reason.startswith("line 4:")
    assert [d.record_id for d in store.decisions(record_id="line 3")] == ["line 3"]


def test_given_a_lead_listed_before_its_account_when_routing_then_it_follows_the_account(
    routing: CompiledRouting, store: StateStore, tmp_path: Path
) -> None:
    source = write(tmp_path / "in.csv", (
        "id,object,email,domain,owner\n"
        "L1,lead,jo@eu.acme.com,,\n"     # the account row comes later in the file
        "A1,account,,acme.com,cara\n"
        "L2,contact,al@acme.com,,\n"
        "L3,lead,x@gmail.com,,\n"        # free mail never matches an account
    ))
    out = tmp_path / "out.csv"

    route_file(routing, store, source, out, NOW)

    assert output_rows(out) == [
        ["L1", "", "cara", "assigned", "follow-account"],
        ["A1", "cara", "cara", "kept_existing", ""],
        ["L2", "", "cara", "assigned", "follow-account"],
        ["L3", "", "ben", "assigned", "everyone"],
    ]


def test_given_an_exhausted_pool_when_summarizing_then_overflow_is_not_a_members_turn(
    routing: CompiledRouting, store: StateStore, tmp_path: Path
) -> None:
    source = write(tmp_path / "in.csv", "id,employees\n1,5000\n2,5000\n3,5000\n")

    summary = route_file(routing, store, source, tmp_path / "out.csv", NOW)

    assert [r[2:4] for r in output_rows(tmp_path / "out.csv")] == [
        ["ben", "assigned"], ["cara", "assigned"], ["maya", "fallback"]]
    assert summary.pools == {"capped": {"ben": 1, "cara": 1}}
    assert summary.reps == {"ben": 1, "cara": 1, "maya": 1}
    assert summary.rules == {"big": 3}


def test_given_an_unwritable_output_when_routing_then_nothing_is_routed(
    routing: CompiledRouting, store: StateStore, tmp_path: Path
) -> None:
    source = write(tmp_path / "in.csv", "id\n1\n")

    for target in (tmp_path / "missing" / "out.csv", tmp_path):
        with pytest.raises(OutputError) as caught:
            route_file(routing, store, source, target, NOW)
        assert not caught.value.started

    assert store.decisions() == []


def test_given_an_unusable_input_when_routing_then_input_error_and_no_output(
    routing: CompiledRouting, store: StateStore, tmp_path: Path
) -> None:
    out = tmp_path / "out.csv"

    with pytest.raises(InputError, match="no `id` column"):
        route_file(routing, store, write(tmp_path / "in.csv", "name\nx\n"), out, NOW)

    assert not out.exists()
    assert not (tmp_path / "out.csv.partial").exists()


def test_given_a_failure_mid_run_when_routing_then_no_half_file_and_old_output_survives(
    routing: CompiledRouting, store: StateStore, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(route_file_module, "CHUNK", 2)
    real = route_file_module.route_batch
    calls = []

    def flaky(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("state went away")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(route_file_module, "route_batch", flaky)
    out = write(tmp_path / "out.csv", "previous result\n")

    with pytest.raises(RuntimeError, match="state went away"):
        route_file(routing, store, write(tmp_path / "in.csv", "id\n1\n2\n3\n4\n"), out, NOW)

    assert out.read_text(encoding="utf-8") == "previous result\n"
    assert not (tmp_path / "out.csv.partial").exists()


def test_given_a_full_disk_mid_run_when_routing_then_output_error_says_routing_had_started(
    routing: CompiledRouting, store: StateStore, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def full(self: CsvWriter, *rows: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(CsvWriter, "write", full)
    monkeypatch.setattr(CsvWriter, "write_many", full)
    out = tmp_path / "out.csv"
    source = write(tmp_path / "in.csv", "id\n1\n")

    with pytest.raises(OutputError, match="No space left on device") as caught:
        route_file(routing, store, source, out, NOW)
    assert caught.value.started
    assert not out.exists() and not (tmp_path / "out.csv.partial").exists()

    # The command line reports it without a traceback, and exit 1: turns were already taken.
    result = CliRunner().invoke(app, [
        "route-file", "--config", str(tmp_path / "routing.yaml"), "--input", str(source),
        "--output", str(out), "--state", f"sqlite:///{tmp_path / 'cli.db'}",
        "--now", "2026-11-25T12:00:00Z"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "No space left on device" in result.stderr
    assert not out.exists()


def test_given_a_malformed_lead_row_when_routing_then_its_skip_is_audited_as_a_lead(
    routing: CompiledRouting, store: StateStore, tmp_path: Path
) -> None:
    source = write(tmp_path / "in.csv", "id,object,email\nL1,Lead,a@b.com,extra\nL2,gadget,\n")

    route_file(routing, store, source, tmp_path / "out.csv", NOW)

    assert [(d.outcome, d.object) for d in store.decisions(record_id="L1")] == [
        ("skipped", "lead")]
    assert [(d.outcome, d.object) for d in store.decisions(record_id="L2")] == [
        ("skipped", "account")]  # an unknown object cannot be recorded as such


def test_given_account_row_with_only_an_email_when_seeding_then_its_domain_maps_to_owner(
        tmp_path):
    from tasks.route_file import AccountOwners, seed_account_owners

    source = tmp_path / "in.csv"
    source.write_text("id,object,email,owner\nA1,account,jo@acme.com,ava\n"
                      "L1,lead,x@eu.y.com,\n")
    assert seed_account_owners(source) == AccountOwners(
        {"acme.com": "ava"}, frozenset({"eu.y.com", "y.com"}))


# --- no lost rows (issue 8, point 1) ---------------------------------------------------------


def test_given_the_issue_file_with_an_unclosed_quote_when_routing_then_every_line_is_a_row(
    routing: CompiledRouting, store: StateStore, tmp_path: Path
) -> None:
    source = write(tmp_path / "in.csv", (
        "id,name,domain\n"
        "1,Acme,acme.com\n"
        '2,"Broken,foo.com\n'
        "3,Three,three.com\n"
        "4,Four,four.com\n"
        "5,Five,five.com\n"
    ))
    out = tmp_path / "out.csv"

    summary = route_file(routing, store, source, out, NOW)

    assert output_rows(out) == [
        ["1", "", "ben", "assigned", "everyone"],
        ["2", "", "", "skipped", ""],
        ["3", "", "cara", "assigned", "everyone"],
        ["4", "", "dev", "assigned", "everyone"],
        ["5", "", "ben", "assigned", "everyone"],
    ]
    assert summary.rows == 5 and summary.outcomes == {"assigned": 4, "skipped": 1}
    assert summary.malformed == [
        "line 3: a quoted field is not closed before the end of the file"]


def test_given_bad_bytes_and_a_huge_field_when_routing_then_only_those_lines_are_skipped(
    routing: CompiledRouting, store: StateStore, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(b"id,name\n1,ok\n2,Caf\xe9\n3,nul\x00\n4," + b"x" * 200_000 + b"\n5,ok\n")
    out = tmp_path / "out.csv"

    route_file(routing, store, source, out, NOW)

    lines = out.read_text(encoding="utf-8").splitlines()[1:]
    assert [line.split(",")[:4] for line in lines] == [
        ["1", "", "ben", "assigned"], ["2", "", "", "skipped"], ["3", "", "", "skipped"],
        ["4", "", "", "skipped"], ["5", "", "cara", "assigned"]]
    assert "line 3: not UTF-8 text (byte 0xe9)" in lines[1]
    assert "line 4: contains a NUL byte" in lines[2]
    assert "line 5: field 'name' is 200,000 characters" in lines[3]
    # The skips are audited too: their text was made storable (no lone surrogates).
    assert [d.outcome for d in store.decisions(record_id="2")] == ["skipped"]


def test_given_formula_like_values_when_routing_then_output_cells_cannot_run_as_formulas(
    routing: CompiledRouting, store: StateStore, tmp_path: Path
) -> None:
    source = write(tmp_path / "in.csv", 'id,owner\n"=HYPERLINK(""http://x"",""y"")",@evil\n')
    out = tmp_path / "out.csv"

    route_file(routing, store, source, out, NOW)

    assert out.read_text(encoding="utf-8").splitlines()[1].split(",")[:4] == [
        "\"'=HYPERLINK(\"\"http://x\"\"", "\"\"y\"\")\"", "'@evil", "'@evil"]


# --- duplicate ids (issue 8, point 10) -------------------------------------------------------


def test_given_a_duplicate_id_when_routing_then_it_is_routed_once_and_reported(
    routing: CompiledRouting, store: StateStore, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(route_file_module, "CHUNK", 2)  # a duplicate in a later chunk too
    source = write(tmp_path / "in.csv", "id\nA\nB\nA\nC\nB\nA\n")
    out = tmp_path / "out.csv"

    summary = route_file(routing, store, source, out, NOW)

    assert [r[:4] for r in output_rows(out)] == [
        ["A", "", "ben", "assigned"],
        ["B", "", "cara", "assigned"],
        ["A", "", "", "skipped"],
        ["C", "", "dev", "assigned"],   # the duplicates took no pool turn
        ["B", "", "", "skipped"],
        ["A", "", "", "skipped"],
    ]
    assert summary.pools == {"smb": {"ben": 1, "cara": 1, "dev": 1}}
    assert summary.malformed == [
        "line 4: duplicate id A, routed once on line 2",
        "line 6: duplicate id B, routed once on line 3",
        "line 7: duplicate id A, routed once on line 2",
    ]
    assert [d.outcome for d in store.decisions(record_id="A")] == [
        "skipped", "skipped", "assigned"]


def test_given_a_malformed_first_row_when_its_id_comes_again_then_the_second_is_routed(
    routing: CompiledRouting, store: StateStore, tmp_path: Path
) -> None:
    source = write(tmp_path / "in.csv", "id,name\nA,x,extra\nA,y\n")
    out = tmp_path / "out.csv"

    route_file(routing, store, source, out, NOW)

    assert [r[:4] for r in output_rows(out)] == [
        ["A", "", "", "skipped"], ["A", "", "ben", "assigned"]]


# --- parallel preparation (issue 8, point 12) ------------------------------------------------


def generated_input(path: Path, n: int, *, multiline: str = "anywhere") -> Path:
    """`multiline`: where notes hold a quoted line break: "anywhere", "middle" (one row) or
    "nowhere"."""
    import random

    rng = random.Random(8)
    lines = ["id,object,domain,email,employees,owner,note"]
    for k in range(n):
        kind = rng.choice(["account", "account", "account", "lead", "contact"])
        domain = f"c{rng.randrange(n // 4)}.example.com"
        row_id = f"R{rng.randrange(n)}"  # some ids repeat
        owner = rng.choice(["", "", "", "cara", "005000000000INTEG", "=x"])
        note = rng.choice(["", "plain", '"multi\nline"' if multiline == "anywhere" else "x",
                           "-1"])
        if multiline == "middle" and k == n // 2:
            note = '"multi\nline"'
        if k % 89 == 0:
            note = "M\xfcller \xff"  # not UTF-8 once encoded below: a broken line
        if k % 83 == 0:
            lines.append("")
        employees = rng.choice(["", "12", "5,000", "2k"])
        if k % 97 == 0:
            lines.append(f"{row_id},{kind},{domain}")  # too few columns
            continue
        lines.append(f"{row_id},{kind},{domain if kind == 'account' else ''},"
                     f"{'x@' + domain if kind != 'account' else ''},\"{employees}\",{owner},"
                     f"{note}")
    text = "\n".join(lines) + "\n"
    path.write_bytes(text.replace("\xff", "\udcff").encode("utf-8", "surrogateescape"))
    return path


@pytest.mark.parametrize("multiline", ["anywhere", "middle", "nowhere"])
def test_given_thousands_of_rows_when_routed_in_parallel_then_output_is_byte_identical(
    routing: CompiledRouting, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, multiline: str,
) -> None:
    monkeypatch.setattr(route_file_module, "CHUNK", 300)  # many chunks, several in flight
    # Many spans the workers read themselves; with a quoted line break in the middle, the
    # main process reads on from its span.
    monkeypatch.setattr(route_file_module, "SPAN_BYTES", 9000)
    source = generated_input(tmp_path / "in.csv", 4000, multiline=multiline)
    resumed: list[int] = []
    skip_to = CsvReader.skip_to
    monkeypatch.setattr(CsvReader, "skip_to",
                        lambda self, line: (resumed.append(line), skip_to(self, line))[1])
    outputs = []
    for workers in (0, 2):
        out = tmp_path / f"out{workers}.csv"
        ticks: list[int] = []
        with open_store(f"sqlite:///{tmp_path / f's{workers}.db'}") as state:
            summary = route_file(routing, state, source, out, NOW, workers=workers,
                                 progress=ticks.append)
            audited = len(state.decisions())
        outputs.append((out.read_bytes(), summary, audited))
        assert sum(ticks) == count_rows(source) and min(ticks) >= 0  # every line, once

    (single, single_summary, single_audit), (parallel, parallel_summary, parallel_audit) = (
        outputs)
    assert parallel == single
    assert parallel_summary == single_summary and parallel_audit == single_audit
    assert single_summary.rows == 4000 == single_audit
    # The generated file exercises what parallelism could disturb: turns, leads, skips.
    assert set(single_summary.outcomes) == {"assigned", "fallback", "kept_existing", "skipped"}
    assert single_summary.pools["smb"].total() > 400
    assert single_summary.rules["follow-account"] > 100
    # Where the main process read on by itself: from the first span, from the middle, never.
    assert {"anywhere": resumed == [2], "middle": len(resumed) == 1 and 1000 < resumed[0] < 2500,
            "nowhere": resumed == []}[multiline], resumed


def test_given_a_mixed_batch_when_summarized_at_once_then_counts_as_one_by_one(
    routing: CompiledRouting, store: StateStore
) -> None:
    records = [build_record({"id": str(k), "employees": "5000" if k % 3 else "5",
                             "owner": "ben" if k % 4 == 0 else ""}) for k in range(30)]
    decisions = route_batch(records, routing, store, NOW, dry_run=True)
    decisions.append(skipped("line 9", "line 9: empty id", NOW))
    one_by_one = route_file_module.FileSummary()
    for d in decisions:
        one_by_one.add(d)

    at_once = route_file_module.FileSummary()
    at_once.add_many(decisions)

    assert at_once == one_by_one
    assert at_once.pools["smb"] and at_once.pools["capped"]  # turns were counted
    assert at_once.rows == 31


def test_given_rows_when_described_for_routing_then_rules_match_as_on_their_records(
    routing: CompiledRouting, tmp_path: Path,
) -> None:
    rows = list(CsvReader(generated_input(tmp_path / "in.csv", 600, multiline="nowhere")))

    items = route_file_module._describe(rows, routing, follow=True)

    described = {item[0]: item[3] for item in items if len(item) == 4}
    assert len(described) > 500
    for row in rows:
        if row.line not in described:
            continue
        record = build_record(row.values)
        matches = tuple(i for i in range(len(routing.rules))
                        if routing.first_match(record, i) == i)
        fields = described[row.line]
        assert (fields[0], fields[1], fields[3], fields[-1]) == (
            record.id, record.object, record.owner, matches)


@pytest.mark.parametrize("use_json", [True, False])
def test_given_more_ids_than_one_lookup_when_asking_first_lines_then_each_seen_one_answers(
    use_json: bool,
) -> None:
    odd = ["é", "😀", 'q"x', "b\\s", "c\ttab\x01", "\u2028", "12", " sp ", "{}"]
    seen = route_file_module._SeenIds(use_json=use_json)
    try:
        seen.add([(f"id{k}", k + 2) for k in range(0, 1300, 3)] + [(o, 9) for o in odd])

        found = seen.first_lines([f"id{k}" for k in range(1234)] + ["id3", "id3", *odd, "é2"])
    finally:
        seen.close()

    assert found == {f"id{k}": k + 2 for k in range(0, 1234, 3)} | {o: 9 for o in odd}


def test_given_the_command_line_when_loaded_for_route_file_then_no_sqlalchemy_is_imported() -> None:
    # route-file's start-up and memory are measured (benchmarks/route_file_1m.py): the
    # embedded store opens its file without SQLAlchemy, and no other command may load it at
    # import time for route-file to pay (the overrides command once did: +0.35 s CPU).
    probe = ("import sys, tasks.cli, tasks.route_file, sync.state.sqlite; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('sqlalchemy', 'alembic')))")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True, cwd=Path(__file__).parents[2])

    assert found.stdout.strip() == "[]"
