"""Metrics: the pipeline feeds the port; Local and Redis implementations render Prometheus text."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.transport import Failure, Transport, Unlimited, Verdict
from sync.pipeline import Pipeline
from sync.state import open_store
from tasks.metrics import BUCKETS, LocalMetrics, RedisMetrics
from tests.builders import routing
from tests.fakes import FakeCrm, hubspot_owners

NOW = datetime(2026, 11, 25, 9, 0, 30, tzinfo=UTC)  # 30 s after FakeCrm's records were created

ROUTING = """
version: 1
reps:
  - {id: ava, crm_ids: {hubspot: "101"}}
  - {id: cara, crm_ids: {hubspot: "106"}}
pools:
  smb: {members: [ava, cara]}
rules:
  - {name: named, when: {domain: {eq: acme.com}}, assign: {rep: ava}}
  - {name: rest, assign: {pool: smb}}
"""

SERIES = {
    "account_router_decisions_total": ("outcome", "rule"),
    "account_router_crm_calls_total": ("crm", "endpoint", "status"),
    "account_router_retries_total": ("crm",),
    "account_router_quota_stops_total": ("crm",),
}


class Recording:
    """A fake `Metrics`: remembers every call."""

    def __init__(self) -> None:
        self.decisions: list[tuple[str, str | None]] = []
        self.calls: list[tuple[str, str, str]] = []
        self.retries: list[str] = []
        self.quota_stops: list[str] = []
        self.speeds: list[tuple[str, float]] = []

    def decision(self, outcome: str, rule: str | None) -> None:
        self.decisions.append((outcome, rule))

    def crm_call(self, crm: str, endpoint: str, status: str) -> None:
        self.calls.append((crm, endpoint, status))

    def retry(self, crm: str) -> None:
        self.retries.append(crm)

    def quota_stop(self, crm: str) -> None:
        self.quota_stops.append(crm)

    def speed(self, stage: str, seconds: float) -> None:
        self.speeds.append((stage, seconds))


@pytest.fixture
def store(tmp_path):
    opened = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    yield opened
    opened.close()


@pytest.fixture
def crm() -> FakeCrm:
    fake = FakeCrm(owners=hubspot_owners())
    fake.add("companies", "c1", name="Acme", domain="acme.com")
    fake.add("companies", "c2", name="Other", domain="other.com")
    fake.add("companies", "c3", name="Kept", domain="kept.com", hubspot_owner_id="106")
    return fake


def make(crm: FakeCrm, store, metrics: Recording, **kw) -> Pipeline:
    return Pipeline(crm, routing(ROUTING), store, clock=lambda: NOW, metrics=metrics, **kw)


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


# -- the pipeline feeds the port ---------------------------------------------------------------

def test_given_a_reprocess_when_routed_then_one_decision_each_and_speeds_are_recorded(
        crm, store):
    metrics = Recording()

    make(crm, store, metrics).route_ids("companies", ["c1", "c2", "c3", "gone"], now=NOW)

    assert sorted(metrics.decisions, key=str) == sorted(
        [("assigned", "named"), ("assigned", "rest"), ("kept_existing", None),
         ("skipped", None)], key=str)
    # Created 09:00:0x, decided and written at 09:00:30: only the two new owners are timed.
    decided = [s for stage, s in metrics.speeds if stage == "decided"]
    written = [s for stage, s in metrics.speeds if stage == "written"]
    assert len(decided) == 2 and len(written) == 2
    assert all(0 < s <= 30 for s in decided + written)


def test_given_a_sweep_when_routed_then_crm_calls_are_fed_as_deltas_once(crm, store):
    metrics = Recording()
    pipeline = make(crm, store, metrics)

    pipeline.sweep("companies", now=NOW)
    first = list(metrics.calls)
    pipeline.sweep("companies", now=NOW)

    assert first.count(("hubspot", "list", "200")) == 1
    assert ("hubspot", "write", "200") in first and ("hubspot", "users", "200") in first
    assert len(metrics.calls) == crm.calls.total()  # every call counted exactly once


def test_given_the_quota_runs_out_when_sweeping_then_one_quota_stop_is_recorded(crm, store):
    metrics = Recording()
    crm.quota_after = 1  # users; the list call is refused

    report = make(crm, store, metrics).sweep("companies", now=NOW)

    assert report.stopped and metrics.quota_stops == ["hubspot"]


def test_given_a_dry_run_when_routed_then_nothing_is_recorded_as_decided(crm, store):
    metrics = Recording()

    make(crm, store, metrics, dry_run=True).route_ids("companies", ["c1", "c2"], now=NOW)

    assert metrics.decisions == [] and metrics.speeds == []


# -- the transport's optional observers ---------------------------------------------------------

def test_given_transport_hooks_when_a_call_is_retried_then_each_call_and_retry_is_observed():
    seen: list[tuple[str, str]] = []
    retries: list[int] = []
    attempts = iter([TimeoutError(), None])

    def fn() -> str:
        exc = next(attempts)
        if exc is not None:
            raise exc
        return "ok"

    transport = Transport(
        crm="hubspot", limiter=Unlimited(), credentials_setting="X", sleep=lambda _: None,
        classify=lambda exc: Failure(Verdict.RETRY, "timeout", "slow"),
        rng=random.Random(1), on_call=lambda e, s: seen.append((e, s)),
        on_retry=lambda: retries.append(1))

    assert transport.call("companies.read", fn) == "ok"
    assert seen == [("companies.read", "timeout"), ("companies.read", "200")]
    assert retries == [1] and transport.stats().retries == 1


def test_given_a_failing_hook_when_calling_then_the_call_still_succeeds():
    def broken(endpoint: str, status: str) -> None:
        raise RuntimeError("metrics down")

    transport = Transport(crm="hubspot", limiter=Unlimited(), credentials_setting="X",
                          classify=lambda exc: None, on_call=broken)

    assert transport.call("users", lambda: 7) == 7
    assert transport.stats().calls == {("users", "200"): 1}


# -- rendering -----------------------------------------------------------------------------------

def record_everything(metrics: LocalMetrics | RedisMetrics) -> None:
    metrics.decision("assigned", "named")
    metrics.decision("skipped", None)
    metrics.crm_call("hubspot", "companies.read", "200")
    metrics.crm_call("hubspot", "companies.read", "429")
    metrics.retry("hubspot")
    metrics.quota_stop("salesforce")
    metrics.speed("decided", 0.3)
    metrics.speed("written", 4000.0)
    metrics.speed("written", 2.0)


def assert_renders_the_contract(text: str) -> None:
    found = samples(text)
    for name, labels in SERIES.items():
        assert found[name], name
        assert all(tuple(sorted(s)) == tuple(sorted(labels)) for s, _ in found[name]), name
    assert ({"outcome": "assigned", "rule": "named"}, 1.0) in found[
        "account_router_decisions_total"]
    assert ({"outcome": "skipped", "rule": ""}, 1.0) in found["account_router_decisions_total"]
    assert ({"crm": "hubspot", "endpoint": "companies.read", "status": "429"}, 1.0) in found[
        "account_router_crm_calls_total"]
    assert found["account_router_retries_total"] == [({"crm": "hubspot"}, 1.0)]
    assert found["account_router_quota_stops_total"] == [({"crm": "salesforce"}, 1.0)]

    buckets = found["account_router_speed_to_lead_seconds_bucket"]
    written = {s["le"]: v for s, v in buckets if s["stage"] == "written"}
    assert len(written) == len(BUCKETS)
    assert written["1.0"] == 0 and written["2.5"] == 1 and written["3600.0"] == 1
    assert written["+Inf"] == 2
    assert ({"stage": "written"}, 2.0) in found["account_router_speed_to_lead_seconds_count"]
    assert ({"stage": "written"}, 4002.0) in found["account_router_speed_to_lead_seconds_sum"]
    assert ({"stage": "decided"}, 1.0) in found["account_router_speed_to_lead_seconds_count"]


def test_given_local_metrics_when_recorded_then_the_exact_series_render():
    metrics = LocalMetrics()

    record_everything(metrics)

    assert_renders_the_contract(metrics.collect())


def test_given_redis_metrics_when_recorded_then_the_exact_series_render(redis_url):
    metrics = RedisMetrics(redis_url)
    try:
        record_everything(metrics)

        assert_renders_the_contract(metrics.collect())
    finally:
        metrics.close()


def test_given_two_processes_when_both_count_then_either_renders_the_sum(redis_url):
    # Two instances, as two worker processes (or a worker and the web app) would hold.
    first, second = RedisMetrics(redis_url), RedisMetrics(redis_url)
    try:
        first.decision("assigned", "named")
        second.decision("assigned", "named")
        second.speed("written", 1.0)
        first.speed("written", 1.0)

        for view in (first, second):
            found = samples(view.collect())
            assert found["account_router_decisions_total"] == [
                ({"outcome": "assigned", "rule": "named"}, 2.0)]
            assert found["account_router_speed_to_lead_seconds_count"] == [
                ({"stage": "written"}, 2.0)]
    finally:
        first.close()
        second.close()


def test_given_redis_is_down_when_recording_then_nothing_raises():
    metrics = RedisMetrics("redis://127.0.0.1:1/0")  # nothing listens on port 1

    metrics.decision("assigned", "named")
    metrics.speed("written", 1.0)
    metrics.close()
