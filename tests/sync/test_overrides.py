"""Overrides: own-write marks, a person's change recorded once, and never routed back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sync.models import HistoryEvent
from sync.overrides import OVERRIDE, OwnerChange, Verdict, judge
from sync.pipeline import Pipeline
from sync.state.base import OwnerMark
from tests.builders import routing
from tests.fakes import FakeCrm, hubspot_owners
from tests.sync.state.test_contract import _events_of, audited
from tests.sync.test_pipeline import ROUTING, Clock

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
NEVER = ROUTING.replace("ignore_owners:", "respect_existing_owner: never\nignore_owners:")


class Counted:
    """Metrics that keep only the override counter (the rest of the port is ignored)."""

    def __init__(self) -> None:
        self.overrides: list[str | None] = []

    def override(self, rule: str | None) -> None:
        self.overrides.append(rule)

    def __getattr__(self, name: str):  # decision, crm_call, retry, speed...
        return lambda *a, **k: None


@pytest.fixture
def crm() -> FakeCrm:
    # The CRM's clock a minute before the router's: our writes land after NOW on its clock.
    fake = FakeCrm(owners=hubspot_owners(), clock=NOW - timedelta(minutes=1))
    for n in range(5):
        fake.add("companies", f"c{n}", name=f"Co {n}", domain=f"co{n}.com")
    return fake


def make(crm: FakeCrm, store, text: str = ROUTING, clock: Clock | None = None,
         metrics: Counted | None = None) -> Pipeline:
    return Pipeline(crm, routing(text), store, clock=clock or Clock(), metrics=metrics)


def overrides_in(store) -> list[HistoryEvent]:
    return [e for e in _events_of(store) if e.kind == OVERRIDE]


def mark(owner: str = "106", *, at: datetime = NOW, overridden: bool = False) -> OwnerMark:
    return OwnerMark(crm="hubspot", object="companies", record_id="c0", owner=owner,
                     written_at=at, decision="hubspot:account:c0:1", rep="cara",
                     rule="rest", pool="smb",
                     overridden_at=at + timedelta(minutes=1) if overridden else None)


# --- judge (pure) --------------------------------------------------------------------------


@pytest.mark.parametrize(("the_mark", "change", "verdict"), [
    (None, OwnerChange("c0", "101"), Verdict.UNMARKED),
    (mark(), OwnerChange("c0", "106", at=NOW + timedelta(seconds=1)), Verdict.ECHO),
    (mark(), OwnerChange("c0", " 106 ", at=NOW - timedelta(seconds=1)), Verdict.ECHO),
    (mark(), OwnerChange("c0", None, at=NOW + timedelta(seconds=1)), Verdict.CLEARED),
    (mark(), OwnerChange("c0", "101", at=NOW - timedelta(seconds=1)), Verdict.STALE),
    (mark(), OwnerChange("c0", "101", at=NOW + timedelta(seconds=1)), Verdict.OVERRIDE),
    (mark(), OwnerChange("c0", "101"), Verdict.OVERRIDE),  # undated: judged by value
    (mark(overridden=True), OwnerChange("c0", "107"), Verdict.ALREADY),
])
def test_given_a_mark_and_an_owner_change_when_judged_then_the_verdict_follows(
        the_mark, change, verdict):
    assert judge(the_mark, change) is verdict


# --- the pipeline --------------------------------------------------------------------------


def test_given_a_sweep_when_writes_land_then_each_record_carries_its_own_write_mark(crm, store):
    make(crm, store).sweep("companies", now=NOW)

    marks = store.owner_marks("hubspot", "companies", [f"c{n}" for n in range(5)])

    assert set(marks) == {f"c{n}" for n in range(5)}
    for record_id, m in marks.items():
        assert m.owner == crm.records["companies"][record_id]["hubspot_owner_id"]
        assert (m.rule, m.pool, m.kind, m.written_at) == ("rest", "smb", "account", NOW)
        assert m.rep in ("cara", "dev", "eli") and not m.overridden


def test_given_a_persons_reassignment_when_swept_then_one_override_with_from_to_and_delay(
        crm, store):
    clock, counted = Clock(), Counted()
    pipeline = make(crm, store, clock=clock, metrics=counted)
    pipeline.sweep("companies", now=NOW)
    ours = crm.records["companies"]["c0"]["hubspot_owner_id"]
    crm.clock = NOW + timedelta(minutes=10)
    crm.set_owner("companies", "c0", "101")  # ava, by hand, 10 min 1 s after our write
    writes = len(crm.writes)

    clock.now = NOW + timedelta(minutes=20)
    pipeline.sweep("companies", now=clock.now)
    pipeline.sweep("companies", now=clock.now)  # seen again: still one
    pipeline.route_ids("companies", ["c0"], trigger="webhook", now=clock.now)

    [event] = overrides_in(store)
    assert event.record_id == "c0" and event.crm == "hubspot" and event.object == "account"
    assert event.data["from_crm_id"] == ours and event.data["to"] == "ava"
    assert event.data["to_crm_id"] == "101" and event.data["rule"] == "rest"
    assert event.data["after_seconds"] == 601.0 and event.data["source"] == "sweep"
    assert event.at == NOW + timedelta(minutes=10, seconds=1)
    assert counted.overrides == ["rest"]
    assert len(crm.writes) == writes  # never routed back
    assert crm.records["companies"]["c0"]["hubspot_owner_id"] == "101"
    kept = audited(store, record_id="c0")[0]
    assert kept.outcome == "kept_existing" and "a person chose it" in kept.reason


def test_given_our_own_writes_when_their_echo_is_routed_then_nothing_is_counted(crm, store):
    counted = Counted()
    pipeline = make(crm, store, metrics=counted)
    pipeline.sweep("companies", now=NOW)

    pipeline.route_ids("companies", [f"c{n}" for n in range(5)], trigger="webhook", now=NOW)
    pipeline.sweep("companies", now=NOW)

    assert overrides_in(store) == [] and counted.overrides == []


def test_given_a_second_router_write_when_swept_then_it_is_no_override(crm, store):
    counted = Counted()
    make(crm, store, metrics=counted).sweep("companies", now=NOW)
    before = crm.records["companies"]["c0"]["hubspot_owner_id"]

    # The router writes c0 again (an SLA-style re-route: a realignment under `never`).
    later = Clock()
    later.now = NOW + timedelta(minutes=5)
    crm.clock = later.now
    make(crm, store, NEVER, clock=later, metrics=counted).route_ids(
        "companies", ["c0"], trigger="reprocess", now=later.now)
    after = crm.records["companies"]["c0"]["hubspot_owner_id"]
    make(crm, store, clock=later, metrics=counted).sweep("companies", now=later.now)

    assert after != before
    assert store.owner_marks("hubspot", "companies", ["c0"])["c0"].owner == after
    assert overrides_in(store) == [] and counted.overrides == []


def test_given_an_override_under_respect_never_when_routed_again_then_the_persons_owner_stays(
        crm, store):
    clock = Clock()
    make(crm, store, NEVER, clock=clock).sweep("companies", now=NOW)
    crm.clock = NOW + timedelta(minutes=3)
    crm.set_owner("companies", "c1", "108")
    writes = len(crm.writes)

    clock.now = NOW + timedelta(hours=1)
    pipeline = make(crm, store, NEVER, clock=clock)
    pipeline.route_ids("companies", ["c1"], trigger="webhook", now=clock.now)
    pipeline.sweep("companies", full=True, now=clock.now)

    assert crm.records["companies"]["c1"]["hubspot_owner_id"] == "108"
    assert "c1" not in {i for i, _ in crm.writes[writes:]}
    assert len(overrides_in(store)) == 1


def test_given_an_override_when_reprocessed_explicitly_then_it_is_routed_by_the_policy(
        crm, store):
    clock = Clock()
    make(crm, store, NEVER, clock=clock).sweep("companies", now=NOW)
    crm.clock = NOW + timedelta(minutes=3)
    crm.set_owner("companies", "c1", "101")

    clock.now = NOW + timedelta(hours=1)
    crm.clock = clock.now
    make(crm, store, NEVER, clock=clock).route_ids("companies", ["c1"], trigger="reprocess",
                                                    now=clock.now)

    owner = crm.records["companies"]["c1"]["hubspot_owner_id"]
    assert owner in ("106", "107", "108")  # the pool's turn again
    m = store.owner_marks("hubspot", "companies", ["c1"])["c1"]
    assert m.owner == owner and not m.overridden  # our write again: a fresh mark
    assert len(overrides_in(store)) == 1  # the override before the reprocess stays recorded


def test_given_an_overridden_record_whose_owner_is_cleared_then_it_is_routed_again(
        crm, store):
    clock = Clock()
    pipeline = make(crm, store, clock=clock)
    pipeline.sweep("companies", now=NOW)
    crm.clock = NOW + timedelta(minutes=3)
    crm.set_owner("companies", "c2", "101")
    pipeline.route_ids("companies", ["c2"], trigger="webhook", now=NOW)
    crm.set_owner("companies", "c2", None)

    clock.now = NOW + timedelta(hours=1)
    crm.clock = clock.now
    pipeline.route_ids("companies", ["c2"], trigger="webhook", now=clock.now)

    assert crm.records["companies"]["c2"]["hubspot_owner_id"] in ("106", "107", "108")
    assert len(overrides_in(store)) == 1


def test_given_a_dry_run_when_an_override_is_seen_then_nothing_is_recorded(crm, store):
    make(crm, store).sweep("companies", now=NOW)
    crm.clock = NOW + timedelta(minutes=3)
    crm.set_owner("companies", "c0", "101")

    report = Pipeline(crm, routing(NEVER), store, clock=Clock(), dry_run=True).route_ids(
        "companies", ["c0"], trigger="webhook", now=NOW)

    assert overrides_in(store) == []
    assert report.changes == []  # under `never` too, the person's owner would be kept
    assert not store.owner_marks("hubspot", "companies", ["c0"])["c0"].overridden


def test_given_a_review_reassigned_when_the_echo_is_swept_then_counted_once_as_the_review(
        store):
    from sync.review import reassign
    from tests.sync import test_review

    crm = FakeCrm(owners=hubspot_owners(), clock=test_review.NOW - timedelta(minutes=1))
    crm.add("companies", "c1", name="Co 1", domain="co1.com")
    item = test_review.held(crm, store)
    counted = Counted()
    later = Clock()
    later.now = test_review.NOW + timedelta(minutes=30)
    pipeline = Pipeline(crm, test_review.reviewed(), store, clock=later, metrics=counted)

    reassign(pipeline, item.id, "eli", by="maya", now=later.now)
    pipeline.route_ids("companies", ["c1"], trigger="webhook", now=later.now)  # the echo

    assert counted.overrides == ["rest"]  # the reviewer's, not the echo of our write
    assert store.owner_marks("hubspot", "companies", ["c1"])["c1"].owner == "108"
    assert [e.data["source"] for e in overrides_in(store)] == ["review"]


SLA_ROUTING = """
version: 1
reps:
  - {id: ava, crm_ids: {hubspot: "101"}}
  - {id: ben, crm_ids: {hubspot: "102"}}
pools:
  smb: {members: [ava, ben]}
sla: {first_touch: 15m, on_breach: reroute, max_reroutes: 1}
rules:
  - {name: everyone, assign: {pool: smb}}
"""


def test_given_an_sla_reroute_when_both_writes_echo_back_then_neither_is_an_override(store):
    from connectors.registry import touch_fields
    from sync.sla_watch import FirstTouchWatch, SlaCheck

    compiled = routing(SLA_ROUTING)
    crm = FakeCrm(owners=hubspot_owners(), clock=NOW - timedelta(minutes=1))
    crm.add("companies", "c0", name="Co 0", domain="co0.com")
    clock, counted = Clock(), Counted()
    pipeline = Pipeline(crm, compiled, store, clock=clock, metrics=counted, followers=[
        FirstTouchWatch(compiled, store, touch_fields("hubspot", compiled))])
    pipeline.route_ids("companies", ["c0"], trigger="webhook", now=NOW)  # ava, untouched
    first_write = crm.modified[("companies", "c0")]

    clock.now = crm.clock = NOW + timedelta(minutes=20)
    report = SlaCheck(compiled, store, lambda _: pipeline).run(clock.now)
    # Both writes' echoes, in any order: the re-route's, and the first one arriving late.
    pipeline.route_ids("companies", ["c0"], trigger="webhook", now=clock.now)
    verdicts = pipeline.overrides.observe("hubspot", "companies", [
        OwnerChange("c0", "101", at=first_write, source="INTEGRATION")])
    pipeline.sweep("companies", now=clock.now)

    assert report.rerouted == 1 and crm.records["companies"]["c0"]["hubspot_owner_id"] == "102"
    assert verdicts == {"c0": Verdict.STALE}
    assert overrides_in(store) == [] and counted.overrides == []
    assert store.owner_marks("hubspot", "companies", ["c0"])["c0"].rep == "ben"


def test_given_an_override_when_explained_then_the_persons_owner_is_kept_and_nothing_recorded(
        crm, store):
    make(crm, store, NEVER).sweep("companies", now=NOW)
    crm.clock = NOW + timedelta(minutes=3)
    crm.set_owner("companies", "c0", "101")

    explained = make(crm, store, NEVER).explain("companies", "c0", now=NOW)

    assert explained.outcome == "kept_existing" and "a person chose it" in explained.reason
    assert overrides_in(store) == []  # explain reads; the next routing run records it


def test_given_an_override_when_simulating_a_realignment_then_the_record_does_not_move(
        crm, store):
    make(crm, store).sweep("companies", now=NOW)
    crm.clock = NOW + timedelta(minutes=3)
    crm.set_owner("companies", "c0", "101")

    moved = {m.record_id for m in make(crm, store, NEVER).simulate("companies", now=NOW).moves}

    assert "c0" not in moved and overrides_in(store) == []
