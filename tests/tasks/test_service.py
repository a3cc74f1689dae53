"""The whole service with real parts: `account-router serve` under uvicorn on loopback, a
`celery -A tasks worker` subprocess, redis-server and the CRM simulator. Signed HubSpot
webhooks go in over HTTP; owners come out in the CRM, explained by the ops API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.simulator import Simulator
from tasks.http import hubspot_signature_v3
from tests.builders import unowned
from tests.loopback import free_port
from tests.tasks.test_distributed import OBJ, Workers, beat, running_crm, seeded, wait_for

SECRET = "service-test-webhook-secret"
API_TOKEN = "service-test-api-token"
ORG = "00D5g000000ABCDEAG"  # the Salesforce org Outbound Messages must come from
SF_SECRET = "service-test-salesforce-path-secret"  # in the endpoint URL Salesforce is given
BIN = Path(sys.executable).with_name("account-router")


def call(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Service:
    """`account-router serve` on a free loopback port, and how HubSpot would call it."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.event_id = 0

    def start(self) -> None:
        env = dict(os.environ)
        env.update({"HUBSPOT_WEBHOOK_SECRET": SECRET, "ACCOUNT_ROUTER_API_TOKEN": API_TOKEN,
                    "ACCOUNT_ROUTER_PUBLIC_URL": self.base, "SALESFORCE_ORG_ID": ORG,
                    "ACCOUNT_ROUTER_SALESFORCE_WEBHOOK_SECRET": SF_SECRET})
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([str(BIN), "serve", "--port", str(self.port)],
                                         env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited: {self.log.read_text(errors='replace')}")
            try:
                if call("GET", f"{self.base}/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        pytest.fail(f"serve did not come up: {self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)

    def creation_events(self, ids: list[str]) -> list[dict[str, object]]:
        events = []
        for record_id in ids:
            self.event_id += 1
            events.append({"eventId": self.event_id, "subscriptionType": "company.creation",
                           "objectId": int(record_id), "occurredAt": int(time.time() * 1000),
                           "portalId": 1, "appId": 1, "attemptNumber": 0})
        return events

    def post_hubspot(self, events: list[dict[str, object]], *, secret: str = SECRET
                     ) -> tuple[int, bytes]:
        body = json.dumps(events).encode()
        stamp = str(int(time.time() * 1000))
        uri = f"{self.base}/webhooks/hubspot"
        return call("POST", uri, body, {
            "Content-Type": "application/json", "X-HubSpot-Request-Timestamp": stamp,
            "X-HubSpot-Signature-v3": hubspot_signature_v3(secret, "POST", uri, body, stamp)})

    def post_salesforce(self, lead_ids: list[str], org: str = ORG) -> tuple[int, bytes]:
        """An Outbound Message with one notification per lead, as Salesforce sends it."""
        notes = "".join(
            f"<Notification><Id>04l5g000000{n:04d}AAA</Id>"
            f'<sObject xsi:type="sf:Lead" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
            f"<sf:Id>{lead}</sf:Id></sObject></Notification>"
            for n, lead in enumerate(lead_ids))
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
            '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
            f"<OrganizationId>{org}</OrganizationId><ActionId>04k5g0000000001AAA</ActionId>"
            f"{notes}</notifications></soapenv:Body></soapenv:Envelope>").encode()
        return call("POST", f"{self.base}/webhooks/salesforce/{SF_SECRET}", body,
                    {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})

    def ops(self, method: str, path: str) -> tuple[int, bytes]:
        return call(method, f"{self.base}{path}",
                    headers={"Authorization": f"Bearer {API_TOKEN}"})


@pytest.fixture
def service(redis_url, monkeypatch, tmp_path) -> Iterator[tuple[Simulator, Service, Workers]]:
    sim = seeded(400, seed=23)
    sim.seed(companies=0, contacts=0, accounts=0, leads=60, days=2)
    workers = Workers(tmp_path)
    served = Service(tmp_path)
    with running_crm(sim, redis_url, monkeypatch):
        monkeypatch.setenv("ACCOUNT_ROUTER_VISIBILITY_TIMEOUT", "60")
        # Beat flushes the outbox into the history that GET /decisions reads (every 2 s).
        try:
            workers.start()
            served.start()
            with beat(tmp_path):
                yield sim, served, workers
        finally:
            served.stop()
            workers.stop_all()


def test_given_the_service_when_hubspot_posts_signed_creations_then_owners_are_written_and_explained(  # noqa: E501
        service):
    sim, served, workers = service
    before = unowned(sim)
    targets = before[:60]

    # When: HubSpot delivers 60 creations in three requests, then retries one of them.
    events = served.creation_events(targets)
    answers = [served.post_hubspot(events[k:k + 20]) for k in range(0, 60, 20)]
    replay = served.post_hubspot(events[:20])
    forged = served.post_hubspot(served.creation_events(unowned(sim)[60:61]), secret="wrong")

    # Then: every delivery is acknowledged; the replay routes nothing; the forgery is refused.
    assert [status for status, _ in answers] == [200, 200, 200]
    assert [json.loads(body) for _, body in answers] == [{"accepted": 20, "duplicates": 0}] * 3
    assert replay[0] == 200 and json.loads(replay[1]) == {"accepted": 0, "duplicates": 20}
    assert forged[0] == 401
    wait_for(lambda: all(sim.owner_of("hubspot", OBJ, i) for i in targets), workers,
             "the webhook companies to be owned")
    assert unowned(sim) == before[60:]  # nothing else was routed, the forged one included

    # The ops API explains each one: a webhook decision, written, with its trace.
    def audited(record_id: str) -> list[dict[str, object]]:
        status, body = served.ops("GET", f"/decisions/{record_id}")
        assert status == 200, body
        return [d for d in json.loads(body) if d["written_at"]]

    wait_for(lambda: all(audited(i) for i in targets), workers, "the audit rows")
    for record_id in targets:
        [decision] = audited(record_id)
        assert decision["trigger"] == "webhook"
        assert decision["owner_crm_id"] == sim.owner_of("hubspot", OBJ, record_id)
        assert decision["trace"], decision
    assert served.ops("GET", f"/decisions/{targets[0]}")[0] == 200
    assert call("GET", f"{served.base}/decisions/{targets[0]}")[0] == 401  # no token

    # Health and metrics see the broker and what the worker did.
    status, body = call("GET", f"{served.base}/healthz")
    assert status == 200 and json.loads(body)["checks"] == {"state": "ok", "broker": "ok"}
    status, body = call("GET", f"{served.base}/metrics")
    text = body.decode()
    assert status == 200
    assert 'account_router_queue_depth{queue="celery"}' in text
    assert 'account_router_webhook_events_total{crm="hubspot",result="accepted"} 60.0' in text
    assert 'account_router_webhook_events_total{crm="hubspot",result="duplicate"} 20.0' in text
    assert "account_router_decisions_total{" in text


def test_given_the_service_when_salesforce_sends_an_outbound_message_then_acked_and_leads_owned(
        service):
    sim, served, workers = service
    leads = [i for i in sim.ids("salesforce", "Lead")
             if sim.owner_of("salesforce", "Lead", i) is None][:15]
    assert len(leads) == 15

    status, body = served.post_salesforce(leads)
    stranger = served.post_salesforce(leads, org="00D5g000000ZZZZ")

    assert status == 200 and b"<Ack>true</Ack>" in body
    assert stranger[0] == 403
    wait_for(lambda: all(sim.owner_of("salesforce", "Lead", i) for i in leads), workers,
             "the notified leads to be owned")
    assert all(sim.owner_of("salesforce", "Lead", i).startswith("005") for i in leads)
    # The secret in the path never reaches the server's log, its access log included.
    log = served.log.read_text(errors="replace")
    assert "/webhooks/salesforce/[redacted]" in log
    assert SF_SECRET not in log
