"""Salesforce Outbound Messages: parsed with defusedxml before anything else, so no DTD (and no
entity) is processed in any encoding."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from tests.tasks.test_http import ORG, SF_PATH, RecordingEnqueue, outbound

# An Outbound Message whose org id comes from an internal entity: valid XML, and routed when a
# parser processes the DTD.
_WITH_DTD = outbound(org="&org;").decode().replace(
    "<soapenv:Envelope", f'<!DOCTYPE soapenv:Envelope [<!ENTITY org "{ORG}">]><soapenv:Envelope')
# 100 KB of entity references to a 1,000-character entity: 100 million characters expanded.
_EXPANDING = outbound(org="&a;" * 33_000).decode().replace(
    "<soapenv:Envelope",
    f'<!DOCTYPE soapenv:Envelope [<!ENTITY a "{"A" * 1000}">]><soapenv:Envelope')
_EXTERNAL = outbound(org="&ext;").decode().replace(
    "<soapenv:Envelope",
    '<!DOCTYPE soapenv:Envelope [<!ENTITY ext SYSTEM "file:///etc/hostname">]><soapenv:Envelope')


def utf16(xml: str) -> bytes:
    """As a UTF-16 body (with its BOM), where `<!DOCTYPE` is not the ASCII byte sequence."""
    return xml.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")


@pytest.mark.parametrize("body", [utf16(_WITH_DTD), utf16(_EXPANDING), utf16(_EXTERNAL),
                                  _WITH_DTD.encode(), _EXPANDING.encode()],
                         ids=["utf16-dtd", "utf16-expansion", "utf16-external", "utf8-dtd",
                              "utf8-expansion"])
def test_given_a_dtd_in_any_encoding_when_posted_then_400_at_once_and_nothing_enqueued(
    client: TestClient, enqueue: RecordingEnqueue, body: bytes,
) -> None:
    assert len(body) < 1 << 20
    started = time.perf_counter()

    response = client.post(SF_PATH, content=body, headers={"Content-Type": "text/xml"})

    assert response.status_code == 400
    assert "DOCTYPE" in response.json()["error"]
    assert time.perf_counter() - started < 1
    assert enqueue.calls == []


def test_given_a_utf16_message_without_a_dtd_when_posted_then_acked_and_enqueued(
    client: TestClient, enqueue: RecordingEnqueue,
) -> None:
    response = client.post(SF_PATH, content=utf16(outbound().decode()),
                           headers={"Content-Type": "text/xml; charset=utf-16"})

    assert response.status_code == 200
    assert enqueue.calls == [("salesforce", "Lead", ["00Q5g00000AbCdEAAA"], "webhook")]
