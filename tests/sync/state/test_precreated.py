"""The StateStore's POST /route part, run unchanged against SQLite and a real Redis: answers by
idempotency key, and pre-created decisions taken once by the record that appears."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sync.models import Decision, Outcome, TraceStep
from sync.state import StateStore, open_store
from sync.state.base import Precreated

T0 = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def entry(id: str = "k1", *, email: str | None = "ann@acme.com", domain: str | None = "acme.com",
          at: datetime = T0, crm: str = "hubspot", object: str = "contacts",
          owner: str = "ana") -> Precreated:
    decision = Decision(record_id=f"api:{id}", object="contact", crm=crm,
                        outcome=Outcome.ASSIGNED, owner=owner, owner_crm_id="101",
                        rule="everyone", reason="rule everyone", trigger="api",
                        trace=(TraceStep("everyone", "won", "rep ana"),), decided_at=at)
    return Precreated(id=id, crm=crm, object=object, email=email, domain=domain,
                      decided_at=at, expires_at=at + DAY, decision=decision)


def test_given_an_answer_when_read_back_then_the_same_text_and_none_for_another_key(
    store: StateStore,
) -> None:
    store.put_answer("k1", '{"owner": null}', 60)

    assert store.answer("k1") == '{"owner": null}'
    assert store.answer("k2") is None


def test_given_an_answer_past_its_ttl_when_read_then_none(store: StateStore) -> None:
    store.put_answer("k1", "x", 0.05)

    time.sleep(0.1)
    assert store.answer("k1") is None


def test_given_an_entry_when_taken_by_email_then_it_comes_back_whole_and_only_once(
    store: StateStore,
) -> None:
    store.put_precreated(entry(), 3600)

    taken = store.take_precreated("hubspot", "contacts", "ann@acme.com", None, T0 + DAY / 2)

    assert taken == entry()
    assert store.take_precreated("hubspot", "contacts", "ann@acme.com", "acme.com",
                                 T0 + DAY / 2) is None


def test_given_no_email_match_when_taken_then_the_domain_matches_the_oldest_first(
    store: StateStore,
) -> None:
    store.put_precreated(entry("late", email="bo@acme.com", at=T0 + timedelta(hours=1)), 3600)
    store.put_precreated(entry("early", email="cy@acme.com", at=T0), 3600)

    now = T0 + timedelta(hours=2)
    first = store.take_precreated("hubspot", "contacts", "dee@acme.com", "acme.com", now)
    second = store.take_precreated("hubspot", "contacts", None, "acme.com", now)

    assert (first and first.id, second and second.id) == ("early", "late")
    # Taken through its domain, it is gone for its email too.
    assert store.take_precreated("hubspot", "contacts", "cy@acme.com", None, now) is None


def test_given_an_email_match_and_an_older_domain_match_then_the_email_wins(
    store: StateStore,
) -> None:
    store.put_precreated(entry("domain-only", email="old@acme.com", at=T0), 3600)
    store.put_precreated(entry("mine", email="ann@acme.com", at=T0 + timedelta(minutes=5)), 3600)

    taken = store.take_precreated("hubspot", "contacts", "ann@acme.com", "acme.com",
                                  T0 + timedelta(hours=1))

    assert taken is not None and taken.id == "mine"


def test_given_an_instant_outside_the_entrys_window_then_nothing_is_taken(
    store: StateStore,
) -> None:
    store.put_precreated(entry(), 3600)

    assert store.take_precreated("hubspot", "contacts", "ann@acme.com", None, T0 + DAY) is None
    assert store.take_precreated("hubspot", "contacts", "ann@acme.com", None,
                                 T0 - timedelta(seconds=1)) is None
    assert store.take_precreated("hubspot", "contacts", "ann@acme.com", None, T0) is not None


def test_given_another_crm_or_object_then_nothing_is_taken(store: StateStore) -> None:
    store.put_precreated(entry(), 3600)

    assert store.take_precreated("salesforce", "contacts", "ann@acme.com", None, T0) is None
    assert store.take_precreated("hubspot", "companies", None, "acme.com", T0) is None
    assert store.take_precreated("hubspot", "contacts", None, None, T0) is None


def test_given_many_concurrent_takers_then_each_entry_goes_to_exactly_one(
    store_url: str,
) -> None:
    with open_store(store_url) as setup:
        for i in range(5):
            setup.put_precreated(entry(f"k{i}", email=f"p{i}@acme.com"), 3600)

    def take(_: int) -> str | None:
        with open_store(store_url) as mine:
            got = mine.take_precreated("hubspot", "contacts", None, "acme.com", T0)
            return got.id if got else None

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(take, range(12)))

    taken = [r for r in results if r is not None]
    assert sorted(taken) == [f"k{i}" for i in range(5)]


def test_given_an_entry_kept_past_its_wall_clock_ttl_then_it_is_gone(store: StateStore) -> None:
    store.put_precreated(entry(), 0.05)
    time.sleep(0.1)

    assert store.take_precreated("hubspot", "contacts", "ann@acme.com", None, T0) is None


def test_given_a_batch_when_taken_at_once_then_each_key_gets_its_match_in_order(
    store: StateStore,
) -> None:
    store.put_precreated(entry("a", email="ann@acme.com"), 3600)
    store.put_precreated(entry("b", email="bo@beta.io", domain="beta.io"), 3600)

    taken = store.take_precreated_many("hubspot", "contacts", [
        ("nobody@none.org", "none.org"), ("x@acme.com", "acme.com"), (None, None),
        ("bo@beta.io", None), ("ann2@acme.com", "acme.com")], T0)

    assert [t and t.id for t in taken] == [None, "a", None, "b", None]


def test_given_a_key_when_claimed_then_once_until_answered_then_the_answer_for_everyone(
    store: StateStore,
) -> None:
    assert store.claim_answer("k1", "route:k1", 30) == (True, None)
    assert store.claim_answer("k1", "route:k1", 30) == (False, None)  # held by the first

    store.put_answer("k1", "the answer", 60)

    assert store.claim_answer("k1", "route:k1", 30) == (False, "the answer")
    store.forget("route:k2")
    assert store.claim_answer("k2", "route:k2", 30) == (True, None)
    store.forget("route:k2")  # a failed request gives its claim back
    assert store.claim_answer("k2", "route:k2", 30) == (True, None)


def test_given_an_answer_put_with_its_entry_then_both_are_kept(store: StateStore) -> None:
    store.put_answer("k1", "the answer", 3600, entry())

    assert store.answer("k1") == "the answer"
    assert store.take_precreated("hubspot", "contacts", "ann@acme.com", None, T0) == entry()


def test_given_a_proposal_held_for_review_when_kept_then_it_comes_back_with_its_turn_window(
    store: StateStore,
) -> None:
    held = entry("r1")
    held = replace(held, window="day:2026-11-25", decision=held.decision._replace(
        outcome=Outcome.PENDING_REVIEW, reason="rule everyone: -> ana; held for review (x)"))
    store.put_answer("r1", "the answer", 3600, held)

    taken = store.take_precreated("hubspot", "contacts", None, "acme.com", T0)

    assert taken == held
    assert taken is not None and taken.window == "day:2026-11-25"
    assert taken.decision.outcome == Outcome.PENDING_REVIEW
