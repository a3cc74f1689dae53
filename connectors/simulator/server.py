"""Run both simulator apps under uvicorn in background threads; Salesforce over TLS (test CA)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import trustme
import uvicorn
from fastapi import FastAPI

from connectors.simulator.core import HUBSPOT_TOKEN, SALESFORCE_SESSION, Simulator
from connectors.simulator.hubspot import hubspot_app
from connectors.simulator.salesforce import salesforce_app

_START_TIMEOUT_S = 10.0


class _Server(uvicorn.Server):
    """uvicorn, stopping at once: the stock graceful shutdown waits for every connection to
    close, and an idle TLS client never answers close_notify, which held stop() for seconds."""

    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        # The stock loop polls `should_exit` every 100 ms; waking on request keeps stop() (and
        # so every test using the simulator) from paying that tick.
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    def wake(self) -> None:
        """Called from another thread after setting `should_exit`."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        # In-flight requests end by themselves: stalls watch `app.state.stopping`.
        while (self.server_state.tasks or self.server_state.connections) \
                and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for task in self.server_state.tasks:
            task.cancel()


class _ThreadedServer:
    """One uvicorn server on a socket we bound ourselves, so port 0 is known before it starts."""

    def __init__(self, app: FastAPI, sock: socket.socket, certfile: str | None) -> None:
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                ssl_certfile=certfile, timeout_keep_alive=5)
        self.app = app
        self.server = _Server(config)
        self.sock = sock
        self.thread = threading.Thread(target=self._run, name="crm-simulator", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as exc:  # surfaced by start(); a thread cannot raise to us
            self.error = exc

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"simulator server failed to start: {self.error!r}")
            time.sleep(0.002)

    def request_stop(self) -> None:
        self.app.state.stopping.set()
        self.server.should_exit = True
        self.server.wake()

    def stop(self) -> None:
        self.request_stop()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        self.sock.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says so, and without it Nagle + delayed ACK add 40 ms per response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _pick(tokens: set[str], preferred: str) -> str:
    return preferred if preferred in tokens else min(tokens, default="")


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class RunningSimulator:
    """Both simulator servers, running. A context manager; `stop()` is idempotent."""

    def __init__(self, sim: Simulator, *, host: str = "127.0.0.1", hubspot_port: int = 0,
                 salesforce_port: int = 0, tls: bool = True) -> None:
        self.sim = sim
        self._dir = Path(tempfile.mkdtemp(prefix="crm-simulator-"))
        self._servers: list[_ThreadedServer] = []
        self._sockets: list[socket.socket] = []
        try:
            ca = trustme.CA()
            self.ca_bundle_path = str(self._dir / "ca.pem")
            ca.cert_pem.write_to_path(self.ca_bundle_path)
            certfile: str | None = None
            if tls:
                certfile = str(self._dir / "salesforce.pem")
                cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
                cert.private_key_and_cert_chain_pem.write_to_path(certfile)
            hs_sock = _bind(host, hubspot_port)
            self._sockets.append(hs_sock)
            sf_sock = _bind(host, salesforce_port)
            self._sockets.append(sf_sock)
            name = _url_host(host)
            self.hubspot_url = f"http://{name}:{hs_sock.getsockname()[1]}"
            self.salesforce_url = f"{'https' if tls else 'http'}://{name}:" \
                                  f"{sf_sock.getsockname()[1]}"
            self._servers = [_ThreadedServer(hubspot_app(sim), hs_sock, None),
                             _ThreadedServer(salesforce_app(sim), sf_sock, certfile)]
            for server in self._servers:
                server.start()
        except BaseException:
            self.stop()
            raise

    def env(self) -> dict[str, str]:
        """Environment for account-router (docs/operations.md#settings) to talk to this
        simulator."""
        return {
            "ACCOUNT_ROUTER_HUBSPOT_BASE_URL": self.hubspot_url,
            "HUBSPOT_ACCESS_TOKEN": _pick(self.sim.hubspot_tokens, HUBSPOT_TOKEN),
            "SALESFORCE_INSTANCE_URL": self.salesforce_url,
            "SALESFORCE_ACCESS_TOKEN": _pick(self.sim.salesforce_sessions, SALESFORCE_SESSION),
            "REQUESTS_CA_BUNDLE": self.ca_bundle_path,
            "SSL_CERT_FILE": self.ca_bundle_path,
        }

    def stop(self) -> None:
        for server in self._servers:
            server.request_stop()  # both shut down in parallel
        for server in self._servers:
            server.stop()
        for sock in self._sockets:  # also those bound before a failed start
            sock.close()
        self._servers, self._sockets = [], []
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def serve(sim: Simulator, *, host: str = "127.0.0.1", hubspot_port: int = 0,
          salesforce_port: int = 0, tls: bool = True) -> RunningSimulator:
    """Start both servers (port 0: a free port) and return once they accept connections:
    `with serve(sim) as running: ...running.hubspot_url...`."""
    return RunningSimulator(sim, host=host, hubspot_port=hubspot_port,
                            salesforce_port=salesforce_port, tls=tls)
