"""`account-router suggest` end to end against the CRM simulator: outcomes read from both CRMs,
a planted effect found with a rule that loads, a null world yielding nothing, bad input exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from config.routing import parse
from connectors.simulator import Simulator
from sync.compiler import load_routing
from sync.pipeline import Pipeline
from sync.ports import Conversions
from sync.state.sqlite import SqliteStateStore
from tasks.cli import app
from tasks.demo import PLANTED_REP, planted_rate
from tests.builders import connector

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "examples" / "routing.yaml"
NOW = "2026-12-07T12:00:00Z"


pytestmark = pytest.mark.usefixtures("isolated")  # tests/tasks/conftest.py


@pytest.fixture
def sim() -> Simulator:
    simulator = Simulator(seed=42)
    simulator.seed(companies=1000, contacts=0, accounts=40, leads=40, days=0)
    return simulator


def invoke(*args: object) -> Result:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.stderr
    assert "Traceback" not in result.output
    return result


def swept(tmp_path: Path) -> str:
    """The HubSpot companies routed by the example file into a fresh state; its URL."""
    store = SqliteStateStore(tmp_path / "state.db")
    try:
        with connector("hubspot") as hubspot:
            Pipeline(hubspot, load_routing(EXAMPLE), store).sweep("companies", full=True)
    finally:
        store.close()
    return f"sqlite:///{tmp_path / 'state.db'}"


def test_given_outcomes_in_hubspot_when_converted_then_customers_and_closed_won_deals_only(
        sim, running):
    ids = sim.ids("hubspot", "companies")[:250]  # more than one batch read (100 ids)
    planted = sim.plant_outcomes("hubspot", "companies", lambda _: 0.3, seed=3)
    by_stage = {i for i in ids
                if sim.hubspot_record("companies", i)["lifecyclestage"] == "customer"}
    links = {i: sim.hubspot_deal_links.get(("companies", i), []) for i in ids}
    by_deal = {i for i, deals in links.items()
               if any(sim.hubspot_deals[d]["dealstage"] == "closedwon" for d in deals)}
    lost_only = {i for i, deals in links.items() if deals} - by_deal
    assert by_stage and by_deal and lost_only  # every path is exercised
    with connector("hubspot") as hubspot:
        assert isinstance(hubspot, Conversions)
        assert hubspot.converted("companies", [*ids, "999999"]) == by_stage | by_deal
    assert len(by_stage | by_deal) <= planted
    calls = sim.stats("hubspot")["calls"]
    assert any("associations" in str(k) for k in calls), calls


def test_given_won_opportunities_and_converted_leads_when_converted_then_exactly_those(
        sim, running):
    sim.plant_outcomes("salesforce", "Account", lambda _: 0.5, seed=3)
    sim.plant_outcomes("salesforce", "Lead", lambda _: 0.5, seed=3)
    accounts, leads = sim.ids("salesforce", "Account"), sim.ids("salesforce", "Lead")
    won = {sim.salesforce_record("Opportunity", o)["AccountId"]
           for o in sim.ids("salesforce", "Opportunity")
           if sim.salesforce_record("Opportunity", o)["IsWon"]}
    lost = {sim.salesforce_record("Opportunity", o)["AccountId"]
            for o in sim.ids("salesforce", "Opportunity")} - won
    converted = {i for i in leads if sim.salesforce_record("Lead", i)["IsConverted"]}
    assert won and lost and converted  # a lost deal is not a conversion: both kinds exist
    with connector("salesforce") as salesforce:
        assert salesforce.converted("Account", accounts) == won
        assert salesforce.converted("Lead", leads) == converted
        assert salesforce.converted("Contact", accounts) == set()
    calls = sim.stats("salesforce")["calls"]
    assert any("query" in str(k) for k in calls)


def test_given_planted_effect_when_suggest_json_then_found_with_loading_rule_and_moves(
        sim, running, tmp_path):
    state = swept(tmp_path)
    sim.plant_outcomes("hubspot", "companies", planted_rate, seed=1)
    result = invoke("suggest", "--crm", "hubspot", "--object", "companies", "--json",
                    "--config", EXAMPLE, "--state", state, "--now", NOW)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tested"] >= 10
    found = data["suggestions"]
    assert found, data
    best = found[0]
    assert best["segment"] == {"size_band": "1-49"}
    assert (best["from"], best["to"]) == ("smb", PLANTED_REP)
    assert best["rate_to"] > 0.3 > 0.2 > best["rate_now"]
    assert best["p"] <= best["q"] <= 0.05 and best["n"] >= 60
    # Inserted first, the rule takes every company under 50 employees (whatever rule has it
    # now: the smb pool, healthcare's rep, the named accounts') and nothing else.
    small = sum(1 for i in sim.ids("hubspot", "companies")
                if 0 <= float(sim.hubspot_record("companies", i).get("numberofemployees")
                              or -1) < 50)
    assert best["moves"] == small
    assert all(s["to"] == PLANTED_REP for s in found)
    # The rule as printed, pasted first under `rules:`, loads with the routing loader.
    document = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    pasted = yaml.safe_load(best["rule_yaml"])
    document["rules"] = pasted + document["rules"]
    routing = parse(yaml.safe_dump(document), source=EXAMPLE)
    assert routing.rules[0].assign.rep == PLANTED_REP
    assert routing.rules[0].when == {"object": {"eq": "account"},
                                     "employees": {"gte": 0, "lt": 50}}
    # Nothing applied: the CRM's owners are what routing wrote.
    assert sim.owner_of("hubspot", "companies", sim.ids("hubspot", "companies")[0]) is not None


def test_given_same_rates_everywhere_when_suggest_then_no_suggestion_and_table_says_so(
        sim, running, tmp_path):
    state = swept(tmp_path)
    sim.plant_outcomes("hubspot", "companies", lambda _: 0.15, seed=2)
    result = invoke("suggest", "--crm", "hubspot", "--object", "companies",
                    "--config", EXAMPLE, "--state", state, "--now", NOW)
    assert result.exit_code == 0, result.output
    assert "0 suggestion(s)" in result.stdout
    assert "no segment converts significantly better" in result.stdout


def test_given_minimum_sample_above_every_cell_when_suggest_then_nothing_tested(
        sim, running, tmp_path):
    state = swept(tmp_path)
    sim.plant_outcomes("hubspot", "companies", planted_rate, seed=1)
    result = invoke("suggest", "--crm", "hubspot", "--object", "companies", "--json",
                    "--config", EXAMPLE, "--state", state, "--min-sample", 100000)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tested"] == 0


def test_given_since_after_every_decision_when_suggest_then_nothing_observed(
        sim, running, tmp_path):
    state = swept(tmp_path)
    sim.plant_outcomes("hubspot", "companies", planted_rate, seed=1)
    result = invoke("suggest", "--crm", "hubspot", "--object", "companies", "--json",
                    "--config", EXAMPLE, "--state", state, "--since", "2999-01-01")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["observations"], data["tested"], data["suggestions"]) == (0, 0, [])


@pytest.mark.parametrize(("args", "message"), [
    (("--since", "yesterday"), "--since"),
    (("--min-sample", "0"), "--min-sample"),
    (("--alpha", "2"), "--alpha"),
])
def test_given_bad_options_when_suggest_then_exit_2_naming_them(
        tmp_path, args: tuple[str, ...], message: str) -> None:
    state = f"sqlite:///{tmp_path / 'state.db'}"
    SqliteStateStore(tmp_path / "state.db").close()
    result = invoke("suggest", "--crm", "hubspot", "--object", "companies", "--config",
                    EXAMPLE, "--state", state, *args)
    assert result.exit_code == 2
    assert message in result.output


def test_given_csv_connector_when_suggest_then_exit_2_no_outcomes(tmp_path, monkeypatch):
    (tmp_path / "book.csv").write_text("id,name,country\n1,Acme,US\n")
    monkeypatch.setenv("ACCOUNT_ROUTER_CSV_INPUT", str(tmp_path / "book.csv"))
    monkeypatch.setenv("ACCOUNT_ROUTER_CSV_OUTPUT", str(tmp_path / "out.csv"))
    SqliteStateStore(tmp_path / "state.db").close()
    result = invoke("suggest", "--crm", "csv", "--object", "account", "--config", EXAMPLE,
                    "--state", f"sqlite:///{tmp_path / 'state.db'}")
    assert result.exit_code == 2
    assert "cannot read outcomes" in result.output




def test_given_the_demo_when_run_then_it_plants_an_effect_and_prints_its_suggestion() -> None:
    result = invoke("demo", "--leads", "20")
    assert result.exit_code == 0, result.output
    assert "rule suggestions (planted" in result.stdout
    assert "size_band = 1-49: smb -> dev" in result.stdout
    assert "suggested-size-band-1-49-dev" in result.stdout
    assert "nothing applied" in result.stdout
