"""`account-router sla-check` and Celery's `sla.check` against the CRM simulator."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.settings import Settings
from connectors.simulator import RunningSimulator, Simulator
from tasks.celery_app import SLA_CHECK_TASK, beat_schedule
from tasks.cli import app
from tests.builders import SLA_REPS, empty_crm

ROUTING = SLA_REPS + """\
pools:
  smb:
    members: [ava, ben, cara]
    sla: {first_touch: 15m, on_breach: reroute}
rules:
  - {name: everyone, assign: {pool: smb}}
"""


@pytest.fixture
def sim() -> Simulator:
    return empty_crm(4, owners=5)


@pytest.fixture
def sim_tls() -> bool:
    return False  # `running` serves plain HTTP


@pytest.fixture
def running(running: RunningSimulator, monkeypatch: pytest.MonkeyPatch) -> RunningSimulator:
    """The shared `running`, and no Redis: the commands run embedded."""
    monkeypatch.delenv("ACCOUNT_ROUTER_REDIS_URL", raising=False)
    return running


def test_given_a_routed_record_left_untouched_when_sla_check_runs_then_it_is_rerouted(
        sim, running, tmp_path: Path):
    config = tmp_path / "routing.yaml"
    config.write_text(ROUTING)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    ids = [sim.hubspot_create("companies", {"name": f"Co {i}", "domain": f"co{i}.example"})
           for i in range(2)]
    runner = CliRunner()
    routed = runner.invoke(app, ["reprocess", "--crm", "hubspot", "--object", "companies",
                                 *ids, "--config", str(config), "--state", state])
    assert routed.exit_code == 0, routed.output
    sim.touch("hubspot", "companies", ids[1])
    later = (datetime.now(UTC) + timedelta(minutes=20)).isoformat()

    early = runner.invoke(app, ["sla-check", "--config", str(config), "--state", state,
                                "--json"])
    result = runner.invoke(app, ["sla-check", "--now", later, "--config", str(config),
                                 "--state", state, "--json"])
    again = runner.invoke(app, ["sla-check", "--now", later, "--config", str(config),
                                "--state", state])

    assert early.exit_code == 0 and json.loads(early.stdout)["due"] == 0
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"due": 2, "touched": 1,
                                         "breaches": {"reroute": 1}, "rerouted": 1,
                                         "ended": 0, "unread": 0}
    # ava breached; cara (after ben) takes it: never back to ava.
    assert sim.owner_of("hubspot", "companies", ids[0]) == "102"
    # cara's own 15 minutes (from the re-route's write, now) are past at --now too: the one
    # re-route allowed is spent, so the manager hears of it and the owner stays.
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("1 due: 0 touched, 1 breached (1 notify_manager)")
    assert sim.owner_of("hubspot", "companies", ids[0]) == "102"


def test_given_a_bad_now_when_sla_check_runs_then_exit_2_naming_the_option(running, tmp_path):
    config = tmp_path / "routing.yaml"
    config.write_text(ROUTING)

    result = CliRunner().invoke(app, ["sla-check", "--now", "soon", "--config", str(config),
                                      "--state", f"sqlite:///{tmp_path / 's.db'}"])

    assert result.exit_code == 2 and "--now" in result.output


def test_given_the_beat_schedule_then_sla_check_runs_every_minute():
    entry = beat_schedule(Settings())["sla check"]

    assert entry["task"] == SLA_CHECK_TASK == "sla.check"
    assert entry["schedule"] == 60.0
    assert beat_schedule(Settings(sla_check_seconds=5))["sla check"]["schedule"] == 5.0
