"""Fixtures shared by the entry-layer tests: the structured log stream, the command line kept
from the environment, the notify channels beside the CRM simulator, and a `celery -A tasks
worker` subprocess routing against the simulator."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import structlog

from connectors.simulator import RunningSimulator
from connectors.simulator.slack import TOKEN, FakeSlack
from tasks.logging import configure_logging
from tests.servers.smtp import SmtpServer, smtp_server

__all__ = ["smtp_server"]  # a fixture, used by name

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "examples" / "routing.yaml"
PORTAL = "62515"  # the HubSpot portal the notices' record links name


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """JSON log lines as `configure_logging` writes them; the logging setup is undone after."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging(stream=stream)
    try:
        yield stream
    finally:
        root.setLevel(level)
        for handler in [h for h in root.handlers if type(h).__name__ == "_Handler"]:
            root.removeHandler(handler)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No settings leak in from the environment, and a stray relative path lands in tmp (the
    command-line tests: `pytestmark = pytest.mark.usefixtures("isolated")`)."""
    for name in ("ACCOUNT_ROUTER_CONFIG", "ACCOUNT_ROUTER_STATE_URL", "ACCOUNT_ROUTER_REDIS_URL",
                 "ACCOUNT_ROUTER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def notify_channels(running: RunningSimulator, slack: FakeSlack, smtp_server: SmtpServer,
                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunningSimulator:
    """The served simulator (`running`) and the notify channels set in the environment: the
    module's `slack` (the fake Slack Web API), the real SMTP server, and the HubSpot portal."""
    # One trust file for both test CAs: the simulator's TLS and the SMTP server's STARTTLS.
    bundle = tmp_path / "cas.pem"
    bundle.write_text(Path(running.env()["SSL_CERT_FILE"]).read_text()
                      + Path(smtp_server.ca_file).read_text())
    for name, value in {"SSL_CERT_FILE": str(bundle), "REQUESTS_CA_BUNDLE": str(bundle),
                        "ACCOUNT_ROUTER_SLACK_TOKEN": TOKEN,
                        "ACCOUNT_ROUTER_SLACK_BASE_URL": slack.base_url,
                        "ACCOUNT_ROUTER_SMTP_URL": smtp_server.url,
                        "ACCOUNT_ROUTER_MAIL_FROM": "router@example.com",
                        "HUBSPOT_PORTAL_ID": PORTAL}.items():
        monkeypatch.setenv(name, value)
    return running


class Worker(NamedTuple):
    """A `celery -A tasks worker` subprocess and the file its output goes to."""

    proc: subprocess.Popen[bytes]
    log: Path

    def wait_until(self, done: Callable[[], bool], what: str, seconds: float = 40.0) -> None:
        """Poll `done` until it holds; fail with the worker's log after `seconds`, or as soon
        as the worker exits."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if done():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"worker exited ({self.proc.returncode}) while waiting for {what}:\n"
                            f"{self.log.read_text(errors='replace')}")
            time.sleep(0.2)
        pytest.fail(f"timed out waiting for {what}; worker log:\n"
                    f"{self.log.read_text(errors='replace')}")


@pytest.fixture
def state_url(tmp_path: Path) -> str:
    """The state `worker_environment` gives the worker: a SQLite file of the test's own."""
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def routing_path() -> Path:
    """The routing file `worker_environment` gives the worker: the bundled example."""
    return EXAMPLE


@pytest.fixture
def worker_environment(running: RunningSimulator, redis_url: str, state_url: str,
                       routing_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunningSimulator:
    """The module's `sim` served, and the environment a worker started now reads: the
    simulator, Redis as broker (and metrics), `routing_path` and `state_url`."""
    for name, value in {"ACCOUNT_ROUTER_REDIS_URL": redis_url,
                        "ACCOUNT_ROUTER_CONFIG": str(routing_path),
                        "ACCOUNT_ROUTER_STATE_URL": state_url}.items():
        monkeypatch.setenv(name, value)
    return running


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """`start_worker(*args)` runs `celery -A tasks worker --pool solo --concurrency 1` with
    `args` added, in this process's environment as it is then, its output in `worker.log`;
    every worker started is terminated (killed after 15 s) when the test ends."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> Worker:
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tasks", "worker", *args, "--pool",
                 "solo", "--concurrency", "1", "--loglevel", "WARNING"],
                cwd=ROOT, env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT)
        started.append(proc)
        return Worker(proc, log)

    try:
        yield start
    finally:
        for proc in started:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def worker(worker_environment: RunningSimulator, start_worker: Callable[..., Worker]) -> Worker:
    """One worker in `worker_environment`."""
    return start_worker()
