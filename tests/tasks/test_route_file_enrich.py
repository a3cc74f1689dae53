"""Enrichment end to end (docs/routing-file.md#enrichment): `route-file` in one process and
with worker processes, `explain --record`, and `overlaps`, where enrichment changes which rule
wins, and the audit trail keeps each step."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sync.compiler import load_routing
from sync.state import open_store
from tasks.cli import app
from tasks.route_file import route_file

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)

RULES = """\
version: 1
reps: [{id: ava}, {id: uk}, {id: cal}, {id: anyone}]
rules:
  - name: follow-account
    when: {object: {in: [lead, contact]}}
    assign: {account_owner: true}
  - name: united-kingdom
    when: {country: {eq: GB}}
    assign: {rep: uk}
  - name: california
    when: {state: {eq: CA}}
    assign: {rep: cal}
fallback: {rep: anyone}
"""
ENRICH = "enrich: [{company_match: {threshold: 90}}, phone_country, tld_country, state_codes]\n"

INPUT = """\
id,object,name,domain,email,phone,state,owner
a1,account,"ACME, Inc.",acme.com,,,,ava
l1,lead,Acme,,bob@gmail.com,,,
a2,account,Brit Ltd,brit.com,,+44 20 7946 0000,,
a3,account,Teeside,teeside.co.uk,,,,
a4,account,Golden,golden.com,,,California,
a5,account,Vanity,vanity.io,,,,
"""
# (rule, owner) per row without and with enrichment.
WITHOUT = {"a1": ("", "ava"), "l1": ("", "anyone"), "a2": ("", "anyone"), "a3": ("", "anyone"),
           "a4": ("", "anyone"), "a5": ("", "anyone")}
WITH = {"a1": ("", "ava"), "l1": ("follow-account", "ava"), "a2": ("united-kingdom", "uk"),
        "a3": ("united-kingdom", "uk"), "a4": ("california", "cal"), "a5": ("", "anyone")}


def routed(path: Path) -> dict[str, tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id,previous_owner,owner,outcome,rule,reason"
    return {cells[0]: (cells[4], cells[2]) for cells in (line.split(",") for line in lines[1:])}


@pytest.mark.parametrize("workers", [0, 2])
def test_given_enrich_steps_when_routing_a_file_then_enrichment_changes_which_rule_wins(
        tmp_path: Path, workers: int) -> None:
    source = tmp_path / "in.csv"
    source.write_text(INPUT, encoding="utf-8")
    results = {}
    for label, text in (("without", RULES), ("with", RULES + ENRICH)):
        config = tmp_path / f"{label}.yaml"
        config.write_text(text, encoding="utf-8")
        out = tmp_path / f"{label}.csv"
        with open_store(f"sqlite:///{tmp_path / f'{label}.db'}") as state:
            route_file(load_routing(config), state, source, out, NOW, workers=workers)
            trail = {d.record_id: d for d in state.decisions()}
        results[label] = (routed(out), trail)
    assert results["without"][0] == WITHOUT
    assert results["with"][0] == WITH
    # The audit trail keeps each step before the rules, and nothing where nothing changed.
    trail = results["with"][1]
    first = {record_id: d.trace[0] for record_id, d in trail.items() if d.trace}
    assert first["l1"].rule == "enrich company_match" and first["l1"].result == "enriched"
    assert "acme.com" in first["l1"].detail and "'ACME, Inc.'" in first["l1"].detail
    assert first["a2"].detail == "country = GB from +44 20…"
    assert first["a3"].detail == "country = GB from .co.uk"
    assert first["a4"].detail == "state = US-CA California from California"
    assert all(not s.rule.startswith("enrich ") for s in trail["a5"].trace)
    assert all(not s.rule.startswith("enrich ") for d in results["without"][1].values()
               for s in d.trace)


def test_given_enrich_steps_when_explaining_a_json_record_then_the_trace_shows_them(
        tmp_path: Path) -> None:
    config = tmp_path / "r.yaml"
    config.write_text(RULES + ENRICH, encoding="utf-8")
    result = CliRunner().invoke(app, [
        "explain", "--config", str(config), "--now", NOW.isoformat(),
        "--state", f"sqlite:///{tmp_path / 's.db'}",
        "--record", json.dumps({"id": "x", "phone": "+44 20 7946 0000"})])
    assert result.exit_code == 0, result.output
    assert "enrich phone_country: enriched (country = GB from +44 20…)" in result.output
    assert "rule: united-kingdom" in result.output
    as_json = CliRunner().invoke(app, [
        "explain", "--config", str(config), "--now", NOW.isoformat(), "--json",
        "--state", f"sqlite:///{tmp_path / 's.db'}",
        "--record", json.dumps({"id": "x", "state": "California"})])
    decision = json.loads(as_json.output)
    assert decision["rule"] == "california"
    assert decision["trace"][0] == {"rule": "enrich state_codes", "result": "enriched",
                                    "detail": "state = US-CA California from California"}


def test_given_enrich_steps_when_counting_overlaps_then_rules_win_as_route_file_decides(
        tmp_path: Path) -> None:
    config = tmp_path / "r.yaml"
    config.write_text(RULES + ENRICH, encoding="utf-8")
    source = tmp_path / "in.csv"
    source.write_text(INPUT, encoding="utf-8")
    result = CliRunner().invoke(app, ["overlaps", "--config", str(config), "--input",
                                      str(source), "--json", "--now", NOW.isoformat()])
    assert result.exit_code == 0, result.output
    wins = {r["rule"]: r["wins"] for r in json.loads(result.output)["rules"]}
    assert wins == {"follow-account": 1, "united-kingdom": 2, "california": 1}


def test_given_a_bad_enrich_step_when_routing_a_file_then_exit_2_names_the_path(
        tmp_path: Path) -> None:
    config = tmp_path / "r.yaml"
    config.write_text(RULES + "enrich: [state_codes, phone_contry]\n", encoding="utf-8")
    source = tmp_path / "in.csv"
    source.write_text(INPUT, encoding="utf-8")
    result = CliRunner().invoke(app, ["route-file", "--config", str(config), "--input",
                                      str(source), "--output", str(tmp_path / "o.csv"),
                                      "--state", f"sqlite:///{tmp_path / 's.db'}"])
    assert result.exit_code == 2
    assert "enrich[1]: expected an enricher, one of state_codes" in result.output
    assert "Traceback" not in result.output


def test_given_no_enrich_key_when_describing_rows_then_the_hot_path_is_unchanged(
        tmp_path: Path) -> None:
    # Without `enrich:` rows are described exactly as before: 4-item tuples, no Record built,
    # no trace steps carried (the 1M-row path must not pay for a stage it does not use).
    from connectors.csv.file import CsvReader
    from tasks.route_file import _describe

    config = tmp_path / "r.yaml"
    config.write_text(RULES, encoding="utf-8")
    source = tmp_path / "in.csv"
    source.write_text(INPUT, encoding="utf-8")
    compiled = load_routing(config)
    assert compiled.enrichment is None
    reader = CsvReader(source)
    try:
        items = _describe(list(reader), compiled, follow=True)
    finally:
        reader.close()
    assert [len(item) for item in items] == [4] * 6
    config.write_text(RULES + ENRICH, encoding="utf-8")
    reader = CsvReader(source)
    try:
        items = _describe(list(reader), load_routing(config), follow=True)
    finally:
        reader.close()
    # Rows enrichment changed carry its steps as a fifth item; the others stay 4 long.
    assert [len(item) for item in items] == [4, 4, 5, 5, 5, 4]
