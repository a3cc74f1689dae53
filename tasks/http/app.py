"""`create_app`: assembles the HTTP app from its routers (webhooks, ops API, POST /route, health
and metrics); webhooks only hand record ids to the queue, and the only routing in this process
is POST /route's, for records not in the CRM yet."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter
from starlette.exceptions import HTTPException

from connectors.settings import Settings
from sync.history import History
from sync.state.base import StateStore
from tasks.dashboard import for_serve, mount
from tasks.http import health, hubspot, ops, review, route, salesforce
from tasks.http.common import (
    AppContext,
    BodyLimit,
    Enqueue,
    Rejected,
    first_error,
    log,
    redact,
)
from tasks.http.routing import ServedRouting
from tasks.metrics import AnyMetrics, Broker, HistoryOutbox, metrics_for

# Each webhook holds a worker thread until its batch is in the broker (up to the batch window,
# ACCOUNT_ROUTER_BATCH_WINDOW_MS): at 1,000 requests/s and 100 ms that is 100 threads, more than
# AnyIO's default of 40, which would queue requests behind the window instead of batching them.
ENQUEUE_THREADS = 200
# A body not fully arrived by then is refused (408): HubSpot and Salesforce send theirs at once,
# and a client that sends headers and then nothing must not hold a connection and a task.
BODY_TIMEOUT_SECONDS = 10.0


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    anyio.to_thread.current_default_thread_limiter().total_tokens = ENQUEUE_THREADS
    yield
    app.state.ctx.account_lookup.close()  # POST /route's CRM connectors, if it made any
    app.state.ctx.decider.flush()  # POST /route's decisions not counted yet


def create_app(
    settings: Settings,
    store: StateStore,
    enqueue: Enqueue,
    *,
    clock: Callable[[], float] = time.time,
    metrics: AnyMetrics | None = None,
    broker: Broker | None = None,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    history: History | None = None,
) -> FastAPI:
    """The app over one store and one enqueue callable; routing never runs in this process.

    `/metrics` serves this app's webhook counter, the shared pipeline series of `metrics`
    (default `metrics_for(settings)`: Redis-backed, so every worker process's counts show), and
    the queue gauges of `broker` (default: the Celery broker at `settings.redis_url`; none in
    embedded mode, where the queue is this process's executor and the gauges are left out).
    `history` (default: opened on first use, see `AppContext.history`) serves
    `GET /decisions/{id}` and the dashboard (`/`, `/dashboard/...`), whose retry hands ids to
    `enqueue`."""
    shared = metrics if metrics is not None else metrics_for(settings)
    if broker is None and settings.redis_url:
        broker = Broker(settings.redis_url)
    registry = CollectorRegistry()
    registry.register(shared.collector())
    if broker is not None:
        registry.register(broker.collector())
    state_url = settings.resolved_state_url()
    if state_url.startswith(("redis://", "rediss://")):
        registry.register(HistoryOutbox(state_url))
    events_total = Counter(
        "account_router_webhook_events", "Webhook events by outcome (rejected: per request).",
        ["crm", "result"], registry=registry,
    )

    def count(crm: str, result: str, n: int = 1) -> None:
        if n:
            events_total.labels(crm=crm, result=result).inc(n)

    def body_refused(path: str, result: str) -> None:
        for crm in ("hubspot", "salesforce"):
            if path.startswith(f"/webhooks/{crm}"):
                count(crm, result)

    # redirect_slashes off: Starlette builds the redirect for `/healthz/` from the request's
    # Host header, so anyone could make this app point a client at any host.
    app = FastAPI(title="account-router", lifespan=_lifespan, redirect_slashes=False)
    app.state.ctx = AppContext(settings=settings, store=store, enqueue=enqueue, clock=clock,
                               count=count, broker=broker, registry=registry, metrics=shared,
                               routing=ServedRouting(settings.config,
                                                    settings.list_roots))
    # POST /route answered inside BodyLimit, ahead of the router (tasks/http/route.py).
    app.add_middleware(route.RouteEndpoint)
    app.add_middleware(BodyLimit, timeout=body_timeout, on_reject=body_refused)
    for router in (hubspot.router, salesforce.router, ops.router, review.router,
                   route.router, health.router):
        app.include_router(router)
    ctx: AppContext = app.state.ctx
    ctx.history_db = history
    mount(app, for_serve(settings, store, ctx.history, ctx.routing,
                         lambda crm, obj, ids: ctx.hand_over(crm, {obj: ids}, "reprocess"),
                         clock=clock))
    _handle_errors(app)
    salesforce.warn_if_off(settings)
    return app


def _handle_errors(app: FastAPI) -> None:
    """Every refusal as `{"error": message}`; nothing ever a 500."""

    @app.exception_handler(Rejected)
    async def _rejected(request: Request, exc: Rejected) -> Response:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return JSONResponse({"error": first_error(exc.errors())}, status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # A bug must not look like a server crash to the CRM's retry logic: 503 asks it to retry.
        log.exception("unexpected error on %s %s", request.method, redact(request.url.path))
        return JSONResponse({"error": "temporarily unavailable"}, status_code=503)
