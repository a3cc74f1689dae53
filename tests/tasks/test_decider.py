"""The decider thread behind POST /route: requests that queue while a batch commits share the
next commit, each still takes its own turn in order, a store failure is every waiting request's
answer, and an idle thread ends and comes back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from sync.models import Decision
from sync.state import open_store
from sync.state.base import PoolChange, StateStore
from tasks.decider import Decider, Prepared
from tests.builders import rec, routing

NOW = 1_796_600_000.0
ROUTING = routing("""
    version: 1
    reps: [{id: ana}, {id: bo}, {id: cy}]
    pools:
      inbound: {members: [ana, bo, cy], strategy: round_robin}
    rules:
      - name: inbound
        assign: {pool: inbound}
""")


class GatedStore:
    """A real SQLite store whose commits can be held at a gate and are counted (what a slow
    state store looks like to the decider)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.commits: list[int] = []  # the decisions audited by each commit
        self.fail: Exception | None = None

    def commit(self, expected: Mapping[str, int], changes: Sequence[PoolChange],
               decisions: Sequence[Decision]) -> bool:
        self.entered.set()
        self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        self.commits.append(len(decisions))
        return self.store.commit(expected, changes, decisions)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[GatedStore]:
    with open_store(f"sqlite:///{tmp_path / 'state.db'}") as store:
        yield GatedStore(store)


def submit(decider: Decider, key: str) -> Any:
    return decider.submit(rec(id=f"api:{key}"), ROUTING, crm="hubspot", trigger="api")


def test_given_requests_queued_while_a_batch_commits_then_they_share_the_next_commit(
    gated: GatedStore,
) -> None:
    decider = Decider(gated, lambda: NOW)  # type: ignore[arg-type]
    gated.gate.clear()
    first = submit(decider, "0")
    assert gated.entered.wait(5)  # the first batch (one record) is at its commit
    queued = [submit(decider, str(i)) for i in range(1, 8)]
    gated.gate.set()

    owners = [f.result(timeout=10).owner for f in [first, *queued]]

    assert gated.commits == [1, 7]
    # Each record its own turn, in the order the requests came.
    assert owners == ["ana", "bo", "cy", "ana", "bo", "cy", "ana", "bo"]


def test_given_more_queued_than_a_batch_holds_then_batches_are_bounded(
    gated: GatedStore,
) -> None:
    decider = Decider(gated, lambda: NOW, max_batch=3)  # type: ignore[arg-type]
    gated.gate.clear()
    first = submit(decider, "0")
    assert gated.entered.wait(5)
    queued = [submit(decider, str(i)) for i in range(1, 8)]
    gated.gate.set()

    for future in [first, *queued]:
        future.result(timeout=10)

    assert gated.commits == [1, 3, 3, 1]


def test_given_a_store_that_fails_then_every_waiting_request_gets_the_error_and_later_ones_work(
    gated: GatedStore,
) -> None:
    decider = Decider(gated, lambda: NOW)  # type: ignore[arg-type]
    gated.gate.clear()
    gated.fail = ConnectionError("state store down")
    first = submit(decider, "0")
    assert gated.entered.wait(5)
    queued = [submit(decider, str(i)) for i in range(1, 4)]
    gated.gate.set()

    for future in [first, *queued]:
        with pytest.raises(ConnectionError, match="state store down"):
            future.result(timeout=10)
    gated.fail = None
    assert submit(decider, "after").result(timeout=10).owner == "ana"  # nothing was taken


def test_given_an_idle_decider_then_its_thread_ends_and_the_next_request_starts_another(
    gated: GatedStore,
) -> None:
    decider = Decider(gated, lambda: NOW, idle_seconds=0.05)  # type: ignore[arg-type]

    def deciders() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "decider" and t.is_alive())

    before = deciders()
    assert submit(decider, "0").result(timeout=10).owner == "ana"
    deadline = time.monotonic() + 5
    while deciders() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert deciders() == before

    assert submit(decider, "1").result(timeout=10).owner == "bo"


class RecordingTurn:
    """A request's work around its turn (tasks.decider.Turn), recording what ran and on
    which thread."""

    def __init__(self, key: str, answer: object = None, fail: Exception | None = None) -> None:
        self.key, self.answer, self.fail = key, answer, fail
        self.threads: list[str] = []
        self.abandoned = False

    def prepare(self) -> Any:
        self.threads.append(threading.current_thread().name)
        if self.fail is not None:
            raise self.fail
        if self.answer is not None:
            return self.answer
        return Prepared(rec(id=f"api:{self.key}"), ROUTING, "hubspot")

    def settle(self, decision: Decision) -> str:
        self.threads.append(threading.current_thread().name)
        return f"{self.key} -> {decision.owner}"

    def abandon(self) -> None:
        self.abandoned = True


def test_given_turns_queued_while_a_batch_commits_then_prepare_and_settle_run_with_the_batch(
    gated: GatedStore,
) -> None:
    counted: list[list[str | None]] = []
    decider = Decider(gated, lambda: NOW,  # type: ignore[arg-type]
                      count=lambda ds: counted.append([d.owner for d in ds]))
    gated.gate.clear()
    first = submit(decider, "0")
    assert gated.entered.wait(5)
    turns = [RecordingTurn(str(i)) for i in range(1, 4)]
    futures = [decider.submit_turn(t, trigger="api") for t in turns]
    gated.gate.set()

    assert first.result(timeout=10).owner == "ana"
    assert [f.result(timeout=10) for f in futures] == ["1 -> bo", "2 -> cy", "3 -> ana"]
    assert gated.commits == [1, 3]
    assert all(t.threads == ["decider", "decider"] for t in turns)
    assert counted == [["ana"], ["bo", "cy", "ana"]]  # once per committed batch


def test_given_a_turn_answered_without_a_record_or_refused_then_no_turn_is_taken(
    gated: GatedStore,
) -> None:
    decider = Decider(gated, lambda: NOW)  # type: ignore[arg-type]

    replayed = decider.submit_turn(RecordingTurn("0", answer={"owner": None}), trigger="api")
    refused = decider.submit_turn(RecordingTurn("1", fail=ValueError("bad record")),
                                  trigger="api")

    assert replayed.result(timeout=10) == {"owner": None}
    with pytest.raises(ValueError, match="bad record"):
        refused.result(timeout=10)
    assert gated.commits == []
    assert submit(decider, "2").result(timeout=10).owner == "ana"  # no turn was taken


def test_given_a_store_that_fails_then_prepared_turns_are_abandoned(gated: GatedStore) -> None:
    decider = Decider(gated, lambda: NOW)  # type: ignore[arg-type]
    gated.fail = ConnectionError("state store down")
    turn = RecordingTurn("0")

    with pytest.raises(ConnectionError, match="state store down"):
        decider.submit_turn(turn, trigger="api").result(timeout=10)

    assert turn.abandoned


def test_given_account_owners_read_for_a_request_then_its_lead_follows_them_in_the_batch(
    gated: GatedStore,
) -> None:
    # POST /route with company_match hands the owners its CRM read found to the decider.
    follow = routing("""
        version: 1
        reps: [{id: ana, crm_ids: {hubspot: '101'}}, {id: bo}]
        rules:
          - {name: follow-account, when: {object: lead}, assign: {account_owner: true}}
        fallback: {rep: bo}
    """)
    decider = Decider(gated, lambda: NOW)
    gated.gate.clear()  # both requests queue behind the first commit, then share one batch
    blocker = decider.submit(rec(id="api:0"), ROUTING, crm="hubspot", trigger="api")
    assert gated.entered.wait(5)
    with_owner = decider.submit(rec(id="api:1", object="lead", domain="acme.com"), follow,
                                crm="hubspot", trigger="api", account_owners={"acme.com": "101"})
    without = decider.submit(rec(id="api:2", object="lead", domain="acme.com"), follow,
                             crm="hubspot", trigger="api")
    gated.gate.set()

    blocker.result(5)
    assert with_owner.result(5).owner == "ana"
    assert without.result(5).owner == "ana"  # the batch's owners are true for all of it


def test_given_counts_every_so_often_then_batches_are_counted_together_and_none_is_lost(
    gated: GatedStore,
) -> None:
    counted: list[list[str | None]] = []
    decider = Decider(gated, lambda: NOW, count_every=1.0,  # type: ignore[arg-type]
                      count=lambda ds: counted.append([d.owner for d in ds]))

    assert submit(decider, "0").result(timeout=10).owner == "ana"
    assert submit(decider, "1").result(timeout=10).owner == "bo"
    assert counted == []  # within the interval: not counted yet

    deadline = time.monotonic() + 5
    while not counted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert counted == [["ana", "bo"]]  # both, in one count, once the interval passed

    assert submit(decider, "2").result(timeout=10).owner == "cy"
    decider.flush()  # what the app does when it stops
    assert counted == [["ana", "bo"], ["cy"]]
    decider.flush()
    assert counted == [["ana", "bo"], ["cy"]]  # nothing counted twice
