"""Fixtures: a seeded simulator served on free loopback ports, and real vendor clients on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from hubspot import HubSpot
from simple_salesforce import Salesforce

from connectors.simulator import (
    HUBSPOT_TOKEN,
    SALESFORCE_SESSION,
    RunningSimulator,
    Simulator,
    serve,
)


@pytest.fixture
def sim() -> Simulator:
    simulator = Simulator(7)
    simulator.seed(companies=250, contacts=40, accounts=250, leads=120)
    return simulator


@pytest.fixture
def running(sim: Simulator) -> Iterator[RunningSimulator]:
    with serve(sim) as served:
        yield served


@pytest.fixture
def hubspot(running: RunningSimulator) -> HubSpot:
    return HubSpot(access_token=HUBSPOT_TOKEN, host=running.hubspot_url)


@pytest.fixture
def hs(running: RunningSimulator) -> Iterator[requests.Session]:
    """Raw HubSpot calls, for error shapes the generated client hides."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {HUBSPOT_TOKEN}"
    yield session
    session.close()


@pytest.fixture
def sf_session(running: RunningSimulator, monkeypatch: pytest.MonkeyPatch
               ) -> Iterator[requests.Session]:
    # requests lets REQUESTS_CA_BUNDLE override Session.verify, so trust goes through the
    # environment, as docs/operations.md#settings has the app do it.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", running.ca_bundle_path)
    session = requests.Session()
    session.verify = running.ca_bundle_path
    yield session
    session.close()


@pytest.fixture
def sf(running: RunningSimulator, sf_session: requests.Session) -> Salesforce:
    return Salesforce(instance_url=running.salesforce_url, session_id=SALESFORCE_SESSION,
                      session=sf_session, version="59.0")
