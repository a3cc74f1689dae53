"""Shared fixtures: throwaway Redis and PostgreSQL servers, state stores over SQLite and Redis,
the CRM simulator served with the environment pointing at it."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import settings

from connectors.simulator import RunningSimulator, Simulator, serve
from sync.state import StateStore, open_store
from sync.state.redis import RedisStateStore
from sync.state.sqlite import SqliteStateStore
from tests.loopback import free_port
from tests.servers.browser import browser, page
from tests.servers.postgres import postgres_server, postgres_url

# Fixtures defined in tests/servers/, re-exported so every test directory can ask for them.
__all__ = ["browser", "page", "postgres_server", "postgres_url"]

# Property tests draw the same examples on every run (derandomize): a suite that passes once
# passes again, and a failure found on a developer's machine is the one CI sees.
settings.register_profile("deterministic", derandomize=True, deadline=None)
settings.load_profile("deterministic")

REDIS_BINARY_FALLBACK = Path("/usr/bin/redis-server")


def _answers_ping(url: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:  # exited: e.g. the port was taken meanwhile
                return False
            try:
                if client.ping():
                    return True
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a free loopback port, for the whole session: its URL."""
    binary = shutil.which("redis-server") or (
        str(REDIS_BINARY_FALLBACK) if REDIS_BINARY_FALLBACK.exists() else None
    )
    if binary is None:
        # Deliberately a failure, not a skip: a silently skipped Redis suite would let the
        # distributed store rot unnoticed.
        pytest.fail(
            "redis-server binary not found on PATH or at /usr/bin/redis-server; the Redis "
            "state-store tests need it (e.g. `apt-get install redis-server`)",
            pytrace=False,
        )
    workdir = tmp_path_factory.mktemp("redis")
    log = (workdir / "redis.log").open("wb")
    proc: subprocess.Popen[bytes] | None = None
    url = ""
    # A free port can be grabbed by someone else between probing and binding; try a few.
    for _ in range(5):
        port = free_port()
        url = f"redis://127.0.0.1:{port}/0"
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if _answers_ping(url, proc, timeout=10.0):
            break
        proc.terminate()
        proc.wait(timeout=10)
        proc = None
    if proc is None:
        log.close()
        pytest.fail(
            f"redis-server did not answer PING; see {workdir / 'redis.log'}", pytrace=False
        )
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session's Redis server, emptied before the test so tests never see each other."""
    client = redis.Redis.from_url(redis_server)
    try:
        client.flushdb()
    finally:
        client.close()
    yield redis_server


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A state URL per backend; open it again to get a second instance on the same data."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"  # tmp_path is absolute: sqlite:////...
    # Resolved lazily so SQLite-only runs never start a Redis server.
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStateStore]:
    """A fresh, empty embedded state store: `state.db` in the test's directory (the decision
    history lives in the same file)."""
    opened = SqliteStateStore(tmp_path / "state.db")
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def redis_store(redis_url: str) -> Iterator[RedisStateStore]:
    """A fresh, empty state store on the session's Redis server (emptied for the test)."""
    opened = RedisStateStore(redis_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def store(store_url: str) -> Iterator[StateStore]:
    """A fresh, empty state store, once per backend."""
    opened = open_store(store_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def sim_tls() -> bool:
    """Whether `running` serves the simulator over TLS; a module overrides it for plain HTTP."""
    return True


@pytest.fixture
def running(sim: Simulator, sim_tls: bool, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[RunningSimulator]:
    """The module's `sim` served on loopback, this process's environment (the settings a
    connector reads) pointing at it until the test ends."""
    with serve(sim, tls=sim_tls) as started:
        for name, value in started.env().items():
            monkeypatch.setenv(name, value)
        yield started
