"""sync.precreate: which POST /route decisions are kept for the CRM record, and the decision the
record gets when it appears (assigned, and a proposal held for review)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sync.models import Decision, Outcome, PoolTurn, Record, TraceStep
from sync.pipeline import review_item
from sync.precreate import KEPT_OUTCOMES, OWNER_OUTCOMES, as_made, precreated
from sync.state.base import Precreated

T0 = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
LATER = T0 + timedelta(hours=2)
TTL = timedelta(hours=24)
TURN = PoolTurn(pool="inbound", member="ana", window="day:2026-12-07", last_served="ana",
                credits=None)


def form(email: str = "ann@acme.com") -> Record:
    """The record POST /route decided (not in the CRM: its id is the key's)."""
    return Record(id="api:form-1", object="contact", crm="hubspot",
                  folded={"email": email}, domain="acme.com", domain_keys=("acme.com",))


def appeared() -> Record:
    """The CRM record that appeared for it."""
    return Record(id="501", object="contact", crm="hubspot", folded={"email": "ann@acme.com"},
                  domain="acme.com", domain_keys=("acme.com",), created_at=LATER)


def decided(outcome: Outcome, *, owner: str | None = "ana",
            turn: PoolTurn | None = TURN) -> Decision:
    reason = "rule inbound: pool inbound round_robin -> ana"
    if outcome == Outcome.PENDING_REVIEW:
        reason += "; held for review (rule inbound has review: true)"
    return Decision(record_id="api:form-1", object="contact", crm="hubspot", outcome=outcome,
                    owner=owner, owner_crm_id="101" if owner else None, rule="inbound",
                    reason=reason, trace=(TraceStep("inbound", "won", "pool inbound -> ana"),),
                    trigger="api", pool="inbound", decided_at=T0, turn=turn)


def test_given_the_outcomes_then_a_review_proposal_is_kept_but_gives_no_owner() -> None:
    assert Outcome.PENDING_REVIEW in KEPT_OUTCOMES
    assert Outcome.PENDING_REVIEW not in OWNER_OUTCOMES
    assert set(OWNER_OUTCOMES) <= set(KEPT_OUTCOMES)


def test_given_a_decision_held_for_review_when_kept_then_the_entry_carries_its_turn_window(
) -> None:
    entry = precreated("k", "hubspot", "contacts", form(), decided(Outcome.PENDING_REVIEW), TTL)

    assert entry is not None
    assert (entry.email, entry.domain) == ("ann@acme.com", "acme.com")
    assert entry.decision.outcome == Outcome.PENDING_REVIEW
    assert entry.window == "day:2026-12-07"
    assert entry.expires_at == T0 + TTL


def test_given_an_assigned_decision_when_kept_then_its_window_is_kept_too() -> None:
    entry = precreated("k", "hubspot", "contacts", form(), decided(Outcome.ASSIGNED), TTL)

    assert entry is not None and entry.window == "day:2026-12-07"


def test_given_no_owner_to_hand_over_when_kept_then_nothing_is_kept() -> None:
    unassigned = decided(Outcome.UNASSIGNED, owner=None, turn=None)
    odd = decided(Outcome.PENDING_REVIEW, owner=None, turn=None)  # no proposal to review

    assert precreated("k", "hubspot", "contacts", form(), unassigned, TTL) is None
    assert precreated("k", "hubspot", "contacts", form(), odd, TTL) is None


def test_given_a_kept_review_proposal_when_its_record_appears_then_the_same_proposal_no_turn(
) -> None:
    entry = precreated("k", "hubspot", "contacts", form(), decided(Outcome.PENDING_REVIEW), TTL)
    assert entry is not None

    made = as_made(entry, appeared(), LATER, "webhook")

    assert made.outcome == Outcome.PENDING_REVIEW
    assert (made.record_id, made.owner, made.owner_crm_id) == ("501", "ana", "101")
    assert (made.rule, made.pool, made.trace) == ("inbound", "inbound", entry.decision.trace)
    assert made.turn is None  # taken by POST /route, never again
    assert made.trigger == "webhook" and made.decided_at == LATER
    assert made.reason == (f"decided by POST /route at {T0.isoformat()}: rule inbound: pool "
                           "inbound round_robin -> ana; held for review (rule inbound has "
                           "review: true)")


def test_given_a_review_proposal_made_by_post_route_when_its_item_opens_then_it_has_the_window(
) -> None:
    entry = precreated("k", "hubspot", "contacts", form(), decided(Outcome.PENDING_REVIEW), TTL)
    assert entry is not None
    made = as_made(entry, appeared(), LATER, "sweep")

    item = review_item(made, "contacts", LATER + timedelta(hours=4), None, entry.window)

    assert (item.record_id, item.proposed_owner, item.proposed_crm_id) == ("501", "ana", "101")
    assert (item.rule, item.pool, item.window) == ("inbound", "inbound", "day:2026-12-07")
    assert item.previous_owner is None and item.created_at == LATER
    assert item.reason.startswith("decided by POST /route at ")


def test_given_an_entry_kept_before_windows_were_kept_when_read_then_its_window_is_none() -> None:
    entry = precreated("k", "hubspot", "contacts", form(), decided(Outcome.ASSIGNED), TTL)
    assert entry is not None
    data = json.loads(entry.to_json())
    del data["window"]  # as an earlier version stored it (a Redis kept across an upgrade)

    old = Precreated.from_json(json.dumps(data))

    assert old.window is None and old.decision == entry.decision._replace(turn=None)
