"""Salesforce connector fixtures: an isolated environment, HTTP mocked at the transport."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import responses

from connectors.salesforce.connector import SalesforceConnector, from_settings
from connectors.transport import Unlimited
from tests.connectors.salesforce.builders import token_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real credentials or CA settings in the developer's shell must not leak into tests."""
    for name in list(os.environ):
        if name.startswith(("SALESFORCE_", "ACCOUNT_ROUTER_")) or name in (
                "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """Every outgoing request must be expected, and every expected one made."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    """The transport's waits, recorded instead of slept."""
    return []


@pytest.fixture
def connector(rsps: responses.RequestsMock, sleeps: list[float]
              ) -> Iterator[SalesforceConnector]:
    """Token mode against the mocked instance: no login call at construction."""
    conn = from_settings(token_settings(), limiter=Unlimited(), transport_sleep=sleeps.append)
    yield conn
    conn.close()
