"""The assembled app: no redirect is ever built from the request's Host header."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


@pytest.mark.parametrize("method,path", [("GET", "/healthz/"), ("GET", "/metrics/"),
                                         ("POST", "/webhooks/hubspot/"), ("POST", "/reprocess/")])
def test_given_a_trailing_slash_and_a_foreign_host_when_called_then_404_without_a_redirect(
    client: TestClient, method: str, path: str,
) -> None:
    response = client.request(method, path, headers={"Host": "evil.example"},
                              follow_redirects=False)

    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.json() == {"error": "Not Found"}
