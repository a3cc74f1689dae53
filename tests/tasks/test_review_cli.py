"""`account-router review list | approve | reassign` and the `review.expire` pass, embedded,
against the CRM simulator on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from connectors.settings import Settings
from connectors.simulator import Simulator, serve
from sync.state.sqlite import SqliteStateStore
from tasks.cli import app
from tasks.review import expire_pass
from tests.builders import empty_crm

ROUTING = """version: 1
reps:
  - {id: ana, crm_ids: {hubspot: '101'}, manager: mo}
  - {id: bo, crm_ids: {hubspot: '102'}}
  - {id: mo, crm_ids: {hubspot: '103'}}
pools: {team: {members: [ana, bo], strategy: round_robin}}
rules: [{name: everyone, assign: {pool: team}, review: true}]
review_timeout: 15m
"""


@pytest.fixture
def sim() -> Simulator:
    return empty_crm(5, days=1)


@pytest.fixture
def env(sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The simulator's environment, a routing file and a state file: the config path."""
    config = tmp_path / "routing.yaml"
    config.write_text(ROUTING)
    with serve(sim) as running:
        for name, value in {**running.env(), "ACCOUNT_ROUTER_CONFIG": str(config),
                            "ACCOUNT_ROUTER_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}"
                            }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("ACCOUNT_ROUTER_REDIS_URL", raising=False)
        yield config


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def held(sim: Simulator, n: int = 1) -> list[str]:
    ids = [str(sim.hubspot_create("companies", {"name": f"Co {i}", "domain": f"c{i}.example"}))
           for i in range(n)]
    result = invoke("reprocess", *ids, "--crm", "hubspot", "--object", "companies")
    assert result.exit_code == 0, result.output
    return ids


def listed() -> list[dict[str, str]]:
    result = invoke("review", "list", "--json")
    assert result.exit_code == 0, result.output
    items: list[dict[str, str]] = json.loads(result.stdout)["items"]
    return items


def test_given_held_records_when_listing_then_the_table_and_json_show_them(env, sim):
    [record] = held(sim)

    table = invoke("review", "list")
    [item] = listed()

    assert table.exit_code == 0 and "1 awaiting review" in table.output
    assert item["id"] in table.output
    assert (item["record_id"], item["proposed_owner"], item["rule"]) == (
        record, "ana", "everyone")
    assert sim.owner_of("hubspot", "companies", record) is None


def test_given_an_item_when_approved_then_written_once_and_a_second_approve_exits_1(env, sim):
    [record] = held(sim)
    [item] = listed()

    first = invoke("review", "approve", item["id"], "--by", "maya")
    second = invoke("review", "approve", item["id"])

    assert first.exit_code == 0, first.output
    assert "approved; wrote ana" in first.output
    assert second.exit_code == 1 and "already approved by maya" in second.output
    assert sim.owner_of("hubspot", "companies", record) == "101"
    assert sim.stats("hubspot")["records_updated"] == 1
    assert listed() == []


def test_given_an_item_when_reassigned_then_the_rep_is_written(env, sim):
    [record] = held(sim)
    [item] = listed()

    result = invoke("review", "reassign", item["id"], "bo")

    assert result.exit_code == 0, result.output
    assert "reassigned; wrote bo" in result.output
    assert sim.owner_of("hubspot", "companies", record) == "102"


def test_given_an_unknown_item_or_rep_then_exit_2_naming_it(env, sim):
    held(sim)
    [item] = listed()

    unknown = invoke("review", "approve", "nosuchitem")
    bad_rep = invoke("review", "reassign", item["id"], "zed")

    assert unknown.exit_code == 2 and "nosuchitem" in unknown.output
    assert bad_rep.exit_code == 2 and "unknown rep 'zed'" in bad_rep.output
    assert "Traceback" not in unknown.output + bad_rep.output
    assert sim.stats("hubspot")["records_updated"] == 0


def test_given_the_deadline_passed_when_expiring_then_escalated_once_and_kept_in_the_queue(
        env, sim):
    held(sim)
    [item] = listed()
    now = datetime.now(UTC)

    before = expire_pass(Settings(), now)
    after = [expire_pass(Settings(), now + timedelta(minutes=m)) for m in (16, 17)]

    assert before.escalated == [] and [r.escalated for r in after] == [[item["id"]], []]
    assert [i["id"] for i in listed()] == [item["id"]]
    assert sim.stats("hubspot")["records_updated"] == 0


def test_given_on_review_timeout_approve_when_expiring_then_the_proposal_is_written(
        env, sim, tmp_path):
    env.write_text(ROUTING + "on_review_timeout: approve\n")
    [record] = held(sim)

    report = expire_pass(Settings(), datetime.now(UTC) + timedelta(minutes=16))

    assert len(report.approved) == 1 and listed() == []
    assert sim.owner_of("hubspot", "companies", record) == "101"
    with SqliteStateStore(tmp_path / "state.db") as store:
        actions = [e.data["action"] for e in store.history.events() if e.kind == "review"]
    assert sorted(actions) == ["approved", "expired"]


def test_given_the_expire_command_with_now_then_it_escalates_what_is_past_its_deadline(
        env, sim):
    held(sim)
    [item] = listed()
    later = (datetime.now(UTC) + timedelta(minutes=20)).isoformat()

    early = invoke("review", "expire")
    late = invoke("review", "expire", "--now", later)
    again = invoke("review", "expire", "--now", later)

    assert early.exit_code == 0 and "nothing past its deadline" in early.output
    assert late.exit_code == 0 and f"escalated: {item['id']}" in late.output
    assert again.exit_code == 0 and "nothing past its deadline" in again.output
    bad = invoke("review", "expire", "--now", "soon")
    assert bad.exit_code == 2 and "Traceback" not in bad.output
