"""The whole service with real parts: `account-router serve` under uvicorn on loopback, a
`celery -A tasks worker` subprocess, redis-server and the CRM simulator. Signed HubSpot
webhooks go in over HTTP; owners come out in the CRM, explained by the ops API."""

from __future__ import annotations

import json
import os
import socket
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
from tests.tasks.test_celery import unowned
from tests.tasks.test_distributed import OBJ, Workers, running_crm, seeded, wait_for

SECRET = "service-test-webhook-secret"
API_TOKEN = "service-test-api-token"
BIN = Path(sys.executable).with_name("account-router")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
                    "ACCOUNT_ROUTER_PUBLIC_URL": self.base})
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

    def ops(self, method: str, path: str) -> tuple[int, bytes]:
        return call(method, f"{self.base}{path}",
                    headers={"Authorization": f"Bearer {API_TOKEN}"})


@pytest.fixture
def service(redis_url, monkeypatch, tmp_path) -> Iterator[tuple[Simulator, Service, Workers]]:
    sim = seeded(400, seed=23)
    workers = Workers(tmp_path)
    served = Service(tmp_path)
    with running_crm(sim, redis_url, monkeypatch):
        monkeypatch.setenv("ACCOUNT_ROUTER_VISIBILITY_TIMEOUT", "60")
        try:
            workers.start()
            served.start()
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
