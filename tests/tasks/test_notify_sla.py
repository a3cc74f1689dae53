"""SLA breaches are told through the notify channels: `sla-check` against the simulator and the
fake Slack Web API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.simulator import RunningSimulator, Simulator
from connectors.simulator.slack import TOKEN, FakeSlack
from tasks.cli import app
from tests.builders import empty_crm

ROUTING = """\
version: 1
reps:
  - {id: ava, name: Ava, crm_ids: {hubspot: "100"}, manager: max, slack: U0AVA}
  - {id: ben, name: Ben, crm_ids: {hubspot: "101"}, manager: max, slack: U0BEN}
  - {id: max, name: Max, crm_ids: {hubspot: "103"}, slack: U0MAX}
pools:
  smb:
    members: [ava, ben]
    sla: {first_touch: 15m, on_breach: reroute}
rules:
  - {name: everyone, assign: {pool: smb}}
"""


@pytest.fixture
def sim() -> Simulator:
    return empty_crm(4, owners=5)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(users={"ava@x": "U0AVA", "ben@x": "U0BEN", "max@x": "U0MAX"}) as fake:
        yield fake


@pytest.fixture
def sim_tls() -> bool:
    return False  # `running` serves plain HTTP


@pytest.fixture
def running(running: RunningSimulator, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
            ) -> RunningSimulator:
    """The shared `running`, no Redis, and notices through the fake Slack only."""
    monkeypatch.delenv("ACCOUNT_ROUTER_REDIS_URL", raising=False)
    monkeypatch.delenv("ACCOUNT_ROUTER_SMTP_URL", raising=False)
    monkeypatch.setenv("ACCOUNT_ROUTER_SLACK_TOKEN", TOKEN)
    monkeypatch.setenv("ACCOUNT_ROUTER_SLACK_BASE_URL", slack.base_url)
    monkeypatch.setenv("HUBSPOT_PORTAL_ID", "62515")
    return running


def test_given_an_untouched_record_when_its_sla_runs_out_then_the_manager_and_the_rep_who_breached_hear(  # noqa: E501
        sim: Simulator, running: RunningSimulator, slack: FakeSlack, tmp_path: Path) -> None:
    config = tmp_path / "routing.yaml"
    config.write_text(ROUTING)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    record = sim.hubspot_create("companies", {"name": "Acme", "domain": "acme.example"})
    runner = CliRunner()
    routed = runner.invoke(app, ["reprocess", "--crm", "hubspot", "--object", "companies",
                                 record, "--config", str(config), "--state", state])
    assert routed.exit_code == 0, routed.output
    [assigned] = slack.messages_to("U0AVA")  # round robin starts with ava
    assert "New account for you: Acme" in assigned.text
    later = (datetime.now(UTC) + timedelta(minutes=20)).isoformat()

    checked = runner.invoke(app, ["sla-check", "--now", later, "--config", str(config),
                                  "--state", state])
    again = runner.invoke(app, ["sla-check", "--now", later, "--config", str(config),
                                "--state", state])

    assert checked.exit_code == 0 and again.exit_code == 0, checked.output + again.output
    link = f"https://app.hubspot.com/contacts/62515/record/0-2/{record}"
    # The manager hears of the breach and where the record went; ava hears she lost it; ben
    # hears of his new account like any assignment.
    manager = [p.text for p in slack.messages_to("U0MAX")]
    assert manager[0].startswith("First-touch SLA missed: Ava did not touch Acme "
                                 "(hubspot account)")
    assert manager[0].endswith(f"it now belongs to Ben {link}")
    ava = [p.text for p in slack.messages_to("U0AVA")][1:]
    assert len(ava) == 1 and ava[0].startswith("First-touch SLA missed: You did not touch")
    [ben] = slack.messages_to("U0BEN")
    assert "New account for you" in ben.text and link in ben.text
    # The second pass: ben's 15 minutes are past too and the one re-route is spent, so the
    # manager hears again (owner kept); nobody hears anything twice.
    assert len(manager) == 2 and manager[1].endswith(f"the owner is kept {link}")
    assert "Ben did not touch" in manager[1]
    assert len(slack.messages_to("U0BEN")) == 1
