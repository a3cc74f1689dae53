"""Both connectors end to end against the CRM simulator: routing, faults, quotas, credentials."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.simulator import Simulator
from sync.compiler import load_routing
from sync.pipeline import Pipeline
from tasks.cli import app
from tests.builders import connector, unowned

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "examples" / "routing.yaml"
OBJECTS = {"hubspot": ("companies", "contacts"), "salesforce": ("Account", "Lead")}
WRITES = {"hubspot": (100, "/batch/update"), "salesforce": (200, "/composite/sobjects")}


@pytest.fixture
def sim() -> Simulator:
    simulator = Simulator(seed=11)
    simulator.seed(companies=1000, contacts=80, accounts=1000, leads=80, days=2)
    return simulator


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_given_a_seeded_crm_when_sweeping_then_every_unowned_record_gets_a_valid_owner(
        crm, sim, running, sqlite_store):
    routing = load_routing(EXAMPLE)
    before = {obj: unowned(sim, crm, obj) for obj in OBJECTS[crm]}
    reps = {rep.crm_ids[crm] for rep in routing.reps.values() if rep.active}

    with connector(crm) as c:
        pipeline = Pipeline(c, routing, sqlite_store)
        reports = [pipeline.sweep(obj, full=True) for obj in OBJECTS[crm]]

    for obj, ids in before.items():
        assert ids, "the seed leaves some records unowned"
        assert all(sim.owner_of(crm, obj, i) in reps for i in ids)
    assert all(not r.failed and r.stopped is None for r in reports)
    # Owner writes are packed across pages: the fewest write calls that can carry them.
    batch, endpoint = WRITES[crm]
    calls = sum(n for key, codes in sim.stats(crm)["calls"].items() if endpoint in key
                for n in codes.values())
    assert calls == sum(math.ceil(r.written / batch) for r in reports)
    if crm == "salesforce":
        # Every composite write carried Sforce-Auto-Assign: FALSE.
        assert sim.stats("salesforce")["writes"]["without_auto_assign_false"] == 0


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_given_20_percent_injected_errors_when_sweeping_then_every_record_is_routed_once(
        crm, sim, running, sqlite_store):
    routing = load_routing(EXAMPLE)
    obj = OBJECTS[crm][0]
    targets = unowned(sim, crm, obj)
    sim.configure_faults(error_rate=0.2, lock_error_rate=0.05 if crm == "salesforce" else 0)

    with connector(crm) as c:
        pipeline = Pipeline(c, routing, sqlite_store)
        first = pipeline.sweep(obj, full=True)
        # Anything whose write still failed is retried by the next run: nothing is lost.
        second = pipeline.sweep(obj)
        retries = c.stats().retries

    faults = sum(n for codes in sim.stats(crm)["calls"].values()
                 for code, n in codes.items() if code in ("429", "500", "503"))
    assert faults > 0 and retries >= faults
    assert all(sim.owner_of(crm, obj, i) is not None for i in targets)
    written = Counter(d.record_id for d in sqlite_store.decisions(limit=100_000)
                      if d.written_at is not None)
    assert set(targets) <= set(written)  # plus records whose owner was not valid
    assert set(written.values()) == {1}  # none written twice
    assert first.stopped is None and second.stopped is None


def test_given_salesforce_quota_runs_out_mid_sweep_when_resumed_after_reset_then_none_lost(
        sim, running, sqlite_store):
    routing = load_routing(EXAMPLE)
    targets = unowned(sim, "salesforce", "Account")
    sim.configure_limits(salesforce_daily=4)  # users, queues, one query page, one write

    with connector("salesforce") as c:
        pipeline = Pipeline(c, routing, sqlite_store)
        first = pipeline.sweep("Account", full=True)
        assert first.stopped is not None and "quota" in first.stopped
        # The write batch that landed before the quota ran out is audited as written.
        landed = {i for i in targets if sim.owner_of("salesforce", "Account", i) is not None}
        audited = {d.record_id for d in sqlite_store.decisions(limit=100_000) if d.written_at}
        assert landed and landed <= audited
        sim.reset_daily()
        sim.configure_limits(salesforce_daily=15_000)
        second = pipeline.sweep("Account")

    assert second.stopped is None
    assert all(sim.owner_of("salesforce", "Account", i) is not None for i in targets)
    written = Counter(d.record_id for d in sqlite_store.decisions(limit=100_000)
                      if d.written_at is not None)
    assert set(written.values()) == {1}


def test_given_an_owner_id_the_crm_rejects_when_writing_then_that_record_is_audited(
        sim, running, sqlite_store):
    routing = load_routing(EXAMPLE)
    target = unowned(sim, "hubspot", "companies")[0]

    with connector("hubspot") as c:
        pipeline = Pipeline(c, routing, sqlite_store)
        chosen = pipeline.explain("companies", target).owner_crm_id
        pipeline.users()  # the owner directory is cached as it was...
        sim.set_hubspot_owner_archived(chosen)  # ...when someone archives the chosen owner
        report = pipeline.route_ids("companies", [target])

    audited = sqlite_store.decisions(record_id=target)[0]
    assert audited.owner_crm_id == chosen
    assert report.write_failed == 1
    assert audited.written_at is None and audited.write_error
    assert sqlite_store.failed("hubspot", "companies") == [target]
    assert sim.owner_of("hubspot", "companies", target) is None


def test_given_a_wrong_hubspot_token_when_sweeping_then_exit_2_naming_the_setting(
        sim, running, tmp_path, monkeypatch):
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "wrong-token")
    result = CliRunner().invoke(app, [
        "sweep", "--crm", "hubspot", "--object", "companies", "--config", str(EXAMPLE),
        "--state", f"sqlite:///{tmp_path / 's.db'}"])

    assert result.exit_code == 2, result.output
    assert "HUBSPOT_ACCESS_TOKEN" in result.stderr
    assert "wrong-token" not in result.stderr
    assert sim.stats("hubspot")["total"] == 1  # one refused call, not a retry storm


def test_given_the_cli_when_sweeping_with_dry_run_then_changes_are_listed_and_none_written(
        sim, running, tmp_path):
    result = CliRunner().invoke(app, [
        "sweep", "--crm", "salesforce", "--object", "lead", "--dry-run", "--config",
        str(EXAMPLE), "--state", f"sqlite:///{tmp_path / 's.db'}"])

    assert result.exit_code == 0, result.output
    assert "would change" in result.stdout
    assert sim.stats("salesforce")["records_updated"] == 0


def test_given_a_rule_on_a_custom_hubspot_property_when_sweeping_then_it_is_read_and_used(
        sim, running, sqlite_store, tmp_path):
    routing_file = tmp_path / "routing.yaml"
    routing_file.write_text(
        "version: 1\n"
        "reps: [{id: ava, crm_ids: {hubspot: '101'}}, {id: ben, crm_ids: {hubspot: '102'}}]\n"
        "rules:\n"
        "  - {name: gold, when: {fields.tier: {eq: gold}}, assign: {rep: ava}}\n"
        "  - {name: rest, assign: {rep: ben}}\n")
    routing = load_routing(routing_file)
    gold = sim.hubspot_create("companies", {"name": "Gold Co", "domain": "gold.example",
                                            "tier": "Gold"})

    with connector("hubspot", routing) as c:
        Pipeline(c, routing, sqlite_store).route_ids("companies", [str(gold)])

    assert sim.owner_of("hubspot", "companies", str(gold)) == "101"


def test_given_a_new_routing_file_when_simulating_then_moves_and_loads_are_shown_unwritten(
        sim, running, tmp_path):
    new_file = tmp_path / "new.yaml"
    new_file.write_text(
        "version: 1\nrespect_existing_owner: never\n"
        "reps: [{id: ava, crm_ids: {hubspot: '101'}}, {id: ben, crm_ids: {hubspot: '102'}}]\n"
        "pools: {all: {members: [ava, ben]}}\n"
        "rules: [{name: everyone, assign: {pool: all}}]\n")
    writes_before = sim.stats("hubspot")["records_updated"]

    result = CliRunner().invoke(app, [
        "simulate", "--config", str(new_file), "--crm", "hubspot", "--object", "companies",
        "--state", f"sqlite:///{tmp_path / 's.db'}"])

    assert result.exit_code == 0, result.output
    assert "would move" in result.stdout
    assert "records per owner" in result.stdout
    lines = [line for line in result.stdout.splitlines() if line.strip().startswith(("│ ava",
                                                                                    "│ ben"))]
    assert len(lines) == 2  # both reps appear with before/after loads
    assert sim.stats("hubspot")["records_updated"] == writes_before  # nothing written


def test_given_a_crm_record_when_explaining_via_the_cli_then_one_read_and_nothing_written(
        sim, running, tmp_path):
    target = unowned(sim, "hubspot", "companies")[0]

    result = CliRunner().invoke(app, [
        "explain", "--crm", "hubspot", "--object", "companies", target, "--config",
        str(EXAMPLE), "--state", f"sqlite:///{tmp_path / 's.db'}"])

    assert result.exit_code == 0, result.output
    assert "outcome: assigned" in result.stdout
    # Clause-by-clause detail needs the normalized record: it came from the single read.
    assert "named-accounts: no_match (not met: domain in_list" in result.stdout
    reads = sim.stats("hubspot")["calls"]["POST /crm/v3/objects/companies/batch/read"]
    assert sum(reads.values()) == 1
    assert sim.stats("hubspot")["records_updated"] == 0


# --- sweep progress ---------------------------------------------------------------------------


def sweep_cli(tmp_path: Path, *extra: str):
    return CliRunner().invoke(app, [
        "sweep", "--crm", "hubspot", "--object", "companies", "--dry-run", "--config",
        str(EXAMPLE), "--state", f"sqlite:///{tmp_path / 's.db'}", *extra])


def test_given_a_terminal_and_a_counted_search_when_sweeping_then_a_bar_shows_the_total(
        sim, running, tmp_path, monkeypatch):
    import io

    from rich.console import Console

    import tasks.cli.crm

    screen = io.StringIO()
    monkeypatch.setattr(tasks.cli.crm, "err", Console(file=screen, force_terminal=True,
                                                      width=100))

    result = sweep_cli(tmp_path, "--since", "2000-01-01T00:00:00Z")

    assert result.exit_code == 0, result.output
    drawn = screen.getvalue()
    assert "sweeping" in drawn and "1000/1000" in drawn  # HubSpot search `total`
    assert "page 1:" not in drawn


def test_given_no_terminal_when_sweeping_then_one_line_per_page_with_the_total_if_counted(
        sim, running, tmp_path):
    counted = sweep_cli(tmp_path, "--since", "2000-01-01T00:00:00Z")
    listed = sweep_cli(tmp_path, "--full")

    assert counted.exit_code == listed.exit_code == 0, counted.output + listed.output
    lines = counted.stderr.splitlines()
    assert len(lines) >= 5 and all(" of 1000 records listed, 0 written (" in x for x in lines)
    assert lines[-1].startswith(f"page {len(lines)}: 1000 of 1000 records listed")
    assert listed.stderr.splitlines()[0].startswith("page 1: 100 records listed, 0 written (")
    assert listed.stderr.splitlines()[-1].startswith("page 10: 1000 records listed")
