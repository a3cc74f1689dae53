"""A local stand-in for the Slack Web API (chat.postMessage, users.lookupByEmail), with switches.

For tests, the benchmark and the demo: point ACCOUNT_ROUTER_SLACK_BASE_URL at `base_url`. It
answers as Slack does: HTTP 200 with `{"ok": false, "error": ...}` for API errors, 429 with
Retry-After when rate limited, and whatever status a test asks for.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "xoxb-simulated-token"


@dataclass
class Posted:
    """One chat.postMessage the fake accepted."""

    channel: str
    text: str
    blocks: list[dict[str, Any]]
    at: float  # time.monotonic()
    received: float = 0.0  # time.time(), to compare with other processes' clocks


@dataclass
class Call:
    method: str
    status: int
    error: str | None
    at: float


@dataclass
class _Switches:
    rate_limited: int = 0  # the next n calls answer 429
    retry_after: str = "1"
    failing: int = 0  # the next n calls answer `fail_status`
    fail_status: int = 500
    missing: set[str] = field(default_factory=set)  # user ids answering user_not_found


class FakeSlack:
    """A threaded HTTP server on a free loopback port; `with FakeSlack() as slack:`."""

    def __init__(self, users: dict[str, str] | None = None, token: str = TOKEN,
                 delay: float = 0.0) -> None:
        self.users = {k.lower(): v for k, v in (users or {}).items()}  # email -> user id
        self.token = token
        self.delay = delay  # seconds each answer takes, to model Slack's latency
        self.posted: list[Posted] = []
        self.calls: list[Call] = []
        self.switches = _Switches()
        # Called with each accepted message before it is answered (e.g. to kill the worker
        # that sent it, which then never learns it went out).
        self.on_post: Callable[[Posted], None] | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-slack",
                                        daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/"

    def start(self) -> FakeSlack:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- switches --------------------------------------------------------------------------

    def rate_limit(self, calls: int = 1, retry_after: str = "1") -> None:
        with self._lock:
            self.switches.rate_limited = calls
            self.switches.retry_after = retry_after

    def fail(self, calls: int = 1, status: int = 500) -> None:
        with self._lock:
            self.switches.failing = calls
            self.switches.fail_status = status

    def remove_user(self, user_id: str) -> None:
        """The user left the workspace: messages to them answer user_not_found."""
        with self._lock:
            self.switches.missing.add(user_id)

    def messages_to(self, user_id: str) -> list[Posted]:
        with self._lock:
            return [p for p in self.posted if p.channel == user_id]

    # -- the API ---------------------------------------------------------------------------

    def _answer(self, method: str, headers: dict[str, str], params: dict[str, Any]
                ) -> tuple[int, dict[str, str], dict[str, Any]]:
        if method == "__posted__":  # the fake's own: what it accepted, for another process
            with self._lock:
                return 200, {}, {"ok": True, "posted": [
                    {"channel": p.channel, "text": p.text, "received": p.received}
                    for p in self.posted]}
        with self._lock:
            sw = self.switches
            if sw.rate_limited > 0:
                sw.rate_limited -= 1
                return 429, {"Retry-After": sw.retry_after}, {"ok": False, "error": "ratelimited"}
            if sw.failing > 0:
                sw.failing -= 1
                return sw.fail_status, {}, {"ok": False, "error": "internal_error"}
        if headers.get("authorization") != f"Bearer {self.token}":
            return 200, {}, {"ok": False, "error": "invalid_auth"}
        if method == "users.lookupByEmail":
            user = self.users.get(str(params.get("email", "")).lower())
            if user is None:
                return 200, {}, {"ok": False, "error": "users_not_found"}
            return 200, {}, {"ok": True, "user": {"id": user}}
        if method == "chat.postMessage":
            channel = str(params.get("channel", ""))
            if channel in self.switches.missing:
                return 200, {}, {"ok": False, "error": "user_not_found"}
            if channel not in self.users.values():
                return 200, {}, {"ok": False, "error": "channel_not_found"}
            if not params.get("text") and not params.get("blocks"):
                return 200, {}, {"ok": False, "error": "no_text"}
            posted = Posted(channel, str(params.get("text", "")), list(params.get("blocks") or []),
                            time.monotonic(), time.time())
            with self._lock:
                self.posted.append(posted)
            if self.on_post is not None:  # after counting: a killed sender's message arrived
                self.on_post(posted)
            return 200, {}, {"ok": True, "channel": channel, "ts": f"{time.time():.6f}"}
        return 404, {}, {"ok": False, "error": "unknown_method"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None  # quiet: tests read `calls`

            def _serve(self, body: bytes) -> None:
                url = urlsplit(self.path)
                method = url.path.rsplit("/", 1)[-1]
                params: dict[str, Any] = {k: v[0] for k, v in parse_qs(url.query).items()}
                ctype = self.headers.get("Content-Type", "")
                if body and "json" in ctype:
                    params.update(json.loads(body))
                elif body:
                    params.update({k: v[0] for k, v in parse_qs(body.decode()).items()})
                headers = {k.lower(): v for k, v in self.headers.items()}
                if fake.delay:
                    time.sleep(fake.delay)
                status, extra, payload = fake._answer(method, headers, params)
                with fake._lock:
                    fake.calls.append(Call(method, status,
                                           None if payload.get("ok") else payload.get("error"),
                                           time.monotonic()))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._serve(b"")

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                self._serve(self.rfile.read(length) if length else b"")

        return Handler


def main() -> None:
    """`python -m connectors.simulator.slack --users '{"ana@example.com": "U0ANA"}'`: serve the
    fake in a process of its own (the benchmark's clients must not share its interpreter lock);
    prints its base URL, then serves until killed. `GET {base}__posted__` lists what arrived."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--users", default="{}", help="JSON: email -> Slack user id")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    fake = FakeSlack(users=json.loads(args.users), delay=args.latency_ms / 1000).start()
    print(fake.base_url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
