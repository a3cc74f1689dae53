"""Fixtures: the fake HubSpot on loopback, and a connector pointed at it with a recorded sleep."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.hubspot.connector import HubSpotConnector, from_settings
from tests.connectors.hubspot.fake_hubspot import (
    FakeHubSpot,
    RecordingLimiter,
    serve,
    settings_for,
)


@pytest.fixture
def fake() -> Iterator[FakeHubSpot]:
    yield from serve()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def limiter() -> RecordingLimiter:
    return RecordingLimiter()


@pytest.fixture
def connector(fake: FakeHubSpot, sleeps: list[float], limiter: RecordingLimiter
              ) -> Iterator[HubSpotConnector]:
    conn = from_settings(settings_for(fake.url), limiter=limiter, transport_sleep=sleeps.append)
    try:
        yield conn
    finally:
        conn.close()
