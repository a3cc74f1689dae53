"""Who hears of a first-touch SLA breach: the manager of the rep who let it lapse, and after a
re-route that rep too (the new owner hears of the assignment like any other, from the notify
follower of the write)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from sync.compiler import CompiledRouting
from sync.links import crm_link
from sync.models import Decision, Outcome
from sync.notify import SLA_BREACH, Links, Notice, Notifier, Role, policy
from sync.sla import REROUTE, duration_text
from sync.state.base import WatchEntry


def breach_notices(entry: WatchEntry, kind: str, name: str | None, action: str,
                   new_owner: str | None, routing: CompiledRouting, links: Links,
                   channels: set[str]) -> list[Notice]:
    """The notices one breach calls for on the configured `channels` the routing file's
    `notify.channels` lists; one per person and channel, deduplicated by the breached
    assignment (`entry.decision_key`), so a pass run twice never tells anyone twice."""
    breacher = routing.reps.get(entry.owner)
    if breacher is None:
        return []
    recipients: list[tuple[Role, str]] = []
    if breacher.manager and breacher.manager in routing.reps and breacher.manager != entry.owner:
        recipients.append(("manager", breacher.manager))
    if action == REROUTE:
        recipients.append(("owner", entry.owner))
    sla = routing.sla_for(entry.rule, entry.pool)
    within = f" within {duration_text(sla.first_touch)}" if sla is not None else ""
    new_name = routing.reps[new_owner].name or new_owner \
        if new_owner in routing.reps and new_owner is not None else new_owner
    if action == REROUTE and new_owner:
        outcome = f"re-routed to {new_name}"
    else:
        outcome = f"still with {breacher.name or breacher.id}; no re-route"
    reason = f"{breacher.name or breacher.id} did not touch it{within}: {outcome}."
    # A link needs the record kind and id, as a decision carries them; the `Links` fields are
    # crm_link's settings by name (the core names no CRM).
    link = crm_link(Decision(record_id=entry.record_id, object=kind, crm=entry.crm,
                             outcome=Outcome.ASSIGNED), **asdict(links))
    on = [c for c in policy(routing).channels if c in channels]
    notices = []
    for role, rep_id in recipients:
        rep = routing.reps[rep_id]
        for channel in on:
            if channel == "email" and not rep.email:
                continue
            if channel == "slack" and not (rep.slack or rep.email):
                continue
            notices.append(Notice(
                decision_key=f"{entry.decision_key}|{SLA_BREACH}", channel=channel, role=role,
                rep=rep.id, name=rep.name or rep.id, email=rep.email, slack=rep.slack,
                crm=entry.crm, object=kind, record_id=entry.record_id,
                record_name=name or entry.record_id, link=link, owner=entry.owner,
                owner_name=breacher.name or breacher.id, outcome=SLA_BREACH, rule=entry.rule,
                reason=reason, written_at=entry.written_at.isoformat(),
                deadline=entry.deadline.isoformat()))
    return notices


class BreachNotices:
    """`sync.sla_watch.BreachNotifier` over the notify follower's channels and delivery."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def breached(self, entry: WatchEntry, kind: str, name: str | None, action: str,
                 new_owner: str | None, at: datetime) -> None:
        self.notifier.send(breach_notices(entry, kind, name, action, new_owner,
                                          self.notifier.routing, self.notifier.links,
                                          set(self.notifier.senders)))
