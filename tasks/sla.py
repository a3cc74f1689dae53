"""First-touch SLA entry points: the watch follower for a pipeline, and one check pass (the CLI's
`sla-check`; Celery's `sla.check` task lives in tasks/worker.py beside the other tasks)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from config.settings import Settings
from connectors import registry
from sync.compiler import CompiledRouting
from sync.pipeline import Pipeline
from sync.sla_watch import BreachNotifier, FirstTouchWatch, PassReport, SlaCheck, SlaMetrics
from sync.state.base import StateStore


def sla_follower(crm: str, routing: CompiledRouting, store: StateStore) -> FirstTouchWatch:
    """The follower a pipeline of `crm` is given so its landed writes are watched (the touch
    fields: the routing file's `touch_fields`, else the connector's defaults)."""
    return FirstTouchWatch(routing, store, registry.touch_fields(crm, routing))


def check_pass(routing: CompiledRouting, store: StateStore,
               pipelines: Callable[[str], Pipeline | None], now: datetime | None = None, *,
               metrics: SlaMetrics | None = None,
               notifier: BreachNotifier | None = None) -> PassReport:
    """One pass over the due watch entries at `now` (default: the clock)."""
    return SlaCheck(routing, store, pipelines, metrics=metrics, notifier=notifier).run(
        now or datetime.now(UTC))


def breach_notifier(settings: Settings, store: StateStore, routing: CompiledRouting
                    ) -> BreachNotifier | None:
    """Who hears of breaches, over the notify channels these settings configure (None: no
    channel configured, so nobody is told; the events and metrics still record them)."""
    # Deferred: slack-sdk and smtplib load only where a pass runs.
    from tasks.notify import notifier_for

    return notifier_for(settings, store, routing)
