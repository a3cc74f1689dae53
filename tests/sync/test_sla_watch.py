"""The first-touch SLA watch end to end in one process: the simulator's HubSpot, a real
pipeline and SQLite state; a pass judges due entries, re-routes, counts and records."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors import registry
from connectors.registry import load_routing
from connectors.simulator import RunningSimulator, Simulator, serve
from sync.compiler import CompiledRouting
from sync.decide import RoutingContext
from sync.models import decision_key
from sync.pipeline import Pipeline
from sync.sla_watch import FirstTouchWatch, SlaCheck
from sync.state.sqlite import SqliteStateStore
from tasks.metrics import LocalMetrics
from tests.builders import connector, empty_crm, sla_routing, write_routing

T0 = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
ROUTING = sla_routing("15m", vip_first_touch="1h")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def sim() -> Simulator:
    return empty_crm(3, owners=5)


@pytest.fixture
def sim_tls() -> bool:
    return False  # `running` serves plain HTTP


@pytest.fixture
def routing(tmp_path: Path) -> CompiledRouting:
    return load_routing(write_routing(tmp_path, ROUTING))


@pytest.fixture
def store(sqlite_store: SqliteStateStore) -> SqliteStateStore:
    return sqlite_store  # tests/conftest.py: the embedded store, state.db in tmp_path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pipeline(running, routing, store, clock) -> Iterator[Pipeline]:
    with connector("hubspot", routing) as hubspot:
        yield Pipeline(hubspot, routing, store, clock=clock, followers=[
            FirstTouchWatch(routing, store, registry.touch_fields("hubspot", routing))])


def companies(sim: Simulator, n: int, domain: str = "acme.example") -> list[str]:
    return [sim.hubspot_create("companies", {"name": f"Co {i}", "domain": f"{i}.{domain}"})
            for i in range(n)]


def counts(store: SqliteStateStore, routing: CompiledRouting, at: datetime) -> dict[str, int]:
    return store.load_pools(RoutingContext.pool_windows(routing, at))["smb"].counts


def check(routing, store, pipeline, metrics=None) -> SlaCheck:
    return SlaCheck(routing, store, lambda crm: pipeline if crm == "hubspot" else None,
                    metrics=metrics)


def test_given_an_untouched_record_when_its_sla_runs_out_then_rerouted_never_back_spread_kept(
        sim, routing, store, pipeline, clock):
    ids = companies(sim, 2)
    pipeline.route_ids("companies", ids, now=T0)  # ava, ben
    assert [sim.owner_of("hubspot", "companies", i) for i in ids] == ["100", "101"]
    sim.touch("hubspot", "companies", ids[1], at_ms=int((T0 + timedelta(minutes=5))
                                                        .timestamp() * 1000))
    metrics = LocalMetrics()
    clock.now = T0 + timedelta(minutes=20)

    report = check(routing, store, pipeline, metrics).run(clock.now)

    # ava breached: the next member after the cursor (ben) is cara, never ava again.
    assert report.to_dict() == {"due": 2, "touched": 1, "breaches": {"reroute": 1},
                                "rerouted": 1, "ended": 0, "unread": 0}
    assert sim.owner_of("hubspot", "companies", ids[0]) == "102"
    assert sim.owner_of("hubspot", "companies", ids[1]) == "101"
    loads = counts(store, routing, clock.now)
    assert loads == {"ava": 0, "ben": 1, "cara": 1}
    assert max(loads.values()) - min(loads.values()) <= 1
    [latest, first] = store.history.decisions(record_id=ids[0])
    assert (latest.trigger, latest.owner, latest.previous_owner, latest.rule) == \
        ("sla", "cara", "ava", "everyone")
    assert latest.written_at == clock.now
    kinds = {(e.record_id, e.kind) for e in store.history.events()}
    assert kinds == {(ids[0], "sla_breach"), (ids[0], "rerouted"), (ids[1], "touched")}
    [touched] = store.history.events(kind="touched")
    assert touched.data["seconds"] == 300 and touched.data["rep"] == "ben"
    # Each event names the assignment it is about, so that decision's page lists it.
    assert {e.data["decision"] for e in store.history.events(record_id=ids[0])} == \
        {decision_key(first)}
    text = metrics.collect()
    assert 'account_router_sla_breaches_total{action="reroute"} 1.0' in text
    assert 'account_router_first_touch_seconds_bucket{le="300.0"} 1.0' in text
    # The re-route is watched in its turn, remembering who breached.
    entry = store.watch_entry(f"hubspot:companies:{ids[0]}")
    assert entry is not None and (entry.owner, entry.reroutes, entry.breached) == \
        ("cara", 1, ("ava",))
    assert store.watching() == 1


def test_given_reroutes_used_up_when_the_new_owner_breaches_then_the_manager_is_told_only(
        sim, routing, store, pipeline, clock):
    [record] = companies(sim, 1)
    pipeline.route_ids("companies", [record], now=T0)
    clock.now = T0 + timedelta(minutes=20)
    check(routing, store, pipeline).run(clock.now)
    assert sim.owner_of("hubspot", "companies", record) == "101"  # ava -> ben
    metrics = LocalMetrics()
    clock.now = T0 + timedelta(minutes=40)

    report = check(routing, store, pipeline, metrics).run(clock.now)

    assert report.breaches == {"notify_manager": 1} and report.rerouted == 0
    assert sim.owner_of("hubspot", "companies", record) == "101"
    breaches = store.history.events(kind="sla_breach")
    assert [e.data["action"] for e in breaches] == ["notify_manager", "reroute"]
    assert 'account_router_sla_breaches_total{action="notify_manager"} 1.0' in metrics.collect()
    assert store.watching() == 0


def test_given_a_rep_target_when_breached_then_notify_manager_and_the_rule_sla_applies(
        sim, routing, store, pipeline, clock):
    [vip] = companies(sim, 1, domain="x")
    sim.hubspot_update("companies", vip, {"domain": "vip.example"})
    pipeline.route_ids("companies", [vip], now=T0)
    clock.now = T0 + timedelta(minutes=20)

    # The rule's 1h SLA wins over the file's 15m: nothing due yet.
    assert check(routing, store, pipeline).run(clock.now).due == 0
    report = check(routing, store, pipeline).run(T0 + timedelta(hours=1))

    assert report.breaches == {"notify_manager": 1}
    assert sim.owner_of("hubspot", "companies", vip) == "103"


def test_given_an_owner_a_person_changed_when_checked_then_not_breached_and_the_watch_ends(
        sim, routing, store, pipeline, clock):
    [record] = companies(sim, 1)
    pipeline.route_ids("companies", [record], now=T0)
    sim.set_owner("hubspot", "companies", record, "104")

    report = check(routing, store, pipeline).run(T0 + timedelta(hours=1))

    assert (report.ended, report.breaches) == (1, {})
    assert sim.owner_of("hubspot", "companies", record) == "104"
    assert store.watching() == 0


def test_given_many_due_records_when_checked_then_the_crm_sees_batch_reads_not_one_per_record(
        sim, routing, store, pipeline, clock):
    ids = companies(sim, 30)
    pipeline.route_ids("companies", ids, now=T0)
    for i in ids[::2]:
        sim.touch("hubspot", "companies", i, at_ms=int((T0 + timedelta(minutes=1))
                                                       .timestamp() * 1000))
    sim.reset_stats()
    clock.now = T0 + timedelta(minutes=20)

    report = check(routing, store, pipeline).run(clock.now)

    assert report.touched == 15 and report.breaches == {"reroute": 15}
    calls = sim.stats("hubspot")["calls"]
    assert sum(calls.get("POST /crm/v3/objects/companies/batch/read", {}).values()) == 1
    assert not [e for e in calls if e.startswith("GET /crm/v3/objects/companies/")]
    # Each re-route moved one assignment from its breacher to its new owner: the pool counts
    # are exactly the final owners.
    owners = Counter(routing.rep_for_owner(sim.owner_of("hubspot", "companies", i)) for i in ids)
    assert counts(store, routing, clock.now) == dict(owners)
    assert sum(owners.values()) == 30


def test_given_two_overlapping_passes_then_no_record_is_rerouted_twice(
        sim, routing, store, pipeline, clock):
    ids = companies(sim, 12)
    pipeline.route_ids("companies", ids, now=T0)
    clock.now = T0 + timedelta(minutes=20)
    reports = []

    def one_pass() -> None:
        reports.append(check(routing, store, pipeline).run(clock.now))

    threads = [threading.Thread(target=one_pass) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sum(r.due for r in reports) == 12
    assert sum(r.rerouted for r in reports) == 12
    assert len(store.history.events(kind="rerouted")) == 12
    assert len([d for i in ids for d in store.history.decisions(record_id=i)
                if d.trigger == "sla"]) == 12


def test_given_a_record_another_run_holds_when_rerouting_then_unwritten_and_counts_given_back(
        sim, routing, store, pipeline, clock):
    [record] = companies(sim, 1)
    pipeline.route_ids("companies", [record], now=T0)
    clock.now = T0 + timedelta(minutes=20)
    # A webhook batch is routing the same record right now.
    key = f"hubspot:companies:{record}"
    assert store.lock_records([key], "another-run", 60) == {key}

    report = check(routing, store, pipeline).run(clock.now)

    assert report.breaches == {"reroute": 1} and report.rerouted == 0
    assert sim.owner_of("hubspot", "companies", record) == "100"
    assert counts(store, routing, clock.now) == {"ava": 1, "ben": 0, "cara": 0}
    [latest, _] = store.history.decisions(record_id=record)
    assert latest.trigger == "sla" and latest.written_at is None
    assert latest.write_error == "record locked by another run routing it"
    [breach] = store.history.events(kind="sla_breach")
    assert breach.data["to"] is None
    assert store.history.events(kind="rerouted") == []


@pytest.fixture
def running_tls(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSimulator]:
    """Salesforce is reached over HTTPS only (the simulator's throwaway CA)."""
    with serve(sim) as started:
        for name, value in started.env().items():
            monkeypatch.setenv(name, value)
        yield started


def test_given_salesforce_leads_when_checked_then_status_is_the_touch_and_one_soql_reads_all(
        sim, running_tls, tmp_path, store, clock):
    from connectors.simulator.schema import sf_id

    ids = {rep: sf_id("005", 100 + i) for i, rep in enumerate(("ava", "ben", "cara"))}
    path = tmp_path / "sf.yaml"
    path.write_text(
        "version: 1\nreps:\n"
        + "".join(f"  - {{id: {rep}, crm_ids: {{salesforce: '{crm_id}'}}}}\n"
                  for rep, crm_id in ids.items())
        + "pools: {inbound: {members: [ava, ben, cara]}}\n"
        "sla: {first_touch: 30m, on_breach: reroute}\n"
        "rules: [{name: inbound, assign: {pool: inbound}}]\n")
    routing = load_routing(path)
    leads = [sim.salesforce_create("Lead", {"LastName": f"L{i}", "Company": f"Co {i}",
                                            "Status": "Open - Not Contacted"})
             for i in range(6)]
    with connector("salesforce", routing) as salesforce:
        pipeline = Pipeline(salesforce, routing, store, clock=clock, followers=[
            FirstTouchWatch(routing, store, registry.touch_fields("salesforce", routing))])
        pipeline.route_ids("Lead", leads, now=T0)
        before = {i: sim.owner_of("salesforce", "Lead", i) for i in leads}
        for lead in leads[:3]:
            sim.touch("salesforce", "Lead", lead)  # Status moves to a worked status
        clock.now = T0 + timedelta(minutes=45)
        pipeline.users()  # the owner directory, refreshed now: only the pass's reads follow
        sim.reset_stats()

        report = SlaCheck(routing, store, lambda crm: pipeline).run(clock.now)

    assert report.touched == 3 and report.breaches == {"reroute": 3}
    assert all(sim.owner_of("salesforce", "Lead", i) == before[i] for i in leads[:3])
    assert all(sim.owner_of("salesforce", "Lead", i) != before[i] for i in leads[3:])
    calls = sim.stats("salesforce")["calls"]
    assert sum(calls["GET /services/data/vXX.X/query"].values()) == 1
    assert not [e for e in calls if "/sobjects/Lead/" in e]


def test_given_a_pool_decision_written_without_its_turn_then_the_watch_knows_its_window(
        routing, store):
    # A review's approval writes a decision rebuilt from its item: no PoolTurn on it.
    from sync.models import Decision, Outcome

    watch = FirstTouchWatch(routing, store, {"companies": "hs_last_sales_activity_timestamp"})
    d = Decision(record_id="1", object="account", crm="hubspot", outcome=Outcome.ASSIGNED,
                 owner="ben", owner_crm_id="101", rule="everyone", pool="smb",
                 trigger="review", decided_at=T0, written_at=T0 + timedelta(hours=1))

    entry = watch.entry("hubspot", "companies", "hs_last_sales_activity_timestamp", d, {})

    assert entry is not None and entry.window == "day:2026-12-07"
    assert entry.deadline == T0 + timedelta(hours=1, minutes=15)


def test_given_an_sla_removed_from_the_routing_file_when_due_then_the_watch_ends_unbreached(
        sim, routing, store, pipeline, clock, tmp_path):
    [record] = companies(sim, 1)
    pipeline.route_ids("companies", [record], now=T0)
    path = tmp_path / "no-sla.yaml"
    path.write_text(ROUTING.replace("sla: {first_touch: 15m, on_breach: reroute, "
                                    "max_reroutes: 1}\n", ""))
    without = load_routing(path)
    assert without.sla_for("everyone", "smb") is None

    report = check(without, store, pipeline).run(T0 + timedelta(hours=1))

    assert (report.due, report.ended, report.breaches) == (1, 1, {})
    assert sim.owner_of("hubspot", "companies", record) == "100"
    assert store.watching() == 0 and store.history.events(kind="sla_breach") == []
