"""Celery task bodies: thin and idempotent, they pass ids and cursors and run the one pipeline."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import redis
import structlog
from celery import Task
from celery.exceptions import Reject
from celery.signals import worker_process_init
from celery.utils.log import get_task_logger
from kombu.exceptions import OperationalError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_fixed,
)

from config.routing import ConfigError
from connectors import registry
from connectors.registry import canonical_object, load_routing
from connectors.settings import Settings
from sync.pipeline import Pipeline, RunReport
from sync.ports import CrmUnavailable, QuotaExhausted
from sync.sla_watch import PassReport
from sync.state import open_store
from tasks.celery_app import (
    ROUTE_TASK,
    SLA_CHECK_TASK,
    SWEEP_PAGE_TASK,
    SWEEP_PRIORITY,
    app,
)
from tasks.followers import followers_for
from tasks.metrics import metrics_for
from tasks.notify import notifier_for
from tasks.routing_files import Stamp, files_stamp, routing_files
from tasks.sla import check_pass

log = get_task_logger(__name__)

# A chain's lock outlives one page (a page is seconds) but lapses soon after a killed worker,
# so beat's next start takes over instead of waiting for a chain that will never continue.
CHAIN_LOCK_TTL_SECONDS = 120.0
# The transport has already retried within the call; this waits out a longer outage. Kept under
# the visibility timeout (celery_app.py), else Redis re-delivers the waiting message and the
# batch runs twice.
CRM_RETRY_COUNTDOWN_SECONDS = 30
CRM_RETRIES = 3
# Redis (state store and broker) unreachable mid-task, e.g. restarted: redis-py's own retries
# (a few seconds) ran out. The task waits for Redis and runs again (it is idempotent); it is
# never acknowledged as done, so the work is not lost with the outage.
REDIS_OUTAGE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                OperationalError)
OUTAGE_ATTEMPTS = 3
# The wait stays well below the visibility timeout: past it the broker would hand the message
# to another worker while this one still holds it.
OUTAGE_WAIT_SECONDS = 40.0


class _PageDone(Exception):  # noqa: N818 - a signal, not an error
    """Raised from `on_page` to end a sweep after one page; its checkpoint is already stored."""


# One pipeline per (crm, routing file, state, broker) per process: the routing file is compiled,
# the state store connected and the CRM's users cached once, not per task.
_pipelines: dict[tuple[str, str, str, str], _Built] = {}
_pipelines_lock = threading.Lock()


@worker_process_init.connect
def _fresh_after_fork(**_: object) -> None:
    # Sockets and SQLite handles must not cross a fork: each pool process opens its own.
    with _pipelines_lock:
        _pipelines.clear()
    # Warm up beside the pool's own start: Celery kills a child whose init takes over 4 s, and
    # a CRM that is slow to answer must not cost us the worker.
    threading.Thread(target=warm_up, name="account-router-warm-up", daemon=True).start()


def configured_crms(settings: Settings) -> list[str]:
    """The CRMs this deployment has credentials for."""
    crms = []
    if settings.hubspot_access_token is not None:
        crms.append("hubspot")
    if settings.salesforce_instance_url:
        crms.append("salesforce")
    return crms


def warm_up(settings: Settings | None = None) -> list[str]:
    """Build each configured CRM's pipeline and read its owner directory now, so the first
    webhook after a deploy does not pay for compiling the routing file and listing users
    (hundreds of ms: it showed as the p99 of speed-to-lead). Returns the CRMs warmed; a
    failure is logged and left for the first task to meet again."""
    settings = settings or Settings()
    warmed: list[str] = []
    if not settings.config:
        return warmed
    for crm in configured_crms(settings):
        try:
            pipeline_for(crm, settings).users()
        except Exception as exc:  # noqa: BLE001 - the first real task reports it properly
            log.warning("warming up %s failed: %r", crm, exc)
        else:
            warmed.append(crm)
    return warmed


@dataclass
class _Built:
    pipeline: Pipeline
    stamp: Stamp  # of the routing file and its list files, taken before they were read
    refused: Stamp | None = None  # a broken edit already reported: not re-read every task


def _build(crm: str, settings: Settings, config: str, state_url: str) -> Pipeline:
    routing = load_routing(config, list_roots=settings.list_roots)
    store = open_store(state_url)
    try:
        # create_for: the connector also reads the fields this routing file's rules and field
        # maps name (`fields.<x>`), which a plain connector would leave out.
        connector = registry.create_for(crm, routing, settings)
    except Exception:
        store.close()
        raise
    return Pipeline(connector, routing, store, recheck_after=settings.recheck_after_seconds,
                    metrics=metrics_for(settings),
                    followers=followers_for(settings, store, routing, crm),
                    # Own-write marks live as long as the decisions they point to.
                    mark_ttl=timedelta(days=settings.history_retention_days))


def pipeline_for(crm: str, settings: Settings | None = None) -> Pipeline:
    """This process's pipeline for `crm`, built on first use from the environment, and built
    again when the routing file (or a list file it names) changes on disk. An edit that does
    not validate is logged once and the previous rules keep routing: a typo pushed to a running
    service must not stop it, and `account-router validate` says what is wrong."""
    settings = settings or Settings()
    config = settings.config
    if not config:
        raise ValueError("no routing file: set ACCOUNT_ROUTER_CONFIG")
    state_url = settings.resolved_state_url()
    key = (crm, config, state_url, settings.redis_url or "")
    with _pipelines_lock:
        built = _pipelines.get(key)
        if built is None:
            _pipelines[key] = built = _Built(*_build_stamped(crm, settings, config, state_url))
            return built.pipeline
        stamp = files_stamp(routing_files(config, built.pipeline.routing))
        if stamp in (built.stamp, built.refused):
            return built.pipeline
        try:
            fresh = _Built(*_build_stamped(crm, settings, config, state_url))
        except ConfigError as exc:
            built.refused = stamp
            log.error("routing file changed but cannot be used; still routing with the "
                      "previous version: %s", exc)
            return built.pipeline
        _pipelines[key] = fresh
        log.warning("routing file %s changed: %s now routes with the new rules", config, crm)
        built.pipeline.connector.close()
        built.pipeline.store.close()
        return fresh.pipeline


def _build_stamped(crm: str, settings: Settings, config: str, state_url: str
                   ) -> tuple[Pipeline, Stamp]:
    # The routing file is stamped before it is read: an edit landing during the read leaves a
    # stamp that no longer matches, so the next task reads the file again.
    before = files_stamp([Path(config)])
    pipeline = _build(crm, settings, config, state_url)
    return pipeline, before + files_stamp(routing_files(config, pipeline.routing))[1:]


def _park(pipeline: Pipeline, obj: str, ids: Sequence[str]) -> None:
    # The failed-writes set is retried first by every sweep, so parked ids are routed again
    # (idempotently: an id already written comes back as kept) once the CRM answers.
    pipeline.store.add_failed(pipeline.crm, obj, list(ids))


def run_route(crm: str, object: str, ids: Sequence[str], trigger: str) -> RunReport:
    """Route chosen ids now, in this process (a `route` task, or embedded mode)."""
    pipeline = pipeline_for(crm)
    obj = canonical_object(crm, object)
    try:
        return pipeline.route_ids(obj, ids, trigger=trigger)
    except QuotaExhausted:
        # Never sleep on a daily quota (docs/operations.md#daily-quotas): park the ids for the sweep
        # after reset.
        _park(pipeline, obj, ids)
        raise


def run_sweep_page(crm: str, object: str) -> bool:
    """One page of a sweep of `crm` `object`; True while the checkpoint holds a cursor."""
    pipeline = pipeline_for(crm)
    obj = canonical_object(crm, object)

    def one_page(_: RunReport) -> None:
        # `Pipeline.sweep` writes the owners it holds and stores the page's checkpoint
        # before this leaves it.
        raise _PageDone

    try:
        report = pipeline.sweep(obj, on_page=one_page)
    except _PageDone:
        pass
    else:
        # Only a quota stop returns without a page: the checkpoint stays, beat restarts later.
        if report.stopped:
            log.warning("sweep of %s %s stopped: %s", crm, obj, report.stopped)
        return False
    # The key `Pipeline.sweep` checkpoints under (sync/pipeline.py).
    saved = json.loads(pipeline.store.get_checkpoint(f"sweep:{pipeline.crm}:{obj}") or "null")
    return bool(saved and saved.get("cursor"))


@contextmanager
def _task_context(task: Task) -> Iterator[None]:
    """Every log line of the task (the pipeline's batch lines too) carries its `task_id`."""
    with structlog.contextvars.bound_contextvars(task_id=task.request.id, task=task.name):
        yield


def redis_answers(url: str, timeout: float, *, poll: float = 0.5,
                  sleep: Callable[[float], None] = time.sleep) -> bool:
    """True once Redis at `url` answers PING, False if it has not within `timeout` seconds."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1,
                                  retry=None)

    def ping() -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.RedisError:
            return False

    try:
        return Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(poll),
                        retry=retry_if_result(lambda answered: not answered),
                        retry_error_callback=lambda _: False, sleep=sleep)(ping)
    finally:
        client.close()


def outage_wait_seconds(settings: Settings) -> float:
    return min(OUTAGE_WAIT_SECONDS, 0.6 * settings.visibility_timeout)


def _outlasting_redis_outages(task: Task, body: Callable[[], None]) -> None:
    """Run `body`; when Redis drops out under it, wait for Redis and run it again.

    Every attempt locks records under one token, so the record locks a failed attempt could not
    release belong to the next attempt rather than parking its records until they expire.
    Redis still gone after the wait, or gone a third time: the message goes back to the queue
    (`Reject`), or, with the broker down too, waits in the broker's unacked set for its
    visibility timeout."""
    settings = Settings()
    urls = list(dict.fromkeys(u for u in (settings.redis_url, settings.resolved_state_url())
                              if u and u.startswith(("redis://", "rediss://", "unix://"))))
    wait = outage_wait_seconds(settings)

    def outage(state: RetryCallState) -> BaseException | None:
        return state.outcome.exception() if state.outcome is not None else None

    def wait_for_redis(state: RetryCallState) -> None:
        # tenacity's `after`: runs after every failed attempt, the last one too, so even the
        # final requeue is tried with Redis (the broker) back if it comes back in time.
        exc = outage(state)
        log.warning("task %s: Redis unreachable (attempt %d of %d): %r", task.name,
                    state.attempt_number, OUTAGE_ATTEMPTS, exc)
        if not urls or not all(redis_answers(u, wait) for u in urls):
            raise Reject(f"Redis unreachable: {exc!r}", requeue=True) from exc

    def requeue(state: RetryCallState) -> None:
        exc = outage(state)
        raise Reject(f"Redis unreachable: {exc!r}", requeue=True) from exc

    with Pipeline.locks_owned_by(uuid.uuid4().hex):
        Retrying(stop=stop_after_attempt(OUTAGE_ATTEMPTS),
                 retry=retry_if_exception_type(REDIS_OUTAGE), after=wait_for_redis,
                 retry_error_callback=requeue)(body)


@app.task(name=ROUTE_TASK, bind=True, max_retries=CRM_RETRIES)
def route(self: Task, crm: str, object: str, ids: list[str], trigger: str) -> None:
    """Route a batch of record ids (webhooks, reprocessing): one pipeline batch."""
    with _task_context(self):
        _outlasting_redis_outages(self, lambda: _route(self, crm, object, ids, trigger))


def _route(self: Task, crm: str, object: str, ids: list[str], trigger: str) -> None:
    try:
        run_route(crm, object, ids, trigger)
    except QuotaExhausted as exc:
        log.warning("route %s %s: %s; %d ids parked for the next sweep", crm, object, exc,
                    len(ids))
    except CrmUnavailable as exc:
        if self.request.retries >= CRM_RETRIES:
            pipeline = pipeline_for(crm)
            _park(pipeline, canonical_object(crm, object), ids)
            log.warning("route %s %s: %s; %d ids parked for the next sweep", crm, object, exc,
                        len(ids))
            return
        raise self.retry(exc=exc, countdown=CRM_RETRY_COUNTDOWN_SECONDS) from exc


def run_sla_check(settings: Settings | None = None, now: datetime | None = None
                  ) -> PassReport | None:
    """A first-touch SLA pass over this process's pipelines (one per configured CRM, sharing
    the state store); None when no routing file or CRM is configured."""
    settings = settings or Settings()
    crms = configured_crms(settings)
    if not settings.config or not crms:
        return None
    first = pipeline_for(crms[0], settings)

    def pipelines(crm: str) -> Pipeline | None:
        return pipeline_for(crm, settings) if crm in crms else None

    return check_pass(first.routing, first.store, pipelines, now,
                      metrics=metrics_for(settings),
                      notifier=notifier_for(settings, first.store, first.routing))


@app.task(name=SLA_CHECK_TASK, ignore_result=True)
def sla_check() -> dict[str, object] | None:
    """Beat's first-touch SLA pass (every minute). Overlapping passes are safe: each due
    entry is claimed by one of them (`StateStore.claim_due`)."""
    try:
        report = run_sla_check()
    except REDIS_OUTAGE as exc:
        # The next minute's pass takes the same entries once their claim lapses: none lost.
        log.warning("sla check: Redis unreachable (%s); the next pass retries",
                    type(exc).__name__)
        return None
    if report is not None and report.due:
        log.info("sla check: %s", json.dumps(report.to_dict()))
    return report.to_dict() if report is not None else None


@app.task(name=SWEEP_PAGE_TASK, bind=True)
def sweep_page(self: Task, crm: str, object: str, chain: str | None = None) -> None:
    """One page of a sweep, then the next page as a new task while a cursor remains.

    `chain` (a token, set by the previous page) is the chain lock's holder: each page hands the
    lock on to a fresh token and queues the next page with it. So a beat start arriving while a
    chain runs is dropped instead of racing it for the same checkpoint, and so is a page whose
    message comes back after it already handed on (its acknowledgement lost with a worker or a
    broker connection): it no longer holds the lock, and cannot fork a second chain."""
    with _task_context(self):
        step = _ChainStep()
        _outlasting_redis_outages(self, lambda: _sweep_page(self, crm, object, chain, step))


@dataclass
class _ChainStep:
    """What one run of a page did, kept across its reruns after a Redis outage."""

    handed_to: str | None = None  # the token the chain lock went to; its page still to queue


def _sweep_page(self: Task, crm: str, object: str, chain: str | None, step: _ChainStep
                ) -> None:
    pipeline = pipeline_for(crm)
    obj = canonical_object(crm, object)
    lock = f"sweep-chain:{pipeline.crm}:{obj}"
    if step.handed_to is None:
        # A first page redelivered after its worker died keeps its task id, so it still owns
        # the lock it took; a fresh uuid would find its own chain's lock held and drop the sweep.
        token = chain or self.request.id or uuid.uuid4().hex
        # Re-locking with the holder's own token refreshes the TTL (both stores do so).
        if lock not in pipeline.store.lock_records([lock], token, CHAIN_LOCK_TTL_SECONDS):
            log.info("sweep of %s %s already running (or this page already ran); dropped",
                     crm, obj)
            return
        try:
            more = run_sweep_page(crm, obj)
        except BaseException:
            pipeline.store.unlock_records([lock], token)
            raise
        pipeline.store.unlock_records([lock], token)
        if not more:
            return
        # Released, then taken under the next page's token. Not atomic, and need not be: a
        # start that takes the lock in between resumes from the same checkpoint, and the next
        # page, finding the lock taken, is simply not queued.
        handed_to = uuid.uuid4().hex
        if lock not in pipeline.store.lock_records([lock], handed_to, CHAIN_LOCK_TTL_SECONDS):
            log.info("sweep of %s %s taken over by another start", crm, obj)
            return
        step.handed_to = handed_to
    self.apply_async((crm, obj, step.handed_to), priority=SWEEP_PRIORITY)
