"""Enrichment in the CRM pipeline (docs/routing-file.md#enrichment): a sweep, `explain` and
`simulate` through the CSV connector, which offers `accounts_by_name` to `company_match`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.csv.connector import CsvConnector
from sync.pipeline import Pipeline
from sync.ports import AccountNames
from sync.state import StateStore
from sync.state.sqlite import SqliteStateStore
from tests.builders import routing

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)

RULES = """
version: 1
reps: [{id: ava, crm_ids: {csv: u-ava}}, {id: uk}, {id: anyone}]
rules:
  - {name: follow-account, when: {object: lead}, assign: {account_owner: true}}
  - {name: united-kingdom, when: {country: GB}, assign: {rep: uk}}
fallback: {rep: anyone}
"""
ENRICH = "enrich: [company_match, phone_country]\n"

ROWS = """\
id,object,name,domain,email,phone,owner
a1,account,"Acme, Inc.",acme.com,,,u-ava
a2,account,Other Co,other.com,,,u-ava
l1,lead,ACME LLC,,bob@gmail.com,,
l2,lead,Nobody Alike,,carl@gmail.com,+44 20 7946 0000,
l3,lead,Acme,other.com,dan@other.com,,
"""


@pytest.fixture
def store(sqlite_store: SqliteStateStore) -> SqliteStateStore:
    return sqlite_store  # tests/conftest.py: the embedded store, state.db in tmp_path


def pipeline(tmp_path: Path, store: StateStore, text: str) -> Pipeline:
    source = tmp_path / "crm.csv"
    source.write_text(ROWS, encoding="utf-8")
    return Pipeline(CsvConnector(source, tmp_path / "out.csv"), routing(text), store,
                    clock=lambda: NOW)


def test_given_the_csv_connector_then_it_offers_accounts_by_name(tmp_path, store):
    connector = pipeline(tmp_path, store, RULES).connector
    assert isinstance(connector, AccountNames)
    assert sorted(connector.accounts_by_name(["Acme"])) == [("Acme, Inc.", "acme.com"),
                                                           ("Other Co", "other.com")]


def test_given_enrich_steps_when_sweeping_then_leads_follow_matched_accounts_and_audit_it(
        tmp_path, store):
    report = pipeline(tmp_path, store, RULES + ENRICH).sweep("lead", now=NOW)
    assert report.rules == {"follow-account": 2, "united-kingdom": 1}
    trail = {d.record_id: d for d in store.decisions()}
    assert trail["l1"].owner == "ava" and trail["l1"].rule == "follow-account"
    assert trail["l1"].trace[0].rule == "enrich company_match"
    assert "domain = acme.com" in trail["l1"].trace[0].detail
    assert trail["l2"].owner == "uk"
    assert trail["l2"].trace[0].detail == "country = GB from +44 20…"
    # l3's own domain has an account: it follows that one, never re-matched by its name.
    assert trail["l3"].owner == "ava"
    assert all(not s.rule.startswith("enrich ") for s in trail["l3"].trace)


def test_given_no_enrich_when_sweeping_then_the_same_leads_fall_back(tmp_path, store):
    report = pipeline(tmp_path, store, RULES).sweep("lead", now=NOW)
    assert report.rules == {"follow-account": 1, "(fallback)": 2}


def test_given_enrich_steps_when_explaining_and_simulating_then_they_decide_as_the_sweep(
        tmp_path, store):
    flow = pipeline(tmp_path, store, RULES + ENRICH)
    record, decision = flow.explain_record("lead", "l1", now=NOW)
    assert record is not None and record.domain == "acme.com"
    assert decision.owner == "ava" and decision.trace[0].rule == "enrich company_match"
    simulation = flow.simulate("lead", now=NOW)
    moved = {m.record_id: m.after for m in simulation.moves}
    assert moved == {"l1": "ava", "l2": "uk", "l3": "ava"}
