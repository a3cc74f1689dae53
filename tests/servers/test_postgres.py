"""The PostgreSQL test server: starts, serves loopback only, survives stop/start, leaves nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.servers.postgres import PostgresServer, PostgresUnavailable, find_bindir

ROOT = Path(__file__).resolve().parents[2]


def _refused(server_dsn: str) -> bool:
    try:
        psycopg.connect(server_dsn, connect_timeout=2).close()
    except psycopg.OperationalError:
        return True
    return False


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_given_the_session_server_when_connecting_then_it_answers_on_loopback_with_test_settings(
    postgres_server: PostgresServer,
) -> None:
    with postgres_server.connect() as conn:
        row = conn.execute(
            "SELECT host(inet_server_addr()), inet_server_port(), current_setting('fsync'),"
            " current_setting('synchronous_commit'), current_setting('listen_addresses')"
        ).fetchone()
    assert row == ("127.0.0.1", postgres_server.port, "off", "off", "127.0.0.1")
    assert postgres_server.url == (
        f"postgresql+psycopg://postgres@127.0.0.1:{postgres_server.port}/postgres"
    )


def test_given_two_tests_databases_when_one_creates_a_table_then_the_other_is_still_empty(
    postgres_server: PostgresServer,
) -> None:
    first = postgres_server.create_database("fixture_probe_a")
    second = postgres_server.create_database("fixture_probe_b")
    try:
        assert first.endswith("/fixture_probe_a") and second.endswith("/fixture_probe_b")
        with postgres_server.connect("fixture_probe_a") as conn:
            conn.execute("CREATE TABLE t (id int)")
        with postgres_server.connect("fixture_probe_b") as conn:
            assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)
    finally:
        postgres_server.drop_database("fixture_probe_a")
        postgres_server.drop_database("fixture_probe_b")


def test_given_a_hostile_database_name_when_creating_then_it_is_refused_before_sql() -> None:
    server = PostgresServer.__new__(PostgresServer)  # no server needed: the check comes first
    with pytest.raises(ValueError, match="database name"):
        server.create_database('x"; DROP DATABASE postgres; --')


def test_given_postgres_url_when_data_is_written_and_the_server_restarts_then_it_is_kept(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    dsn = postgres_server.dsn(database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (id int PRIMARY KEY)")
        conn.execute("INSERT INTO kept VALUES (1), (2), (3)")
    port = postgres_server.port

    postgres_server.stop()
    assert not postgres_server.running and _refused(dsn)
    postgres_server.start()

    assert postgres_server.port == port
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (3,)


def test_given_a_server_when_closed_then_its_port_refuses_and_its_directory_is_gone() -> None:
    server = PostgresServer(settings={"fsync": "on"})  # overrides reach postgresql.conf
    dsn, root = server.dsn(), server.root
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT current_setting('fsync')").fetchone() == ("on",)

    server.close()
    server.close()  # idempotent

    assert _refused(dsn)
    assert not root.exists()


def test_given_the_owning_process_is_killed_when_waiting_then_a_watchdog_ends_the_server() -> None:
    script = (
        "import sys; from tests.servers.postgres import PostgresServer; s = PostgresServer();"
        " pid = (s.data / 'postmaster.pid').read_text().split()[0];"
        " print(s.root, s.dsn(), pid, flush=True); sys.stdin.read()"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        root, dsn, pid = owner.stdout.readline().split()
        assert not _refused(dsn)
        owner.send_signal(signal.SIGKILL)  # no atexit, no finally: only the watchdog is left
        owner.wait(timeout=10)

        deadline = time.monotonic() + 20
        while (_process_alive(int(pid)) or Path(root).exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _process_alive(int(pid))
        assert not Path(root).exists()
        assert _refused(dsn)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def test_given_no_postgresql_installed_when_finding_binaries_then_the_error_names_ci_dev_test(
    tmp_path: Path,
) -> None:
    with pytest.raises(PostgresUnavailable, match=r"bash \.ci/dev test"):
        find_bindir(lib_root=tmp_path, path=str(tmp_path))


def test_given_several_versions_when_finding_binaries_then_the_newest_wins(tmp_path: Path) -> None:
    for version in ("9.6", "15", "13"):
        bindir = tmp_path / version / "bin"
        bindir.mkdir(parents=True)
        (bindir / "initdb").touch()
    assert find_bindir(lib_root=tmp_path, path="") == tmp_path / "15" / "bin"
