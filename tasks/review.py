"""Review actions as the service runs them: the pipeline of an item's CRM, as workers build it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime

from connectors import registry
from connectors.settings import Settings
from sync import review
from sync.compiler import CompiledRouting, load_routing
from sync.metrics import Metrics
from sync.models import ReviewItem
from sync.pipeline import Pipeline
from sync.state import open_store
from sync.state.base import StateStore
from tasks.followers import followers_for


@contextmanager
def review_pipeline(crm: str, routing: CompiledRouting, store: StateStore, settings: Settings,
                    metrics: Metrics | None = None) -> Iterator[Pipeline]:
    """A pipeline over `store` for one review action: the same followers as every pipeline
    (a reviewed write is notified and watched like a routed one); closed after."""
    connector = registry.create_for(crm, routing, settings)
    try:
        yield Pipeline(connector, routing, store, recheck_after=settings.recheck_after_seconds,
                       metrics=metrics, followers=followers_for(settings, store, routing, crm))
    finally:
        connector.close()


def act(store: StateStore, routing: CompiledRouting, settings: Settings, item_id: str, *,
        rep: str | None, by: str, now: datetime, metrics: Metrics | None = None
        ) -> review.Reviewed:
    """Approve (`rep` None) or reassign one item; ReviewError says why not. A CRM this
    process cannot reach (not configured here) is `unavailable`."""
    item = review.open_item(store, item_id)
    if rep is not None and rep != item.proposed_owner:
        # What the routing file alone can refuse is refused before any CRM is called.
        review.known_crm_id(routing, item, rep)
    with ExitStack() as stack:
        try:
            pipeline = stack.enter_context(
                review_pipeline(item.crm, routing, store, settings, metrics))
        except Exception as exc:
            raise review.ReviewError("unavailable", f"{item.crm} is not configured here: "
                                     f"{exc}") from exc
        if rep is None:
            return review.approve(pipeline, item_id, by=by, now=now)
        return review.reassign(pipeline, item_id, rep, by=by, now=now)


def expire(store: StateStore, routing: CompiledRouting, settings: Settings, now: datetime,
           escalate: review.Escalate | None = None, metrics: Metrics | None = None
           ) -> review.ExpireReport:
    """One `review.expire` pass over `store` (the beat task runs it every minute)."""
    pipelines: dict[str, Pipeline] = {}

    def manager(rep: str) -> str | None:
        found = routing.reps.get(rep)
        return found.manager if found is not None else None

    with ExitStack() as stack:

        def pipeline_for(crm: str) -> Pipeline:
            if crm not in pipelines:
                pipelines[crm] = stack.enter_context(
                    review_pipeline(crm, routing, store, settings, metrics))
            return pipelines[crm]

        return review.expire(pipeline_for, store, now=now, action=routing.on_review_timeout,
                             escalate=escalate, managers=manager)


def escalation(settings: Settings, store: StateStore, routing: CompiledRouting
               ) -> review.Escalate | None:
    """Tell the proposed owner's manager that an item is past its deadline, on the channels
    configured (None when none is: the escalation is then recorded, and shown, only). Sent
    inline and at most once per item, channel and manager (the notify claim)."""
    from sync.models import Decision, Outcome
    from sync.notify import Notice, deliver, policy, senders_by_channel
    from tasks.notify import links_for, senders_for

    senders = senders_by_channel(senders_for(settings))
    if not senders:
        return None
    links = links_for(settings)

    def escalate(item: ReviewItem, manager: str | None) -> None:
        rep = routing.reps.get(manager) if manager is not None else None
        if rep is None:
            return
        try:
            kind = registry.spec(item.crm).kind(item.object)
        except (KeyError, ValueError):
            kind = item.object
        proposed = routing.reps.get(item.proposed_owner)
        link = links.decision(Decision(item.record_id, kind, item.crm, Outcome.PENDING_REVIEW))
        notices = [Notice(
            decision_key=f"review:{item.id}:escalated", channel=channel, role="review",
            rep=rep.id, name=rep.name or rep.id, email=rep.email, slack=rep.slack,
            crm=item.crm, object=kind, record_id=item.record_id, record_name=item.record_id,
            link=link, owner=item.proposed_owner,
            owner_name=(proposed.name if proposed is not None and proposed.name else None)
            or item.proposed_owner, outcome=str(Outcome.PENDING_REVIEW), rule=item.rule,
            reason=f"waiting since {item.created_at.isoformat()}, due by "
                   f"{item.deadline.isoformat()} (review {item.id}): {item.reason}")
            for channel in policy(routing).channels if channel in senders
            and (rep.email if channel == "email" else rep.slack or rep.email)]
        while notices:
            notices = deliver(notices, senders, store, lambda: datetime.now(UTC)).again

    return escalate


def expire_pass(settings: Settings | None = None, now: datetime | None = None
                ) -> review.ExpireReport:
    """`review.expire` over the configured state and routing file; nothing to do (an empty
    report) without a routing file."""
    settings = settings or Settings()
    if not settings.config:
        return review.ExpireReport()
    routing = load_routing(settings.config, list_roots=settings.list_roots)
    store = open_store(settings.resolved_state_url())
    try:
        return expire(store, routing, settings, now or datetime.now(UTC),
                      escalate=escalation(settings, store, routing))
    finally:
        store.close()
