"""`serve`'s uvicorn settings, against a real uvicorn on a loopback port: secrets never reach
a log line (the access log included); a body that never arrives does not hold a connection."""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from sync.state import open_store
from tasks.http import create_app
from tasks.http.server import uvicorn_config
from tests.loopback import free_port
from tests.tasks.test_http import SF_SECRET, TOKEN, RecordingEnqueue, make_settings, outbound


class Served:
    """The app under uvicorn (configured as `serve` does) in a thread of this process."""

    def __init__(self, app: FastAPI, header_timeout: float = 10.0) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=self.port,
                                                    header_timeout=header_timeout))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body,
                                         method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        yield create_app(make_settings(), store, RecordingEnqueue(), body_timeout=0.5)
    finally:
        store.close()


def test_given_requests_carrying_secrets_in_the_url_when_served_then_no_log_line_holds_them(
    app: FastAPI, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    query_token = "query-token-value-7f3a"
    encoded = SF_SECRET.replace("s", "%73")  # the router decodes it: the same endpoint

    with Served(app) as served:
        statuses = [
            served.call("POST", f"/webhooks/salesforce/{SF_SECRET}", outbound(),
                        {"Content-Type": "text/xml"}),
            served.call("POST", f"/webhooks/salesforce/{encoded}", outbound(),
                        {"Content-Type": "text/xml"}),
            served.call("POST", f"/webhooks/salesforce/{SF_SECRET}x", outbound()),
            served.call("GET", f"/decisions/501?token={query_token}&limit=5",
                        headers={"Authorization": f"Bearer {TOKEN}"}),
            served.call("GET", f"/healthz?access_token={query_token}"),
        ]

    assert statuses == [200, 200, 401, 200, 200]
    lines = [record.getMessage() for record in caplog.records]
    access = [line for line in lines if "HTTP/1.1" in line]
    assert len(access) == 5, lines  # the access log ran: the assertions below are not vacuous
    assert sum("/webhooks/salesforce/[redacted]" in line for line in access) == 3
    assert sum("token=[redacted]" in line for line in access) == 2
    for line in lines:
        assert SF_SECRET not in line and encoded not in line and query_token not in line


def test_given_a_body_that_never_arrives_when_served_then_408_and_the_connection_closes(
    app: FastAPI,
) -> None:
    with Served(app) as served, socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.settimeout(5)
        sock.sendall(b"POST /webhooks/hubspot HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n[")
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            answer += chunk
        waited = time.monotonic() - started

    assert answer.startswith(b"HTTP/1.1 408 ")
    assert 0.4 < waited < 3


@pytest.mark.parametrize("sent", [b"", b"POST /webhooks/hubspot HTTP/1.1\r\nHost: x\r\n"],
                         ids=["nothing", "half-the-headers"])
def test_given_a_request_head_that_never_completes_when_served_then_the_connection_closes(
    app: FastAPI, sent: bytes,
) -> None:
    with Served(app, header_timeout=0.5) as served, \
            socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.settimeout(5)
        sock.sendall(sent)
        started = time.monotonic()
        closed = sock.recv(65536) == b""
        waited = time.monotonic() - started

    assert closed
    assert 0.4 < waited < 3


def test_given_a_keep_alive_connection_when_requests_follow_then_each_is_answered(
    app: FastAPI,
) -> None:
    # The head timer restarts after each response: the third request, 1.2 s after the
    # connection was made, is served although the first timer (1 s) would have closed it.
    with Served(app, header_timeout=1.0) as served, \
            socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.settimeout(5)
        answers = []
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answers.append(read_response(sock))
            time.sleep(0.6)

    assert all(answer.startswith(b"HTTP/1.1 200 ") for answer in answers), answers


def read_response(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body), however the server split it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data  # closed by the server
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body
