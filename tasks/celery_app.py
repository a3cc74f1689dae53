"""The Celery app: Redis broker from `Settings`, short idempotent tasks, beat's sweep schedule."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging
from kombu import Queue

from config.settings import DEFAULT_VISIBILITY_TIMEOUT_SECONDS, SWEEP_SCHEDULE_ENV
from connectors.registry import canonical_object
from connectors.settings import Settings

ROUTE_TASK = "account_router.route"
SWEEP_PAGE_TASK = "account_router.sweep_page"
# Names fixed by DESIGN §8 (tasks/history.py).
FLUSH_TASK = "history.flush"
PRUNE_TASK = "history.prune"
# Notifications (tasks/notify.py): names fixed by the brief, so queued messages survive
# a deploy.
NOTIFY_TASK = "notify.send"
NOTIFY_DRAIN_TASK = "notify.drain"
# DESIGN §8: beat runs the first-touch SLA pass every minute (tasks/worker.py;
# ACCOUNT_ROUTER_SLA_CHECK_SECONDS).
SLA_CHECK_TASK = "sla.check"
# Items held for review past their deadline: approved or escalated (tasks/review_tasks.py).
EXPIRE_REVIEW_TASK = "review.expire"
EXPIRE_REVIEW_EVERY_SECONDS = 60.0
# The outbox is flushed often, so decisions show in the history within seconds; retention is
# a daily pass.
FLUSH_EVERY_SECONDS = 2.0
PRUNE_EVERY_SECONDS = 24 * 3600.0
# Kombu's Redis transport keeps one list per priority step and takes from the highest first
# (0 is the highest there, unlike RabbitMQ): webhook and reprocess batches go before sweep
# pages, so a long sweep backlog never stands between a new lead and its owner.
ROUTE_PRIORITY = 0
SWEEP_PRIORITY = 6
# The history flush goes after webhook batches (a new lead's owner first) but before sweep
# pages, so a long sweep backlog cannot hold the outbox back from the database.
HISTORY_PRIORITY = 3
# A rep hears of a new lead within seconds: after webhook batches, before sweep pages.
NOTIFY_PRIORITY = 2
# Notifications go through a queue of their own: a worker started without `-Q` consumes both,
# and a deployment that wants Slack's latency (100 ms+ a call) kept off the routing processes
# runs `celery -A tasks worker -Q notify --pool threads` beside `-Q celery` workers
# (docs/operations.md#notifications).
DEFAULT_QUEUE = "celery"
NOTIFY_QUEUE = "notify"
# Beat sends what a killed worker or a retryable failure left waiting.
NOTIFY_DRAIN_EVERY_SECONDS = 30.0


def broker_transport_options(settings: Settings) -> dict[str, float]:
    """Redis transport options: the visibility timeout (ACCOUNT_ROUTER_VISIBILITY_TIMEOUT).

    Every countdown we use stays below it: Redis re-delivers an ETA task held past the
    visibility timeout, so a longer countdown would run twice (mozmeao/basket 98a4dee0)."""
    timeout = settings.visibility_timeout
    options: dict[str, float] = {"visibility_timeout": timeout}
    if timeout < DEFAULT_VISIBILITY_TIMEOUT_SECONDS:
        # A shortened timeout (tests that kill workers) also scans for abandoned messages
        # every second, else a redelivery would wait for the default scan interval.
        options |= {"unacked_restore_interval": 1, "unacked_restore_throttle": 1}
    return options


def sweep_schedule(settings: Settings) -> dict[tuple[str, str], float]:
    """The settings' sweeps keyed by (crm, the CRM's own object name); ValueError naming
    ACCOUNT_ROUTER_SWEEP_SCHEDULE for an object the CRM does not have, at app start."""
    schedule: dict[tuple[str, str], float] = {}
    for (crm, obj), every in settings.sweep_schedule.items():
        try:
            schedule[(crm, canonical_object(crm, obj))] = every
        except ValueError as exc:
            raise ValueError(f"{SWEEP_SCHEDULE_ENV} entry {crm}:{obj}: {exc}") from None
    return schedule


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery's `beat_schedule`: one `sweep_page` chain start per (crm, object), the history
    outbox flush, the daily history prune, the notifications' drain and the first-touch SLA
    pass every minute."""
    sweeps = {
        f"sweep {crm}:{obj}": {
            "task": SWEEP_PAGE_TASK,
            "schedule": every,
            "args": (crm, obj),
            # A start queued while the workers were down is stale once the next one is due;
            # expiring it keeps a backlog of identical chain starts from piling up.
            "options": {"expires": every, "priority": SWEEP_PRIORITY},
        }
        for (crm, obj), every in sweep_schedule(settings).items()
    }
    history = {
        # Expiring like the sweep starts: a start queued while the workers were down is
        # stale once the next is due, and one flush drains what many would have.
        "history flush": {"task": FLUSH_TASK, "schedule": FLUSH_EVERY_SECONDS,
                          "options": {"expires": FLUSH_EVERY_SECONDS,
                                      "priority": HISTORY_PRIORITY}},
        "history prune": {"task": PRUNE_TASK, "schedule": PRUNE_EVERY_SECONDS,
                          "options": {"expires": 3600.0, "priority": HISTORY_PRIORITY}},
    }
    notify = {}
    if settings.slack_token is not None or settings.smtp_url is not None:
        notify["notify drain"] = {
            "task": NOTIFY_DRAIN_TASK, "schedule": NOTIFY_DRAIN_EVERY_SECONDS,
            "options": {"expires": NOTIFY_DRAIN_EVERY_SECONDS, "priority": NOTIFY_PRIORITY}}
    sla = {
        # A pass queued while the workers were down is stale once the next is due; one pass
        # takes every entry due by then.
        "sla check": {"task": SLA_CHECK_TASK, "schedule": settings.sla_check_seconds,
                      "options": {"expires": settings.sla_check_seconds,
                                  "priority": HISTORY_PRIORITY}},
    }
    review = {
        "review expire": {"task": EXPIRE_REVIEW_TASK, "schedule": EXPIRE_REVIEW_EVERY_SECONDS,
                          "options": {"expires": EXPIRE_REVIEW_EVERY_SECONDS,
                                      "priority": HISTORY_PRIORITY}},
    }
    return sweeps | history | notify | sla | review


@setup_logging.connect
def _json_logs(loglevel: int | str | None = None, **_: object) -> None:
    """Workers and beat log JSON lines (tasks/logging.py) instead of Celery's own format."""
    from tasks.logging import configure_logging

    configure_logging(level=loglevel or "INFO")


def make_app(settings: Settings | None = None, *, current: bool = True) -> Celery:
    """A configured app; `current=False` for a send-only app (the enqueue side)."""
    settings = settings or Settings()
    app = Celery("account_router", broker=settings.redis_url,
                 include=["tasks.worker", "tasks.history", "tasks.notify", "tasks.review_tasks"],
                 set_as_current=current)
    app.conf.update(
        task_acks_late=True,  # tasks are idempotent: a redelivery re-routes, never re-assigns
        task_reject_on_worker_lost=True,  # a killed worker's task goes back to the queue
        worker_prefetch_multiplier=1,  # a prefetched message would wait out someone's page
        broker_transport_options=broker_transport_options(settings),
        task_ignore_result=True,  # no result backend: outcomes live in the audit
        result_backend=None,
        broker_connection_retry_on_startup=True,
        # A task that loses Redis mid-run waits it out and runs again itself (tasks/worker.py),
        # its message unacknowledged meanwhile; cancelling it would only redo the same work.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        beat_schedule=beat_schedule(settings),
        task_queues=(Queue(DEFAULT_QUEUE, routing_key=DEFAULT_QUEUE),
                     Queue(NOTIFY_QUEUE, routing_key=NOTIFY_QUEUE)),
        task_default_queue=DEFAULT_QUEUE,
        task_routes={NOTIFY_TASK: {"queue": NOTIFY_QUEUE},
                     NOTIFY_DRAIN_TASK: {"queue": NOTIFY_QUEUE}},
        timezone="UTC",
    )
    return app


app = make_app()
