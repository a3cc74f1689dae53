"""The Celery app: Redis broker from `Settings`, short idempotent tasks, beat's sweep schedule."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import setup_logging

from connectors.registry import canonical_object
from connectors.settings import Settings

ROUTE_TASK = "account_router.route"
SWEEP_PAGE_TASK = "account_router.sweep_page"
# Kombu's Redis transport keeps one list per priority step and takes from the highest first
# (0 is the highest there, unlike RabbitMQ): webhook and reprocess batches go before sweep
# pages, so a long sweep backlog never stands between a new lead and its owner.
ROUTE_PRIORITY = 0
SWEEP_PRIORITY = 6
# Tasks are one page or one batch (DESIGN.md §5), so a minute is ample; a killed worker's message
# comes back after it. Every countdown we use stays below it: Redis re-delivers an ETA task held
# past the visibility timeout, so a longer countdown would run twice (mozmeao/basket 98a4dee0).
VISIBILITY_TIMEOUT_SECONDS = 60
# ACCOUNT_ROUTER_VISIBILITY_TIMEOUT (seconds) overrides it, e.g. a few seconds in tests that kill
# workers; a value below the default also scans for abandoned messages every second.
VISIBILITY_TIMEOUT_ENV = "ACCOUNT_ROUTER_VISIBILITY_TIMEOUT"


def broker_transport_options() -> dict[str, float]:
    """Redis transport options: the visibility timeout, shortened by the environment if set."""
    raw = os.environ.get(VISIBILITY_TIMEOUT_ENV, "").strip()
    try:
        timeout = float(raw) if raw else float(VISIBILITY_TIMEOUT_SECONDS)
    except ValueError:
        raise ValueError(f"{VISIBILITY_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if timeout <= 0:
        raise ValueError(f"{VISIBILITY_TIMEOUT_ENV} must be positive")
    options: dict[str, float] = {"visibility_timeout": timeout}
    if timeout < VISIBILITY_TIMEOUT_SECONDS:
        options |= {"unacked_restore_interval": 1, "unacked_restore_throttle": 1}
    return options


def parse_schedule(text: str) -> dict[tuple[str, str], float]:
    """`hubspot:companies=300,salesforce:Lead=60` -> {(crm, canonical object): seconds};
    ValueError naming the bad entry, so a typo fails at beat start, not silently never runs."""
    schedule: dict[tuple[str, str], float] = {}
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        target, sep, seconds = entry.partition("=")
        crm, colon, obj = target.strip().partition(":")
        if not sep or not colon or not crm.strip() or not obj.strip():
            raise ValueError(f"ACCOUNT_ROUTER_SWEEP_SCHEDULE entry {entry!r}: expected "
                             f"crm:object=seconds, e.g. hubspot:companies=300")
        try:
            every = float(seconds)
        except ValueError:
            raise ValueError(f"ACCOUNT_ROUTER_SWEEP_SCHEDULE entry {entry!r}: {seconds!r} "
                             f"is not a number of seconds") from None
        if every <= 0:
            raise ValueError(f"ACCOUNT_ROUTER_SWEEP_SCHEDULE entry {entry!r}: the interval "
                             f"must be positive")
        crm = crm.strip().lower()
        schedule[(crm, canonical_object(crm, obj.strip()))] = every
    return schedule


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery's `beat_schedule`: one `sweep_page` chain start per (crm, object)."""
    return {
        f"sweep {crm}:{obj}": {
            "task": SWEEP_PAGE_TASK,
            "schedule": every,
            "args": (crm, obj),
            # A start queued while the workers were down is stale once the next one is due;
            # expiring it keeps a backlog of identical chain starts from piling up.
            "options": {"expires": every, "priority": SWEEP_PRIORITY},
        }
        for (crm, obj), every in parse_schedule(settings.sweep_schedule).items()
    }


@setup_logging.connect
def _json_logs(loglevel: int | str | None = None, **_: object) -> None:
    """Workers and beat log JSON lines (tasks/logging.py) instead of Celery's own format."""
    from tasks.logging import configure_logging

    configure_logging(level=loglevel or "INFO")


def make_app(settings: Settings | None = None, *, current: bool = True) -> Celery:
    """A configured app; `current=False` for a send-only app (the enqueue side)."""
    settings = settings or Settings()
    app = Celery("account_router", broker=settings.redis_url, include=["tasks.worker"],
                 set_as_current=current)
    app.conf.update(
        task_acks_late=True,  # tasks are idempotent: a redelivery re-routes, never re-assigns
        task_reject_on_worker_lost=True,  # a killed worker's task goes back to the queue
        worker_prefetch_multiplier=1,  # a prefetched message would wait out someone's page
        broker_transport_options=broker_transport_options(),
        task_ignore_result=True,  # no result backend: outcomes live in the audit
        result_backend=None,
        broker_connection_retry_on_startup=True,
        # A task that loses Redis mid-run waits it out and runs again itself (tasks/worker.py),
        # its message unacknowledged meanwhile; cancelling it would only redo the same work.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        beat_schedule=beat_schedule(settings),
        timezone="UTC",
    )
    return app


app = make_app()
