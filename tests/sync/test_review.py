"""Review before writing: a held decision takes its turn, no write; approve, reassign, expire."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from sync.compiler import CompiledRouting
from sync.history import History
from sync.models import HistoryEvent, Outcome, ReviewItem
from sync.pipeline import Pipeline
from sync.ports import Written
from sync.review import ReviewError, approve, expire, reassign
from sync.state import StateStore, open_store
from sync.state.redis import RedisStateStore
from sync.state.sqlite import SqliteStateStore
from tasks.metrics import LocalMetrics
from tests.builders import routing
from tests.fakes import FakeCrm, hubspot_owners
from tests.sync.state.test_contract import audited

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
DAY = "day:2026-11-25"

ROUTING = """
version: 1
reps:
  - {id: ava, crm_ids: {hubspot: "101"}}
  - {id: cara, crm_ids: {hubspot: "106"}, manager: maya}
  - {id: dev, crm_ids: {hubspot: "107"}}
  - {id: eli, crm_ids: {hubspot: "108"}}
  - {id: maya, crm_ids: {hubspot: "102"}}
  - {id: gone, active: false, crm_ids: {hubspot: "103"}}
  - {id: nocrm}
pools:
  smb: {members: [cara, dev, eli]}
rules:
  - {name: named, when: {domain: {eq: acme.com}}, assign: {rep: ava}}
  - {name: rest, assign: {pool: smb}, review: true}
"""


def reviewed(text: str = ROUTING) -> CompiledRouting:
    return routing(text)


@pytest.fixture
def crm() -> FakeCrm:
    fake = FakeCrm(owners=hubspot_owners())
    fake.add("companies", "c1", name="Co 1", domain="co1.com")
    fake.add("companies", "c2", name="Acme", domain="acme.com")
    return fake


def make(crm: FakeCrm, store: StateStore, compiled: CompiledRouting | None = None) -> Pipeline:
    return Pipeline(crm, compiled or reviewed(), store, clock=lambda: NOW)


def events_of(store: StateStore, kind: str | None = None) -> list[HistoryEvent]:
    if isinstance(store, RedisStateStore):
        found = [e for _, e in store.event_outbox(store.event_outbox_size())]
    else:
        assert isinstance(store, SqliteStateStore)
        with History(f"sqlite:///{store.path}") as history:
            found = sorted(history.events(), key=lambda e: e.at)
    return [e for e in found if kind is None or e.kind == kind]


def counts(store: StateStore) -> dict[str, int]:
    return store.load_pools({"smb": {m: DAY for m in ("cara", "dev", "eli")}})["smb"].counts


def held(crm: FakeCrm, store: StateStore, compiled: CompiledRouting | None = None
         ) -> ReviewItem:
    """Route c1 through the review rule: its one item."""
    make(crm, store, compiled).route_ids("companies", ["c1"], trigger="webhook", now=NOW)
    [item] = store.reviews()
    return item


def test_given_a_review_rule_when_routed_then_pending_review_takes_the_turn_and_writes_nothing(
        crm, store):
    report = make(crm, store).route_ids("companies", ["c1", "c2"], now=NOW)

    assert report.outcomes == {"pending_review": 1, "assigned": 1}
    assert crm.writes == [("c2", "101")]  # the named rule has no review
    assert counts(store) == {"cara": 1, "dev": 0, "eli": 0}  # the turn is taken
    [item] = store.reviews()
    assert (item.record_id, item.crm, item.object, item.proposed_owner, item.proposed_crm_id,
            item.rule, item.pool, item.window) == (
        "c1", "hubspot", "companies", "cara", "106", "rest", "smb", DAY)
    assert item.created_at == NOW and item.deadline == NOW + timedelta(hours=4)
    assert "held for review (rule rest has review: true)" in item.reason
    [decision] = audited(store, "c1")
    assert decision.outcome == Outcome.PENDING_REVIEW and decision.owner == "cara"
    assert decision.written_at is None


def test_given_a_record_under_review_when_routed_again_then_it_is_left_alone(crm, store):
    item = held(crm, store)

    report = make(crm, store).route_ids("companies", ["c1"], now=NOW + timedelta(minutes=1))
    make(crm, store).sweep("companies", now=NOW + timedelta(minutes=2))

    assert sum(report.outcomes.values()) == 0
    assert store.reviews() == [item]  # no second item
    assert counts(store) == {"cara": 1, "dev": 0, "eli": 0}  # and no second turn
    assert crm.writes == [("c2", "101")]  # the sweep wrote acme, never c1


def test_given_review_when_then_any_decision_it_matches_is_held(crm, store):
    compiled = routing(ROUTING.replace("review: true", "review: false")
                       + "review_when: {any: [{domain: {eq: acme.com}}, "
                         "{employees: {gt: 5000}}]}\n")

    report = make(crm, store, compiled).route_ids("companies", ["c1", "c2"], now=NOW)

    assert report.outcomes == {"pending_review": 1, "assigned": 1}
    [item] = store.reviews()
    assert (item.record_id, item.proposed_owner, item.pool) == ("c2", "ava", None)
    assert "review_when matched" in item.reason
    assert crm.writes == [("c1", "106")]


def test_given_an_open_item_when_approved_then_the_proposal_is_written_once(crm, store):
    item = held(crm, store)
    later = NOW + timedelta(minutes=5)

    done = approve(make(crm, store), item.id, by="maya", now=later)

    assert crm.writes == [("c1", "106")]
    assert done.item.status == "approved" and done.item.by == "maya"
    assert done.decision is not None and done.decision.trigger == "review"
    assert done.decision.written_at is not None
    assert store.reviews() == [] and store.review(item.id) == done.item
    [event] = events_of(store, "review")
    assert event.data["action"] == "approved" and event.data["by"] == "maya"
    assert audited(store, "c1")[0].trigger == "review"
    assert counts(store) == {"cara": 1, "dev": 0, "eli": 0}  # the turn stays where it was
    with pytest.raises(ReviewError) as again:
        approve(make(crm, store), item.id, by="maya", now=later)
    assert again.value.status == "decided"
    with pytest.raises(ReviewError) as unknown:
        approve(make(crm, store), "nosuchitem", by="maya", now=later)
    assert unknown.value.status == "unknown"
    assert crm.writes == [("c1", "106")]


def test_given_two_concurrent_approvals_then_exactly_one_writes(crm, store_url):
    first = open_store(store_url)
    second = open_store(store_url)
    try:
        item = held(crm, first)
        outcomes: list[str] = []
        start = threading.Barrier(2)

        def run(store: StateStore) -> None:
            start.wait()
            try:
                approve(make(crm, store), item.id, by="maya", now=NOW)
                outcomes.append("written")
            except ReviewError as exc:
                outcomes.append(exc.status)

        threads = [threading.Thread(target=run, args=(s,)) for s in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert sorted(outcomes) == ["decided", "written"]
        assert crm.writes == [("c1", "106")]
    finally:
        first.close()
        second.close()


def test_given_an_open_item_when_reassigned_then_the_other_rep_is_written_and_counted(
        crm, store):
    item = held(crm, store)
    at = NOW + timedelta(minutes=30)
    metrics = LocalMetrics()
    pipeline = Pipeline(crm, reviewed(), store, clock=lambda: NOW, metrics=metrics)

    done = reassign(pipeline, item.id, "eli", by="maya", now=at)

    assert crm.writes == [("c1", "108")]
    assert done.item.status == "reassigned" and done.item.final_owner == "eli"
    assert counts(store) == {"cara": 0, "dev": 0, "eli": 1}  # the count moved to eli
    [override] = events_of(store, "override")
    assert override.data["from"] == "cara" and override.data["to"] == "eli"
    assert override.data["by"] == "maya" and override.data["after_seconds"] == 1800
    assert override.data["rule"] == "rest"
    assert [e.data["action"] for e in events_of(store, "review")] == ["reassigned"]
    assert metrics.snapshot().overrides == {"rest": 1}  # account_router_overrides_total


@pytest.mark.parametrize(("rep", "why"), [
    ("nobody", "unknown rep"), ("gone", "inactive"), ("nocrm", "no hubspot id")])
def test_given_an_unknown_or_ineligible_rep_when_reassigning_then_refused_and_still_open(
        crm, store, rep, why):
    item = held(crm, store)

    with pytest.raises(ReviewError) as refused:
        reassign(make(crm, store), item.id, rep, by="maya", now=NOW)

    assert refused.value.status == "ineligible" and why in str(refused.value)
    assert store.reviews() == [item] and crm.writes == []


def test_given_an_owner_set_meanwhile_when_approved_then_it_is_not_overwritten(crm, store):
    item = held(crm, store)
    crm.set_owner("companies", "c1", "107")  # dev took it in the CRM

    done = approve(make(crm, store), item.id, by="maya", now=NOW + timedelta(minutes=5))

    assert crm.writes == []
    assert done.item.status == "superseded" and done.item.final_owner == "dev"
    assert done.decision is not None and done.decision.outcome == Outcome.KEPT_EXISTING
    assert counts(store) == {"cara": 0, "dev": 1, "eli": 0}  # counts follow the real owner
    [event] = events_of(store, "review")
    assert event.data["action"] == "superseded" and event.data["owner"] == "dev"


def test_given_the_timeout_is_approve_when_the_deadline_passes_then_the_proposal_is_written(
        crm, store):
    item = held(crm, store)
    pipeline = make(crm, store)

    early = expire(lambda crm_name: pipeline, store, now=NOW + timedelta(hours=3),
                   action="approve")
    late = expire(lambda crm_name: pipeline, store, now=NOW + timedelta(hours=4),
                  action="approve")

    assert early.approved == [] and late.approved == [item.id]
    assert crm.writes == [("c1", "106")]
    assert store.review(item.id).by == "review_timeout"  # type: ignore[union-attr]
    assert [e.data["action"] for e in events_of(store, "review")] == ["expired", "approved"]


def test_given_the_timeout_is_escalate_when_the_deadline_passes_then_escalated_once(
        crm, store):
    item = held(crm, store)
    pipeline = make(crm, store)
    told: list[tuple[str, str | None]] = []

    def escalate(it: ReviewItem, manager: str | None) -> None:
        told.append((it.id, manager))

    for minutes in (240, 241, 300):
        expire(lambda crm_name: pipeline, store, now=NOW + timedelta(minutes=minutes),
               action="escalate", escalate=escalate,
               managers=lambda rep: pipeline.routing.reps[rep].manager)

    assert told == [(item.id, "maya")]
    assert crm.writes == []
    [still] = store.reviews()
    assert still.id == item.id and still.escalated
    [event] = events_of(store, "review")
    assert event.data["action"] == "escalated" and event.data["manager"] == "maya"


def test_given_a_bad_review_when_then_the_error_names_its_path():
    from config.routing import ConfigError

    with pytest.raises(ConfigError) as bad:
        routing(ROUTING + "review_when: {employees: {gt: many}}\n")

    assert "review_when.employees.gt" in str(bad.value)


def test_given_no_review_keys_then_decisions_are_never_held(crm, store):
    compiled = routing(ROUTING.replace("review: true", "review: false"))

    report = make(crm, store, compiled).route_ids("companies", ["c1", "c2"], now=NOW)

    assert report.outcomes == {"assigned": 2} and store.reviews() == []
    assert compiled.review_timeout == timedelta(hours=4)
    assert compiled.on_review_timeout == "escalate"


def test_given_an_approval_killed_after_its_write_when_approved_again_then_no_second_write(
        crm, store):
    item = held(crm, store)
    # The first attempt claimed the item and wrote the owner, then died before closing it.
    assert store.claim_review(item.id, 0.05) is not None
    crm.set_owner("companies", "c1", "106")
    time.sleep(0.1)  # its lease lapses

    done = approve(make(crm, store), item.id, by="maya", now=NOW + timedelta(minutes=5))

    assert crm.writes == []  # set_owner above stood for the dead attempt's write
    assert done.item.status == "approved" and done.item.final_owner == "cara"
    assert counts(store) == {"cara": 1, "dev": 0, "eli": 0}
    assert store.reviews() == []


def test_given_an_approval_then_the_pipelines_followers_see_the_write(crm, store):
    item = held(crm, store)
    seen: list[tuple[str, str, str, str | None]] = []

    class Follower:
        def written(self, crm_name: str, obj: str, items: Sequence[Written]) -> None:
            seen.extend((crm_name, obj, w.decision.trigger, w.record.owner) for w in items)

    pipeline = Pipeline(crm, reviewed(), store, clock=lambda: NOW, followers=[Follower()])
    approve(pipeline, item.id, by="maya", now=NOW)

    # The record as read just before the write (no owner yet), the decision as written.
    assert seen == [("hubspot", "companies", "review", None)]


def test_given_the_proposed_rep_marked_inactive_since_when_approving_then_refused(crm, store):
    item = held(crm, store)
    now_gone = routing(ROUTING.replace('{id: cara, crm_ids: {hubspot: "106"}, manager: maya}',
                                       '{id: cara, crm_ids: {hubspot: "106"}, active: false}'))

    with pytest.raises(ReviewError) as refused:
        approve(make(crm, store, now_gone), item.id, by="maya", now=NOW)

    assert refused.value.status == "ineligible" and "inactive" in str(refused.value)
    assert crm.writes == [] and store.reviews() == [item]


def test_given_timeout_approve_and_a_proposal_that_cannot_be_written_then_escalated_once(
        crm, store):
    item = held(crm, store)
    now_gone = routing(ROUTING.replace('{id: cara, crm_ids: {hubspot: "106"}, manager: maya}',
                                       '{id: cara, crm_ids: {hubspot: "106"}, active: false, '
                                       'manager: maya}'))
    pipeline = make(crm, store, now_gone)

    reports = [expire(lambda crm_name: pipeline, store, now=NOW + timedelta(hours=h),
                      action="approve", managers=lambda rep: "maya") for h in (5, 6)]

    assert [r.escalated for r in reports] == [[item.id], []]
    assert [r.approved for r in reports] == [[], []] and crm.writes == []
    assert store.reviews()[0].escalated
