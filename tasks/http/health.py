"""Health and metrics: `GET /healthz` (state store and broker) and `GET /metrics`."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from tasks.http.common import AppContext, Ctx, Rejected, store_call

log = logging.getLogger("tasks.http")

router = APIRouter(tags=["health"])


def _check_state(ctx: AppContext) -> str:
    try:
        store_call(lambda: ctx.store.pauses(datetime.now(UTC)))
    except Rejected:
        return "unavailable"
    return "ok"


def _check_broker(ctx: AppContext) -> str:
    if ctx.broker is None:
        return "embedded"  # no broker: enqueued work runs on this process's executor
    try:
        ctx.broker.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means webhooks cannot enqueue
        log.error("broker unreachable: %r", exc)
        return "unavailable"
    return "ok"


@router.get("/healthz")
async def healthz(ctx: Ctx) -> Response:
    # Checked side by side: the broker and the state store may be different Redis servers
    # (ACCOUNT_ROUTER_STATE_URL), and a slow one should not add its timeout to the other's.
    state, queue = await asyncio.gather(run_in_threadpool(_check_state, ctx),
                                        run_in_threadpool(_check_broker, ctx))
    healthy = state == "ok" and queue in ("ok", "embedded")
    # "state" (the store) is the key this endpoint always answered; "checks" has them all.
    return JSONResponse({"state": state, "checks": {"state": state, "broker": queue}},
                        status_code=200 if healthy else 503)


@router.get("/metrics")
async def metrics_page(ctx: Ctx) -> Response:
    try:
        body = await run_in_threadpool(generate_latest, ctx.registry)  # Redis: blocking I/O
    except Exception as exc:  # noqa: BLE001 - an unreachable Redis is a 503, never a 500
        log.error("metrics unavailable: %r", exc)
        return JSONResponse({"error": "metrics unavailable"}, status_code=503)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
