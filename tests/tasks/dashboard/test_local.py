"""The local dashboard (`account-router dashboard`): no sign-in, loopback only, CSRF still."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from connectors.settings import Settings
from sync.compiler import load_routing
from tasks.cli import app
from tasks.dashboard import local_app
from tasks.dashboard.serving import is_loopback
from tests.tasks.dashboard.conftest import NOW, ROUTING, Env, csrf_of


@pytest.fixture
def local(env: Env, tmp_path: Path) -> TestClient:
    routing_file = tmp_path / "local-routing.yaml"
    routing_file.write_text(ROUTING)
    routing = load_routing(routing_file)
    retried: list[tuple[str, str, list[str]]] = []
    app = local_app(Settings(), env.store, env.history, lambda: routing,
                    lambda crm, obj, ids: retried.append((crm, obj, ids)),
                    clock=lambda: NOW.timestamp())
    app.state.retried = retried
    return TestClient(app, base_url="http://127.0.0.1:8080")


def test_given_the_local_dashboard_when_opening_root_then_pages_open_without_sign_in(
        local: TestClient) -> None:
    response = local.get("/", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/dashboard/overview")
    page = local.get("/dashboard/overview")
    assert page.status_code == 200 and "Sign out" not in page.text and ">local<" in page.text
    assert local.get("/dashboard/reps").status_code == 200


def test_given_the_local_dashboard_when_acting_then_the_csrf_token_is_still_required(
        local: TestClient, env: Env) -> None:
    assert local.post("/dashboard/reps/bo/pause", data={}).status_code == 403
    csrf = csrf_of(local.get("/dashboard/reps").text)
    response = local.post("/dashboard/reps/bo/pause", data={"csrf": csrf},
                          follow_redirects=False)
    assert response.status_code == 303 and env.store.pauses(NOW) == {"bo": None}
    local.post("/dashboard/failed/retry", data={"csrf": csrf, "crm": "salesforce",
                                                "object": "Lead"})
    assert local.app.state.retried == [("salesforce", "Lead", ["00Q5g00000AbCdEAAZ"])]


def test_given_another_host_name_when_asking_the_local_dashboard_then_400(
        local: TestClient) -> None:
    for host in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example"):
        response = local.get("/dashboard/overview", headers={"host": host})
        assert response.status_code == 400, host


@pytest.mark.parametrize(("host", "ok"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("example.com", False),
    ("", False)])
def test_given_a_host_when_checking_loopback_then_only_loopback_passes(host: str,
                                                                       ok: bool) -> None:
    assert is_loopback(host) is ok


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "router.example.com"])
def test_given_a_public_host_when_running_the_command_then_exit_2_naming_why(
        tmp_path: Path, host: str) -> None:
    result = CliRunner().invoke(app, ["dashboard", "--host", host, "--state",
                                      f"sqlite:///{tmp_path / 'state.db'}"])
    assert result.exit_code == 2
    assert "not a loopback address" in result.stderr


def test_given_no_state_file_when_running_the_command_then_exit_2_and_nothing_created(
        tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    result = CliRunner().invoke(app, ["dashboard", "--port", "0", "--state",
                                      f"sqlite:///{missing}"])
    assert result.exit_code == 2 and "no state at" in result.stderr
    assert not missing.exists()


def serving(args: list[str], path: str) -> tuple[str, int]:
    """Run the CLI with `args` until it prints its dashboard URL, GET `path` there, stop it
    with Ctrl-C (SIGINT): the page and the exit status."""
    proc = subprocess.Popen([sys.executable, "-m", "tasks.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "ACCOUNT_ROUTER_API_TOKEN": ""})
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("dashboard: "):
                break
        else:
            raise AssertionError("no dashboard URL printed: " + str(proc.communicate()[1]))
        assert "no sign-in" in line
        url = line.split()[1]
        assert url.startswith("http://127.0.0.1:")
        deadline = time.monotonic() + 15
        while True:
            try:
                client = httpx.Client(base_url=url, follow_redirects=True, timeout=5)
                page = client.get(path).text
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    return page, code


def test_given_a_state_file_when_running_the_command_then_it_prints_the_url_and_serves(
        env: Env, tmp_path: Path) -> None:
    page, code = serving(["dashboard", "--port", "0", "--state",
                          f"sqlite:///{tmp_path / 'state.db'}", "--config",
                          str(tmp_path / "routing.yaml")], "/dashboard/decisions?rep=bo")
    assert 'data-id="' in page and "Sign in" not in page
    assert code == 0


def test_given_the_demo_with_dashboard_when_run_then_it_serves_the_demos_history(
        tmp_path: Path) -> None:
    page, code = serving(["demo", "--companies", "30", "--leads", "6", "--dashboard",
                          "--port", "0"], "/dashboard/overview?window=today")
    total = re.search(r'data-testid="total">([\d,]+)<', page)
    assert total is not None and int(total[1].replace(",", "")) > 0
    assert code == 0
