"""Celery tasks keeping the SQL history: `history.flush` (Redis outbox to SQL), `history.prune`."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery.signals import worker_init, worker_process_init
from celery.utils.log import get_task_logger
from sqlalchemy.exc import SQLAlchemyError

from config.urls import redact_url
from connectors.settings import Settings
from sync.history import History, SchemaOutOfDate
from sync.history.outbox import DEFAULT_BATCH, FlushError, describe, drain
from sync.state import open_store
from sync.state.redis import RedisStateStore
from tasks.celery_app import FLUSH_TASK, PRUNE_TASK, app

log = get_task_logger(__name__)

REDIS_SCHEMES = ("redis://", "rediss://")  # the state URLs sync.state.open_store opens on Redis
# One run moves batches for at most this long, then leaves the rest to the next beat start
# (every 2 s): a task stays short (DESIGN §2), so a webhook batch queued behind a flush on a
# busy worker waits seconds at most, and a backlog after an outage drains in steps (about
# 10,000 decisions a second into PostgreSQL) without holding a worker for minutes.
FLUSH_BUDGET_SECONDS = 2.0

# One state store and history per (state, database) per process: an engine keeps its pool of
# connections, which the flush every 2 s would otherwise open and close each time.
_opened: dict[tuple[str, str], tuple[RedisStateStore, History]] = {}
_opened_lock = threading.Lock()


@worker_process_init.connect
def _fresh_after_fork(**_: object) -> None:
    # Database and Redis sockets must not cross a fork: each pool process opens its own.
    with _opened_lock:
        _opened.clear()


def _service(settings: Settings) -> tuple[RedisStateStore, History] | None:
    """This process's outbox and history; None in embedded mode (the SQLite state store writes
    decisions to the history in its own commit, so there is no outbox)."""
    state_url = settings.resolved_state_url()
    if not state_url.startswith(REDIS_SCHEMES):
        return None
    database_url = settings.resolved_database_url(state_url)
    key = (state_url, database_url)
    with _opened_lock:
        opened = _opened.get(key)
        if opened is None:
            store = open_store(state_url)
            assert isinstance(store, RedisStateStore)  # a redis:// URL opens one
            opened = _opened[key] = (store, History(database_url))
        return opened


def flush_outbox(settings: Settings | None = None, *, batch: int = DEFAULT_BATCH,
                 budget_seconds: float = FLUSH_BUDGET_SECONDS) -> int:
    """Move waiting decisions to the history for up to `budget_seconds`; how many moved.
    With the database down the decisions stay in the outbox: logged, not raised, since the
    next beat start (2 s later) tries again."""
    service = _service(settings or Settings())
    if service is None:
        return 0
    store, history = service
    try:
        return drain(store, history, batch=batch, budget_seconds=budget_seconds)
    except FlushError as exc:
        log.warning("history flush: %s; %d decisions wait in the outbox", exc,
                    store.outbox_size())
        return 0
    except redis.exceptions.RedisError as exc:
        # The outbox itself is out of reach (a Redis restart): nothing moved, nothing lost; the
        # next beat start tries again. One line, not a task failure's traceback every 2 s.
        log.warning("history flush: Redis %s unreachable (%s); the outbox waits",
                    store.display_url, type(exc).__name__)
        return 0


def prune_history(settings: Settings | None = None, now: datetime | None = None) -> int:
    """Delete decisions (and their events) older than the retention; how many went."""
    settings = settings or Settings()
    before = (now or datetime.now(UTC)) - timedelta(days=settings.history_retention_days)
    service = _service(settings)
    if service is not None:
        return service[1].prune(before)
    # Embedded mode: the history lives in the SQLite state file itself.
    with History(settings.resolved_database_url(settings.resolved_state_url())) as history:
        return history.prune(before)


@app.task(name=FLUSH_TASK, ignore_result=True)
def flush() -> int:
    """Beat's outbox flush (every 2 s); idempotent: the history skips ids it already holds."""
    return flush_outbox()


@app.task(name=PRUNE_TASK, ignore_result=True)
def prune() -> int:
    """Beat's daily retention pass (ACCOUNT_ROUTER_HISTORY_RETENTION_DAYS)."""
    try:
        removed = prune_history()
    except SQLAlchemyError as exc:
        # Tomorrow's pass (or `account-router db prune`) removes the same rows; one line that
        # names no password instead of a traceback quoting the statement.
        log.warning("history prune: %s; nothing removed", describe(exc))
        return 0
    log.info("history prune: %d decisions older than the retention removed", removed)
    return removed


def schema_problem(settings: Settings) -> str | None:
    """Why a worker must not start on this history database, or None. An unreachable database
    is no reason: decisions wait in the outbox until it is back (docs/operations.md)."""
    state_url = settings.resolved_state_url()
    if not state_url.startswith(REDIS_SCHEMES):
        # Embedded state: the SQLite state store keeps the history in its own file and
        # upgrades it when it opens it.
        return None
    try:
        database_url = settings.resolved_database_url(state_url)
    except ValueError as exc:
        return str(exc)
    try:
        with History(database_url) as history:
            history.require_current()
    except SchemaOutOfDate as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - any database failure: start, and flush later
        log.warning("history database %s not checked at start: %s", redact_url(database_url),
                    describe(exc))
    return None


@worker_init.connect
def _refuse_out_of_date_schema(**_: Any) -> None:
    # In the main worker process, before any pool process forks: a worker on an old schema
    # would fill the outbox with decisions no flush can store.
    problem = schema_problem(Settings())
    if problem is not None:
        print(f"account-router worker not started: {problem}", file=sys.stderr)
        raise SystemExit(2)
