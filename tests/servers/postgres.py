"""A throwaway PostgreSQL (initdb + pg_ctl) on a free loopback port, and its pytest fixtures."""

from __future__ import annotations

import atexit
import itertools
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType

import psycopg
import pytest
from psycopg import sql

from tests.loopback import free_port

INSTALL_HINT = "run `bash .ci/dev test` once (it installs the `postgresql` package when missing)"
DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# Test speed, not durability: a crashed test server is thrown away anyway. fsync and
# synchronous_commit off make CREATE DATABASE and every commit a memory operation.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "log_min_messages": "warning",
}

# Runs in its own session so Ctrl-C on pytest does not reach it. It blocks on a pipe whose only
# writer is the test process: EOF means that process is gone however it ended (even SIGKILL,
# where atexit never runs), and then the server and its directory go too.
WATCHDOG = r"""
import os, shutil, signal, sys, time
root = sys.argv[1]
sys.stdin.buffer.read()
try:
    with open(os.path.join(root, "data", "postmaster.pid")) as f:
        pid = int(f.readline())
    os.kill(pid, signal.SIGQUIT)  # immediate shutdown: the postmaster ends its backends
    for _ in range(100):
        os.kill(pid, 0)
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
except (OSError, ValueError):
    pass  # no pid file (already stopped) or the process is gone: nothing left to end
shutil.rmtree(root, ignore_errors=True)
"""


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server binaries (or the `postgres` user to run them as root) are missing."""


class PostgresStartError(RuntimeError):
    """initdb or pg_ctl failed; the message carries the end of the server log."""


def _version_key(bindir: Path) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin -> (15,): newest major version first when sorted reversed."""
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name)) or (0,)


def find_bindir(lib_root: Path = Path("/usr/lib/postgresql"), path: str | None = None) -> Path:
    """The newest installed PostgreSQL server bin directory (the one holding initdb and pg_ctl):
    Debian's /usr/lib/postgresql/VERSION/bin, else `pg_config --bindir`, else initdb on PATH."""
    candidates = [p.parent for p in lib_root.glob("*/bin/initdb")]
    if candidates:
        return max(candidates, key=_version_key)
    pg_config = shutil.which("pg_config", path=path)
    if pg_config is not None:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(out.stdout.strip())
        if out.returncode == 0 and (bindir / "initdb").is_file():
            return bindir
    initdb = shutil.which("initdb", path=path)
    if initdb is not None:
        return Path(initdb).parent
    raise PostgresUnavailable(
        f"PostgreSQL server binaries (initdb, pg_ctl) not found in {lib_root}/*/bin, "
        f"pg_config --bindir or PATH; {INSTALL_HINT}"
    )


class PostgresServer:
    """A private PostgreSQL cluster in a fresh temp dir, trust auth on 127.0.0.1 only.

    Started on construction; `stop()`/`start()` restart it on the same port and data (for tests
    that take the database away mid-run); `close()` stops it and removes everything. It never
    outlives the process that made it: atexit, plus a watchdog child for a hard kill."""

    def __init__(
        self, bindir: Path | None = None, settings: Mapping[str, str] | None = None
    ) -> None:
        """`settings` override SERVER_SETTINGS (postgresql.conf syntax), e.g. a benchmark
        turning fsync back on."""
        self.bindir = bindir or find_bindir()
        self._settings = {**SERVER_SETTINGS, **(settings or {})}
        self._as_postgres: list[str] = []
        owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            # initdb refuses to run as root; the Debian package's `postgres` user is there.
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root but there is no `postgres` system user; {INSTALL_HINT}"
                ) from None
            owner = (entry.pw_uid, entry.pw_gid)
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
        # Straight under the system temp dir (not pytest's 0700 tree) so `postgres` can reach it.
        self.root = Path(tempfile.mkdtemp(prefix="account-router-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = 0
        self._closed = False
        if owner is not None:
            os.chown(self.root, *owner)
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, str(self.root)],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )
        atexit.register(self.close)
        try:
            self._initdb()
            self._first_start()
        except BaseException:
            self.close()
            raise

    # -- lifecycle ------------------------------------------------------------------------------

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as_postgres, *args], capture_output=True, text=True, check=False, timeout=120
        )

    def _initdb(self) -> None:
        done = self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C", "--no-instructions",
        )
        if done.returncode != 0:
            raise PostgresStartError(f"initdb failed ({done.returncode}): {done.stderr[-2000:]}")
        # Only TCP from loopback, trusted; the unix socket lives in our dir and is refused by
        # pg_hba (no `local` line), so nothing here collides with a system cluster.
        (self.data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
        settings = {**self._settings, "unix_socket_directories": f"'{self.root}'"}
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# account-router test server\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        return self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", f"-p {self.port}", "-w", "-t", "60", "start",
        )

    def _first_start(self) -> None:
        # A free port can be taken between probing and binding: try a few.
        for _ in range(5):
            self.port = free_port()
            if self._pg_ctl_start().returncode == 0:
                return
            if "Address already in use" not in self._log_tail():
                break
        raise PostgresStartError(f"pg_ctl start failed; end of {self.log}:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def start(self) -> None:
        """Start again on the same port and data directory after `stop()`."""
        if self._closed:
            raise RuntimeError("PostgresServer is closed")
        if self.running:
            return
        if self._pg_ctl_start().returncode != 0:
            raise PostgresStartError(f"pg_ctl start failed; end of {self.log}:\n{self._log_tail()}")

    def stop(self) -> None:
        """Stop the server (fast shutdown: clients are disconnected), keeping its data."""
        if not self.running:
            return
        done = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                         "-t", "60", "stop")
        if done.returncode != 0 and self.running:
            raise PostgresStartError(f"pg_ctl stop failed: {done.stderr[-2000:]}")

    def close(self) -> None:
        """Stop the server and remove its directory; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.running:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                          "-w", "-t", "60", "stop")
        finally:
            # Closing the pipe lets the watchdog finish the job (it finds no server left).
            if self._watchdog.stdin is not None:
                self._watchdog.stdin.close()
            try:
                self._watchdog.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._watchdog.send_signal(signal.SIGKILL)
                self._watchdog.wait()
            shutil.rmtree(self.root, ignore_errors=True)
            atexit.unregister(self.close)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- addresses and databases ----------------------------------------------------------------

    def url_for(self, database: str) -> str:
        """The SQLAlchemy URL (psycopg 3 driver) of one database on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """The libpq URL of one database, for psycopg.connect."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit psycopg connection (close it, or use it as a context manager)."""
        return psycopg.connect(self.dsn(database), autocommit=True, connect_timeout=10)

    def create_database(self, name: str, template: str = "template1") -> str:
        """CREATE DATABASE name (a copy of `template`): its SQLAlchemy URL."""
        for value in (name, template):
            if not DATABASE_NAME.fullmatch(value):
                raise ValueError(f"database name {value!r} is not [a-z_][a-z0-9_]*, <= 63 chars")
        with self.connect() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE name, disconnecting whoever is still on it."""
        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# -- pytest fixtures (imported into tests/conftest.py) ---------------------------------------------

_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the whole session."""
    try:
        server = PostgresServer()
    except (PostgresUnavailable, PostgresStartError) as error:
        # A failure, not a skip: a silently skipped history suite would let it rot unnoticed.
        pytest.fail(f"PostgreSQL test server unavailable: {error}", pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server, for one test: its SQLAlchemy URL."""
    # A test that stopped the server and failed before restarting it must not sink the rest.
    postgres_server.start()
    name = f"test_{os.getpid()}_{next(_database_numbers)}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.start()
        postgres_server.drop_database(name)
