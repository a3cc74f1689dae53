"""Decisions made before the CRM record exists (POST /route), and the same decision given to
the record when it appears: which email and domain match, and the decision written as made.

Pure: instants are passed in; the state store keeps the entries (`StateStore.put_precreated`,
`take_precreated`). See docs/operations.md#post-route.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sync.models import Decision, Outcome, Record
from sync.state.base import Precreated

# Decisions that give the record an owner.
OWNER_OUTCOMES = (Outcome.ASSIGNED, Outcome.FALLBACK)
# Decisions kept for the record: those, and a proposal held for review (its pool turn is taken,
# so routing the record again when it appears would take a second one). An unassigned or a
# skipped answer has nothing to hand over: the record is routed as usual when it appears.
KEPT_OUTCOMES = (*OWNER_OUTCOMES, Outcome.PENDING_REVIEW)


def match_keys(record: Record) -> tuple[str | None, str | None]:
    """The record's email (folded) and registered domain, the keys a pre-created decision is
    found by; the domain only when it is not a free-mail one (gmail.com is no company)."""
    email = record.folded.get("email")
    if email is not None and "@" not in email:
        email = None
    domain = None
    if record.domain_keys and not record.freemail:
        domain = record.domain_keys[-1]
    return email, domain


def precreated(id: str, crm: str, obj: str, record: Record, decision: Decision,
               ttl: timedelta) -> Precreated | None:
    """The entry to keep for `decision` (made for `record`, not in the CRM yet) on the CRM
    object `obj`; None when there is nothing to hand over or nothing to find the record by."""
    if decision.outcome not in KEPT_OUTCOMES or decision.owner is None or \
            decision.decided_at is None:
        return None
    email, domain = match_keys(record)
    if email is None and domain is None:
        return None
    return Precreated(id=id, crm=crm, object=obj, email=email, domain=domain,
                      decided_at=decision.decided_at, expires_at=decision.decided_at + ttl,
                      decision=decision,
                      window=decision.turn.window if decision.turn is not None else None)


def as_made(entry: Precreated, record: Record, now: datetime, trigger: str) -> Decision:
    """The decision `entry` holds, given to the CRM record that appeared: same outcome, owner
    (or proposed owner, for `pending_review`), rule, pool and trace, no pool turn (it was taken
    when decided), the reason saying so. A `pending_review` one opens the record's review
    item like any decision held for review (the pipeline does; `entry.window` is where the
    turn was counted)."""
    made = entry.decision
    return Decision(
        record_id=record.id, object=record.object, crm=record.crm, outcome=made.outcome,
        previous_owner=None, owner=made.owner, owner_crm_id=made.owner_crm_id, rule=made.rule,
        reason=f"decided by POST /route at {entry.decided_at.isoformat()}: {made.reason}",
        trace=made.trace, trigger=trigger, pool=made.pool, created_at=record.created_at,
        decided_at=now, turn=None,
    )
