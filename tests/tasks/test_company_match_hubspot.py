"""company_match with HubSpot, end to end against the CRM simulator: a contact whose domain has
no company follows the company its own company name matches (webhook and sweep paths), and
`POST /route` looks the names up too, within a bound, or says in the trace why it did not."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors import registry
from connectors.settings import Settings
from connectors.simulator import Simulator, serve
from connectors.simulator.server import RunningSimulator
from connectors.transport import Unlimited
from sync.compiler import load_routing
from sync.history import History
from sync.pipeline import Pipeline
from sync.state.sqlite import SqliteStateStore

ROUTING = """version: 1
reps:
  - {id: ana, crm_ids: {hubspot: '101'}}
  - {id: bo, crm_ids: {hubspot: '102'}}
rules:
  - {name: follow-account, when: {object: contact}, assign: {account_owner: true}}
fallback: {rep: bo}
enrich: [company_match]
"""


@pytest.fixture
def sim() -> Simulator:
    simulator = Simulator(seed=7)
    simulator.seed(companies=0, contacts=0, accounts=0, leads=0, owners=4, days=1)
    simulator.hubspot_create("companies", {"name": "ACME Corp.", "domain": "acme.com",
                                           "hubspot_owner_id": "101"})
    simulator.hubspot_create("companies", {"name": "Acme Widgets Europe",
                                           "domain": "acme-widgets.example",
                                           "hubspot_owner_id": "102"})
    return simulator


@pytest.fixture
def running(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSimulator]:
    with serve(sim) as started:
        for name, value in started.env().items():
            monkeypatch.setenv(name, value)
        yield started


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStateStore]:
    opened = SqliteStateStore(tmp_path / "state.db")
    yield opened
    opened.close()


@pytest.fixture
def routing_path(tmp_path: Path) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(ROUTING)
    return path


def connector() -> Any:
    return closing(registry.create("hubspot", Settings(), limiter=Unlimited(),
                                   transport_sleep=lambda _: None))


def test_given_a_freemail_contact_of_acme_when_webhooked_then_it_follows_acmes_company_owner(
    sim: Simulator, running: RunningSimulator, store: SqliteStateStore, routing_path: Path,
) -> None:
    created = sim.hubspot_create("contacts", {"email": "wile@gmail.com",
                                              "company": "Acme Corporation"})
    with connector() as c:
        Pipeline(c, load_routing(routing_path), store).route_ids(
            "contacts", [created], trigger="webhook")

    assert sim.owner_of("hubspot", "contacts", created) == "101"
    with History(store.url) as history:
        [decision] = history.decisions(record_id=created)
    assert (decision.owner, decision.rule) == ("ana", "follow-account")
    step = decision.trace[0]
    assert (step.rule, step.result) == ("enrich company_match", "enriched")
    assert step.detail == ("domain = acme.com from name 'Acme Corporation' ~ account "
                           "'ACME Corp.' (100)")
    searched = sim.stats("hubspot")["calls"]["POST /crm/v3/objects/companies/search"]
    assert searched == {"200": 2}  # the name search, then the matched domain's owner


def test_given_contacts_with_unknown_domains_when_swept_then_only_name_matches_follow_accounts(
    sim: Simulator, running: RunningSimulator, store: SqliteStateStore, routing_path: Path,
) -> None:
    acme = sim.hubspot_create("contacts", {"email": "road@runner-mail.example",
                                           "company": "ACME Corporation"})
    other = sim.hubspot_create("contacts", {"email": "x@nowhere.example",
                                            "company": "Initech"})
    with connector() as c:
        report = Pipeline(c, load_routing(routing_path), store).sweep(
            "contacts", now=datetime.now(UTC) + timedelta(seconds=1))

    assert report.rules == {"follow-account": 1, "(fallback)": 1}
    assert sim.owner_of("hubspot", "contacts", acme) == "101"
    assert sim.owner_of("hubspot", "contacts", other) == "102"
