"""Who hears of a first-touch SLA breach, embedded: the CRM simulator, the fake Slack Web API
and a real SMTP server (aiosmtpd). A re-route tells the new owner (as any assignment), the rep
who let it lapse and their manager; an escalation tells the manager only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors import registry
from connectors.settings import Settings
from connectors.simulator import RunningSimulator, Simulator
from connectors.simulator.slack import FakeSlack
from connectors.transport import Unlimited
from sync.compiler import load_routing
from sync.pipeline import Pipeline
from sync.state.sqlite import SqliteStateStore
from tasks.followers import followers_for
from tasks.sla import breach_notifier, check_pass
from tests.builders import empty_crm
from tests.servers.smtp import SmtpServer

T0 = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
PORTAL = "62515"
ROUTING = """\
version: 1
reps:
  - {id: ava, name: Ava Stone, email: ava@example.com, slack: U0AVA, manager: max,
     crm_ids: {hubspot: "100"}}
  - {id: ben, name: Ben Ode, email: ben@example.com, slack: U0BEN, manager: max,
     crm_ids: {hubspot: "101"}}
  - {id: max, name: Max Roe, email: max@example.com, slack: U0MAX, crm_ids: {hubspot: "103"}}
pools:
  smb: {members: [ava, ben], sla: {first_touch: 15m, on_breach: reroute}}
rules:
  - {name: everyone, assign: {pool: smb}}
"""


@pytest.fixture
def sim() -> Simulator:
    return empty_crm(8, owners=5)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    users = {f"{rep}@example.com": f"U0{rep.upper()}" for rep in ("ava", "ben", "max")}
    with FakeSlack(users=users) as fake:
        yield fake


@pytest.fixture
def env(sim: Simulator, slack: FakeSlack, notify_channels: RunningSimulator,
        monkeypatch: pytest.MonkeyPatch) -> tuple[Simulator, FakeSlack]:
    """The simulator and the fake Slack, the channels set (tests/tasks/conftest.py); no Redis."""
    monkeypatch.delenv("ACCOUNT_ROUTER_REDIS_URL", raising=False)
    return sim, slack


def test_given_a_breach_when_rerouted_then_escalated_then_the_right_people_hear_once(
        env, smtp_server: SmtpServer, tmp_path: Path) -> None:
    sim, slack = env
    config = tmp_path / "routing.yaml"
    config.write_text(ROUTING)
    routing = load_routing(config)
    settings = Settings()
    record = sim.hubspot_create("companies", {"name": "Lapse Co", "domain": "lapse.example"})
    clock = [T0]
    with SqliteStateStore(tmp_path / "state.db") as store, \
            registry.create_for("hubspot", routing, settings, limiter=Unlimited(),
                                transport_sleep=lambda _: None) as connector:
        pipeline = Pipeline(connector, routing, store, clock=lambda: clock[0],
                            followers=followers_for(settings, store, routing, "hubspot"))
        pipeline.route_ids("companies", [record], now=T0)
        assert [p.channel for p in slack.posted] == ["U0AVA"]

        def run(at: datetime) -> None:
            clock[0] = at
            check_pass(routing, store, lambda crm: pipeline, at,
                       notifier=breach_notifier(settings, store, routing))

        run(T0 + timedelta(minutes=20))  # ava lapsed: re-routed to ben
        run(T0 + timedelta(minutes=20))  # nothing due: nobody hears twice
        run(T0 + timedelta(minutes=40))  # ben lapsed, re-routes spent: max hears

    assert sim.owner_of("hubspot", "companies", record) == "101"
    link = f"https://app.hubspot.com/contacts/{PORTAL}/record/0-2/{record}"
    ben = slack.messages_to("U0BEN")
    assert len(ben) == 1 and ben[0].text.startswith("New account for you: Lapse Co")
    ava = slack.messages_to("U0AVA")
    assert ava[0].text.split(" http")[0] == "New account for you: Lapse Co (hubspot)"
    assert len(ava) == 2 and ava[1].text.startswith(
        "First-touch SLA missed: You did not touch Lapse Co (hubspot account) by ")
    assert "it now belongs to Ben Ode" in ava[1].text and link in ava[1].text
    max_ = slack.messages_to("U0MAX")
    assert len(max_) == 2
    assert max_[0].text.startswith(
        "First-touch SLA missed: Ava Stone did not touch Lapse Co (hubspot account)")
    assert "it now belongs to Ben Ode" in max_[0].text
    assert max_[1].text.startswith(
        "First-touch SLA missed: Ben Ode did not touch Lapse Co (hubspot account)")
    assert "the owner is kept" in max_[1].text
    subjects = sorted((m["To"].addresses[0].addr_spec, m["Subject"].split(" by ")[0])
                      for m in smtp_server.mailbox.messages)
    assert subjects == sorted([
        ("ava@example.com", "New account for you: Lapse Co (hubspot)"),
        ("ava@example.com",
         "First-touch SLA missed: You did not touch Lapse Co (hubspot account)"),
        ("ben@example.com", "New account for you: Lapse Co (hubspot)"),
        ("max@example.com",
         "First-touch SLA missed: Ava Stone did not touch Lapse Co (hubspot account)"),
        ("max@example.com",
         "First-touch SLA missed: Ben Ode did not touch Lapse Co (hubspot account)"),
    ])
