"""`/__simulator__/*` routes both apps share: stats, faults, limits; never faulted or counted."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from connectors.simulator.core import Simulator

CONTROL_PREFIX = "/__simulator__/"


async def json_body(request: Request) -> Any:
    """The request's JSON body; ValueError when it is missing or not JSON."""
    raw = await request.body()
    if not raw:
        raise ValueError("empty body")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from exc


async def stall(request: Request, seconds: float) -> None:
    """Sleep `seconds` (a latency or timeout fault), cut short when the server is stopping so
    stop() stays fast and nothing is cancelled mid-request."""
    stopping: threading.Event = request.app.state.stopping
    end = time.monotonic() + seconds
    while not stopping.is_set():
        left = end - time.monotonic()
        if left <= 0:
            return
        await asyncio.sleep(min(0.05, left))


def add_control_routes(app: FastAPI, sim: Simulator, vendor: str) -> None:
    """Mount the control routes; also gives the app the `stopping` flag `stall` watches."""
    app.state.stopping = threading.Event()

    async def configure(request: Request, apply: Callable[..., Any]) -> Response:
        try:
            body = await json_body(request)
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            return JSONResponse(apply(**body))
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    @app.get(CONTROL_PREFIX + "stats")
    def stats() -> JSONResponse:
        return JSONResponse(sim.stats(vendor))

    @app.get(CONTROL_PREFIX + "faults")
    def faults() -> JSONResponse:
        return JSONResponse(dataclasses.asdict(sim.faults))

    @app.post(CONTROL_PREFIX + "faults")
    async def set_faults(request: Request) -> Response:
        return await configure(request, lambda **kw: dataclasses.asdict(
            sim.configure_faults(**kw)))

    @app.post(CONTROL_PREFIX + "limits")
    async def set_limits(request: Request) -> Response:
        return await configure(request, sim.configure_limits)

    @app.post(CONTROL_PREFIX + "touch")
    async def touch(request: Request) -> Response:
        # A rep works a record: `{"object": "companies", "id": "1001"}`, optional `at` (epoch
        # ms) and `value`; answers the touch field's new value.
        def apply(object: str, id: str, at: int | None = None,
                  value: str | None = None) -> dict[str, str]:
            try:
                return {"value": sim.touch(vendor, object, str(id), at_ms=at, value=value)}
            except KeyError as exc:
                raise ValueError(f"no {vendor} {object} record {exc}") from None
        return await configure(request, apply)

    @app.post(CONTROL_PREFIX + "reset_stats")
    def reset_stats() -> Response:
        sim.reset_stats()
        return Response(status_code=204)

    @app.post(CONTROL_PREFIX + "reset_daily")
    def reset_daily() -> Response:
        sim.reset_daily()
        return Response(status_code=204)
