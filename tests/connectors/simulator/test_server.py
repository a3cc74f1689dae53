"""Running the simulator: start/stop, fault injection, the control endpoints, the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from connectors.simulator import (
    HUBSPOT_TOKEN,
    SALESFORCE_SESSION,
    RunningSimulator,
    Simulator,
    serve,
)
from tests.loopback import free_port

HS_AUTH = {"Authorization": f"Bearer {HUBSPOT_TOKEN}"}
SF_AUTH = {"Authorization": f"Bearer {SALESFORCE_SESSION}"}
ROOT = Path(__file__).parents[3]


def hubspot_statuses(running: RunningSimulator, n: int) -> list[int]:
    url = f"{running.hubspot_url}/crm/v3/objects/companies?limit=1"
    with requests.Session() as session:
        return [session.get(url, headers=HS_AUTH).status_code for _ in range(n)]


def test_given_a_simulator_when_served_then_it_starts_and_stops_within_a_second():
    sim = Simulator(1)
    started = time.monotonic()
    running = serve(sim)
    assert time.monotonic() - started < 1.0
    assert requests.get(f"{running.hubspot_url}/crm/v3/owners", headers=HS_AUTH).ok
    stopping = time.monotonic()
    running.stop()
    assert time.monotonic() - stopping < 1.0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{running.hubspot_url}/crm/v3/owners", headers=HS_AUTH, timeout=1)
    running.stop()  # idempotent


def test_given_a_taken_port_when_serving_then_it_fails_fast_and_cleans_up(running):
    port = int(running.hubspot_url.rsplit(":", 1)[1])
    with pytest.raises(OSError):
        serve(Simulator(1), hubspot_port=port)


def test_given_tls_off_when_served_then_salesforce_speaks_plain_http():
    with serve(Simulator(1), tls=False) as running:
        assert running.salesforce_url.startswith("http://")
        assert requests.get(f"{running.salesforce_url}/services/data").ok


def test_given_env_when_asked_then_it_names_the_urls_tokens_and_ca_bundle(running):
    env = running.env()
    assert env["ACCOUNT_ROUTER_HUBSPOT_BASE_URL"] == running.hubspot_url
    assert env["SALESFORCE_INSTANCE_URL"] == running.salesforce_url
    assert env["HUBSPOT_ACCESS_TOKEN"] == HUBSPOT_TOKEN
    assert env["SALESFORCE_ACCESS_TOKEN"] == SALESFORCE_SESSION
    assert env["REQUESTS_CA_BUNDLE"] == running.ca_bundle_path
    assert Path(running.ca_bundle_path).read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_given_a_20_percent_error_rate_when_called_then_about_a_fifth_fail_reproducibly():
    def run() -> list[int]:
        sim = Simulator(5)
        sim.configure_limits(hubspot_burst=10_000)
        sim.configure_faults(error_rate=0.2)
        with serve(sim, tls=False) as running:
            return hubspot_statuses(running, 250)

    first = run()
    failed = Counter(s for s in first if s != 200)
    assert 0.14 * 250 <= sum(failed.values()) <= 0.26 * 250
    assert set(failed) == {429, 500, 503}
    assert 0.35 <= failed[429] / sum(failed.values()) <= 0.65  # half 429, half 5xx
    assert run() == first  # seeded


def test_given_injected_faults_when_they_hit_then_the_bodies_are_the_vendor_s(sim: Simulator,
                                                                              running):
    sim.configure_faults(error_rate=1.0)
    seen: dict[int, object] = {}
    with requests.Session() as session:
        for _ in range(30):
            response = session.get(f"{running.hubspot_url}/crm/v3/objects/companies",
                                   headers=HS_AUTH)
            seen[response.status_code] = response.json()
    assert seen[429]["policyName"] == "TEN_SECONDLY_ROLLING"  # type: ignore[index]
    assert {500, 503} <= set(seen)
    with requests.Session() as session:
        session.trust_env = False
        statuses = {session.get(f"{running.salesforce_url}/services/data/v59.0/limits",
                                headers=SF_AUTH, verify=running.ca_bundle_path).status_code
                    for _ in range(20)}
    assert statuses == {500, 503}  # Salesforce never answers 429


def test_given_latency_when_called_then_every_call_is_slower(sim: Simulator, running):
    sim.configure_faults(latency_ms=80)
    started = time.monotonic()
    hubspot_statuses(running, 3)
    assert time.monotonic() - started >= 0.24


def test_given_a_timeout_fault_when_the_client_gives_up_then_the_write_still_lands(
        sim: Simulator, running):
    sim.configure_faults(timeout_rate=1.0, timeout_sleep_s=0.6)
    # Unowned records, so only the stalled writes can give them an owner (the first seeded
    # company is already owned by 104, which once let this pass with no write landing).
    single, batched = [i for i in sim.ids("hubspot", "companies")
                       if sim.owner_of("hubspot", "companies", i) is None][:2]
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.patch(f"{running.hubspot_url}/crm/v3/objects/companies/{single}",
                       headers=HS_AUTH, json={"properties": {"hubspot_owner_id": "104"}},
                       timeout=0.2)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(f"{running.hubspot_url}/crm/v3/objects/companies/batch/update",
                      headers=HS_AUTH, timeout=0.2, json={
                          "inputs": [{"id": batched, "properties": {"hubspot_owner_id": "105"}}]})
    deadline = time.monotonic() + 3
    while (sim.owner_of("hubspot", "companies", single),
           sim.owner_of("hubspot", "companies", batched)) != ("104", "105"):
        assert time.monotonic() < deadline, "a stalled write never applied"
        time.sleep(0.05)


def test_given_faults_everywhere_when_using_control_endpoints_then_they_are_exempt(
        sim: Simulator, running):
    sim.configure_faults(error_rate=1.0, latency_ms=0)
    for base in (running.hubspot_url, running.salesforce_url):
        response = requests.get(f"{base}/__simulator__/stats", verify=running.ca_bundle_path)
        assert response.status_code == 200


def test_given_the_faults_endpoint_when_posted_then_settings_change_and_bad_ones_are_400(
        sim: Simulator, running):
    url = f"{running.hubspot_url}/__simulator__/faults"
    answer = requests.post(url, json={"error_rate": 0.2, "latency_ms": 50,
                                      "lock_error_rate": 0.05, "timeout_rate": 0.01})
    assert answer.status_code == 200
    assert answer.json() == {"error_rate": 0.2, "latency_ms": 50, "lock_error_rate": 0.05,
                             "timeout_rate": 0.01, "timeout_sleep_s": 5.0}
    assert sim.faults.lock_error_rate == 0.05
    assert requests.post(url, json={"error_rate": 2}).status_code == 400
    assert requests.post(url, json={"typo_rate": 0.1}).status_code == 400
    assert requests.post(url, data="nope").status_code == 400
    sim.clear_faults()
    assert requests.get(url).json()["error_rate"] == 0.0


def test_given_calls_when_stats_are_read_then_counted_by_endpoint_and_status(
        sim: Simulator, running):
    hubspot_statuses(running, 3)
    requests.get(f"{running.hubspot_url}/crm/v3/objects/companies/1001", headers=HS_AUTH)
    requests.get(f"{running.hubspot_url}/crm/v3/objects/companies/1", headers=HS_AUTH)
    requests.get(f"{running.hubspot_url}/crm/v3/owners")
    stats = requests.get(f"{running.hubspot_url}/__simulator__/stats").json()
    assert stats["calls"] == {"GET /crm/v3/objects/companies": {"200": 3},
                              "GET /crm/v3/objects/companies/{id}": {"200": 1, "404": 1},
                              "GET /crm/v3/owners": {"401": 1}}
    assert stats["total"] == 6 and stats == sim.stats("hubspot") == sim.stats()["hubspot"]
    sf_stats = requests.get(f"{running.salesforce_url}/__simulator__/stats",
                            verify=running.ca_bundle_path).json()
    assert sf_stats["total"] == 0 and sf_stats["writes"]["total"] == 0
    requests.post(f"{running.hubspot_url}/__simulator__/reset_stats")
    assert sim.stats("hubspot")["total"] == 0


def test_given_the_limits_endpoint_when_posted_then_limits_change(sim: Simulator, running):
    answer = requests.post(f"{running.hubspot_url}/__simulator__/limits",
                           json={"hubspot_burst": 2, "salesforce_daily": 10})
    assert answer.status_code == 200 and answer.json()["hubspot_burst"] == 2
    assert hubspot_statuses(running, 3) == [200, 200, 429]
    assert requests.post(f"{running.hubspot_url}/__simulator__/limits",
                         json={"hubspot_burst": 0}).status_code == 400


def test_given_the_command_line_when_run_then_it_serves_prints_urls_and_stops_on_ctrl_c():
    hs_port, sf_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "connectors.simulator", "--seed", "42", "--hubspot-port",
         str(hs_port), "--salesforce-port", str(sf_port), "--companies", "20", "--accounts",
         "20", "--leads", "5"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 15
        while not lines or "Ctrl-C" not in lines[-1]:
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stdout.readline())
        text = "".join(lines)
        assert f"http://127.0.0.1:{hs_port}" in text and f"https://127.0.0.1:{sf_port}" in text
        assert HUBSPOT_TOKEN in text and SALESFORCE_SESSION in text and "ca.pem" in text
        response = requests.get(f"http://127.0.0.1:{hs_port}/crm/v3/objects/companies",
                                headers=HS_AUTH)
        assert len(response.json()["results"]) == 10
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
