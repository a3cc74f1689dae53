"""`redact`, which every log line that can carry a request path goes through (issue 8, point 9)."""

from __future__ import annotations

import pytest

from tasks.http.common import redact

SECRET = "sf-webhook-secret-0123456789"


@pytest.mark.parametrize("line", [
    f'"POST /webhooks/salesforce/{SECRET} HTTP/1.1" 200',
    # Not routed (404), yet the access log prints the path the client sent.
    f'"POST /webhooks/salesforce/x/../{SECRET} HTTP/1.1" 404',
    f'"POST /webhooks/salesforce/../salesforce/{SECRET} HTTP/1.1" 404',
    f'"POST /webhooks/salesforce/{SECRET}/extra HTTP/1.1" 404',
    f'"POST /webhooks/salesforce/{SECRET.replace("s", "%73")}%2F HTTP/1.1" 404',
])
def test_given_a_salesforce_webhook_path_when_redacted_then_no_part_of_the_secret_is_left(
    line: str,
) -> None:
    shown = redact(line)

    assert "/webhooks/salesforce/[redacted]" in shown
    assert "secret" not in shown.replace("%73", "s") and "0123456789" not in shown
    assert shown.endswith(" HTTP/1.1\" " + line.rsplit(" ", 1)[1])
