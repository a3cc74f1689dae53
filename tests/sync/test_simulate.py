"""`Pipeline.simulate` with the decision history: the rule and instant before, routed counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sync.history import History
from sync.models import Decision, Outcome
from sync.pipeline import ROUTED_WINDOW, Move, OwnerLoad, Pipeline
from sync.state import open_store
from sync.state.base import StateStore
from tests.builders import routing
from tests.fakes import FakeCrm, hubspot_owners

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(days=2)
LONG_AGO = NOW - ROUTED_WINDOW - timedelta(days=10)

REPS = """
reps:
  - {id: ava, crm_ids: {hubspot: "101"}}
  - {id: cara, crm_ids: {hubspot: "106"}}
  - {id: dev, crm_ids: {hubspot: "107"}}
  - {id: eli, crm_ids: {hubspot: "108"}}
"""
OLD = "version: 1\n" + REPS + """
pools:
  smb: {members: [cara, dev, eli]}
rules:
  - {name: named, when: {domain: {eq: acme.com}}, assign: {rep: ava}}
  - {name: rest, assign: {pool: smb}}
"""
NEW = "version: 1\nrespect_existing_owner: never\n" + REPS + """
rules:
  - {name: all-to-dev, assign: {rep: dev}}
"""


@pytest.fixture
def state_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def store(state_url: str) -> Iterator[StateStore]:
    opened = open_store(state_url)
    yield opened
    opened.close()


@pytest.fixture
def history(store: StateStore, state_url: str) -> Iterator[History]:
    """The embedded store's own history (its file's tables, made current by the open)."""
    with History(state_url) as opened:
        opened.require_current()
        yield opened


@pytest.fixture
def crm(store: StateStore) -> FakeCrm:
    """A book routed for real by the OLD file: `old` 40 days ago, the rest two days ago; then
    a person gave c0 to ava and created `manual` already owned by cara."""
    fake = FakeCrm(owners=hubspot_owners())
    fake.add("companies", "old", name="Old", domain="old.com")
    Pipeline(fake, routing(OLD), store, clock=lambda: LONG_AGO).sweep("companies")
    fake.add("companies", "acme", name="Acme", domain="acme.com")
    for n in range(6):
        fake.add("companies", f"c{n}", name=f"Co {n}", domain=f"co{n}.com")
    Pipeline(fake, routing(OLD), store, clock=lambda: EARLIER).sweep("companies")
    fake.set_owner("companies", "c0", "101")
    fake.add("companies", "manual", name="Manual", domain="manual.com", hubspot_owner_id="106")
    return fake


def simulate_new(crm: FakeCrm, store: StateStore, history: History | None):
    return Pipeline(crm, routing(NEW), store, clock=lambda: NOW).simulate(
        "companies", history=history)


def routed_in_window(history: History) -> Counter[str]:
    counts: Counter[str] = Counter()
    for row in history.load(since=NOW - ROUTED_WINDOW, until=NOW):
        counts[row.rep] += row.count
    return counts


def test_given_records_routed_earlier_when_simulating_a_new_file_then_moves_show_the_rule_before(
        crm, store, history):
    result = simulate_new(crm, store, history)

    assert result.history
    moves = {m.record_id: m for m in result.moves}
    assert moves["acme"] == Move("acme", "ava", "dev", "all-to-dev", rule_before="named",
                                 decided_before=EARLIER)
    assert moves["old"].rule_before == "rest" and moves["old"].decided_before == LONG_AGO
    # Routed, then given to ava by a person: an override, which no run routes back, so the
    # new file would not move it either (docs/operations.md#overrides).
    assert "c0" not in moves
    # Never routed: a person set the owner.
    assert moves["manual"] == Move("manual", "cara", "dev", "all-to-dev")
    pool_moves = [m for m in result.moves if m.record_id.startswith("c") and m.record_id != "c0"]
    assert pool_moves and all(m.rule_before == "rest" and m.decided_before == EARLIER
                              for m in pool_moves)
    assert "dev" not in {m.before for m in result.moves}  # dev's records stay: no move


def test_given_records_routed_earlier_when_simulating_then_routed_counts_equal_the_history(
        crm, store, history):
    result = simulate_new(crm, store, history)

    routed = {load.owner: load.routed_before for load in result.loads}
    expected = routed_in_window(history)
    assert sum(expected.values()) == 7  # acme and c0..c5; `old` is outside the 30 days
    assert routed == {owner: expected[owner] for owner in routed}
    assert set(expected) <= set(routed)
    assert routed["ava"] == 1  # acme, by `named`; c0 was given to her by a person
    assert routed["cara"] + routed["dev"] + routed["eli"] == 6  # c0..c5 through the pool
    # Books are the CRM's, as without a history.
    assert [(x.owner, x.before, x.after) for x in result.loads] == [
        (x.owner, x.before, x.after) for x in simulate_new(crm, store, None).loads]


def test_given_a_rep_routed_only_other_objects_lately_when_simulating_then_it_is_listed(
        crm, store, history):
    lead = Decision(record_id="00Q1", object="lead", crm="salesforce", outcome=Outcome.ASSIGNED,
                    owner="maya", owner_crm_id="005M", rule="leads", reason="rule leads: rep maya",
                    trace=(), pool=None, trigger="webhook", decided_at=NOW - timedelta(days=1))
    history.record([(10**12, lead), (10**12 + 1, lead._replace(record_id="00Q2"))])

    result = simulate_new(crm, store, history)

    assert OwnerLoad("maya", 0, 0, routed_before=2) in result.loads
    assert result.loads[0].owner == "dev"  # still most records after first


def test_given_no_history_when_simulating_then_before_is_unknown_and_the_crm_answer_stands(
        crm, store):
    result = simulate_new(crm, store, None)

    assert not result.history
    assert result.moves and all(m.rule_before is None and m.decided_before is None
                                for m in result.moves)
    assert all(load.routed_before is None for load in result.loads)


def test_given_a_simulation_when_the_history_is_added_then_only_its_fields_change(
        crm, store, history):
    pipeline = Pipeline(crm, routing(NEW), store, clock=lambda: NOW)
    plain = pipeline.simulate("companies")

    enriched = pipeline.with_history(plain, history)

    assert enriched == pipeline.simulate("companies", history=history)
    assert [(m.record_id, m.before, m.after, m.rule) for m in enriched.moves] == [
        (m.record_id, m.before, m.after, m.rule) for m in plain.moves]
