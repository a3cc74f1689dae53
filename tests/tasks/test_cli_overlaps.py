"""`account-router overlaps`: exact against `route-file` and against each rule's own clauses."""

from __future__ import annotations

import csv
import json
import random
import xml.etree.ElementTree as ET
from collections import Counter
from itertools import combinations
from pathlib import Path

import pytest

from connectors.csv.file import CsvReader
from sync.compiler import load_routing
from sync.normalize import build_record
from tests.tasks.test_cli_simulate import invoke

NOW = "2026-12-01T10:00:00Z"

ROUTING = """\
version: 1
reps: [{id: ava}, {id: ben}, {id: cara}, {id: dev, active: false}]
pools:
  smb: {members: [ben, cara], cap: {max: 40}}
rules:
  - {name: named, when: {domain: {in: [acme.com, globex.com]}}, assign: {rep: ava}}
  - {name: gone-rep, when: {country: {eq: DE}}, assign: {rep: dev}}
  - {name: big, when: {employees: {gt: 500}}, assign: {pool: smb}}
  - {name: us, when: {country: {eq: US}}, assign: {pool: smb}}
  - {name: never, when: {all: [{country: {eq: US}}, {country: {eq: FR}}]}, assign: {rep: ava}}
  - {name: rest, when: {employees: {lt: 100}}, assign: {rep: cara}}
fallback: {rep: ben}
"""


pytestmark = pytest.mark.usefixtures("isolated")  # tests/tasks/conftest.py


def book(path: Path, n: int = 400, seed: int = 7) -> Path:
    rng = random.Random(seed)
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "domain", "country", "employees", "owner"])
        for i in range(n):
            out.writerow([f"r{i}", rng.choice(["acme.com", "globex.com", "x.io", "y.com", ""]),
                          rng.choice(["US", "DE", "FR", "GB", ""]),
                          rng.choice(["5", "50", "150", "600", "5000", ""]),
                          rng.choice(["", "", "", "ava", "someone-else"])])
        out.writerow(["r3", "acme.com", "US", "1", ""])  # a duplicate id: reported, not routed
        out.writerow(["", "acme.com", "US", "1", ""])  # malformed: no id
    return path


def test_given_a_csv_when_counting_overlaps_then_wins_equal_route_file_and_matches_each_rule(
        tmp_path):
    config = tmp_path / "r.yaml"
    config.write_text(ROUTING)
    data = book(tmp_path / "book.csv")

    result = invoke("overlaps", "--config", config, "--input", data, "--now", NOW, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)

    # Wins: what route-file does on the same rows (a fresh state: its first run).
    routed = invoke("route-file", "--config", config, "--input", data, "--output",
                    tmp_path / "out.csv", "--now", NOW, "--state",
                    f"sqlite:///{tmp_path / 'fresh.db'}", "--quiet")
    assert routed.exit_code == 1  # the malformed and duplicate rows are skipped
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    won = Counter(r["rule"] for r in rows if r["outcome"] in ("assigned", "fallback")
                  and r["rule"])
    by_rule = {r["rule"]: r for r in report["rules"]}
    assert {name: r["wins"] for name, r in by_rule.items() if r["wins"]} == dict(won)
    # Matches and pairs: every rule's clauses, evaluated one by one on each routable row.
    routing = load_routing(config)
    matched: list[list[str]] = []
    seen: set[str] = set()
    reader = CsvReader(data)
    for row in reader:
        record_id = row.values.get("id", "").strip()
        if row.error or not record_id or record_id in seen:
            continue
        seen.add(record_id)
        record = build_record(row.values)
        matched.append([rule.name for rule in routing.rules
                        if all(c.test(record) for c in rule.clauses)])
    reader.close()
    assert {n: r["matches"] for n, r in by_rule.items()} == {
        rule.name: sum(rule.name in m for m in matched) for rule in routing.rules}
    pairs = Counter(p for m in matched for p in combinations(m, 2))
    assert {(p["a"], p["b"]): p["both"] for p in report["pairs"]} == dict(pairs)
    # Every match is won or lost to someone; dead rules are the ones that never win.
    for r in report["rules"]:
        assert r["wins"] + sum(r["lost_to"].values()) == r["matches"]
        assert r["dead"] == (r["wins"] == 0)
    assert by_rule["gone-rep"]["dead"] and by_rule["never"]["dead"]
    assert by_rule["never"]["matches"] == 0
    assert by_rule["gone-rep"]["matches"] > 0  # matched, but its rep has left: others win
    assert by_rule["named"]["lost_to"].get("(kept existing owner)", 0) > 0
    assert report["records"] == len(rows) == 402


def test_given_the_table_and_svg_when_counting_then_dead_rules_are_named_and_the_svg_parses(
        tmp_path):
    config = tmp_path / "r.yaml"
    config.write_text(ROUTING)
    data = book(tmp_path / "book.csv", n=60)

    result = invoke("overlaps", "--config", config, "--input", data, "--now", NOW,
                    "--svg", tmp_path / "o.svg")

    assert result.exit_code == 0, result.output
    assert "never (never wins)" in result.stdout and "gone-rep (never wins)" in result.stdout
    assert "records both rules match" in result.stdout
    svg = ET.parse(tmp_path / "o.svg").getroot()
    cells = svg.findall("{http://www.w3.org/2000/svg}rect")
    assert len(cells) == 6 * 6  # a cell for every pair of the six rules


def test_given_a_hostile_rule_name_when_drawing_the_svg_then_it_is_escaped(tmp_path):
    config = tmp_path / "r.yaml"
    config.write_text('version: 1\nreps: [{id: ava}]\nrules:\n'
                      '  - {name: "<script>alert(1)</script>", assign: {rep: ava}}\n')
    data = tmp_path / "b.csv"
    data.write_text("id\n1\n")
    assert invoke("overlaps", "--config", config, "--input", data, "--svg",
                  tmp_path / "o.svg").exit_code == 0
    text = (tmp_path / "o.svg").read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    ET.fromstring(text)


def test_given_the_csv_connector_when_counting_then_the_same_counts_as_the_file(
        tmp_path, monkeypatch):
    config = tmp_path / "r.yaml"
    config.write_text(ROUTING)
    data = book(tmp_path / "book.csv", n=80)
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[:-2]) + "\n")  # the connector reads well-formed rows only
    monkeypatch.setenv("ACCOUNT_ROUTER_CSV_INPUT", str(data))
    monkeypatch.setenv("ACCOUNT_ROUTER_CSV_OUTPUT", str(tmp_path / "routed.csv"))

    from_crm = invoke("overlaps", "--config", config, "--crm", "csv", "--object", "account",
                      "--now", NOW, "--json")
    from_file = invoke("overlaps", "--config", config, "--input", data, "--now", NOW, "--json")

    assert from_crm.exit_code == 0, from_crm.output
    assert json.loads(from_crm.stdout) == json.loads(from_file.stdout)


@pytest.mark.parametrize("args", [
    [],  # neither source
    ["--input", "b.csv", "--crm", "csv", "--object", "account"],
    ["--crm", "csv"],
    ["--input", "b.csv", "--object", "account"],
])
def test_given_the_wrong_sources_when_counting_then_exit_2_says_which(tmp_path, args):
    config = tmp_path / "r.yaml"
    config.write_text(ROUTING)
    (tmp_path / "b.csv").write_text("id\n1\n")
    result = invoke("overlaps", "--config", config, *args)
    assert result.exit_code == 2
    assert "--crm" in result.stderr or "--input" in result.stderr


def test_given_a_missing_input_when_counting_then_exit_2_names_the_file(tmp_path):
    config = tmp_path / "r.yaml"
    config.write_text(ROUTING)
    result = invoke("overlaps", "--config", config, "--input", tmp_path / "nope.csv")
    assert result.exit_code == 2 and "nope.csv" in result.stderr
