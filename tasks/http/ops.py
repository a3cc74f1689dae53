"""The ops API (DESIGN.md §5): reprocess ids, read a record's decisions, pause and resume
reps; every route behind the bearer token (ACCOUNT_ROUTER_API_TOKEN)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StringConstraints
from starlette.concurrency import run_in_threadpool

from connectors import registry
from sync.ports import canonical_object
from tasks.http.common import Ctx, Rejected, require_token, store_call

MAX_REPROCESS_IDS = 1000
MAX_ID_LENGTH = 255

router = APIRouter(tags=["ops"], dependencies=[Depends(require_token)])


def _instant(value: object) -> datetime | None:
    """An ISO 8601 instant with a UTC offset (`Z` accepted), in UTC; None stays None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 instant")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError("must be an ISO 8601 instant") from exc
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("needs a UTC offset (e.g. 2026-12-01T09:00:00Z)")
    return parsed.astimezone(UTC)


RecordId = Annotated[str, StringConstraints(strict=True, strip_whitespace=True, min_length=1,
                                           max_length=MAX_ID_LENGTH)]
Instant = Annotated[datetime | None, BeforeValidator(_instant)]


class ReprocessBody(BaseModel):
    """`POST /reprocess`: ids of one CRM object to route again."""

    model_config = ConfigDict(extra="forbid")

    crm: str
    object: str
    ids: list[RecordId] = Field(min_length=1, max_length=MAX_REPROCESS_IDS)
    dry_run: StrictBool = False


class PauseBody(BaseModel):
    """`POST /reps/{id}/pause`: optionally until an instant (else until resumed)."""

    model_config = ConfigDict(extra="forbid")

    until: Instant = None


def _crm_object(crm: str, obj: str) -> tuple[str, str]:
    """The CRM (one the connector registry knows) and its object in the CRM's own spelling."""
    if crm not in registry.names():
        raise Rejected(400, f"crm must be one of: {', '.join(registry.names())}", "invalid")
    try:
        return crm, canonical_object(crm, obj)
    except ValueError as exc:
        raise Rejected(400, str(exc), "invalid") from exc


@router.post("/reprocess", status_code=202)
async def reprocess(body: ReprocessBody, ctx: Ctx) -> Response:
    crm, obj = _crm_object(body.crm, body.object)
    unique = list(dict.fromkeys(body.ids))
    if body.dry_run:
        raise Rejected(400, "use the CLI for dry runs (`account-router reprocess "
                       "--dry-run`)", "invalid")
    await run_in_threadpool(ctx.hand_over, crm, {obj: unique}, "reprocess")
    return JSONResponse({"enqueued": len(unique), "crm": crm, "object": obj}, status_code=202)


@router.get("/decisions/{record_id}")
async def decisions(
    record_id: Annotated[str, Path(max_length=MAX_ID_LENGTH)],
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    found = await run_in_threadpool(
        store_call, lambda: ctx.store.decisions(record_id=record_id, limit=limit))
    return JSONResponse([d.to_dict() for d in found])


@router.post("/reps/{rep}/pause")
async def pause(rep: Annotated[str, Path(max_length=MAX_ID_LENGTH)], ctx: Ctx,
                body: PauseBody | None = None) -> Response:
    until = body.until if body is not None else None
    await run_in_threadpool(store_call, lambda: ctx.store.pause(rep, until))
    return JSONResponse({"rep": rep, "paused": True,
                         "until": None if until is None else until.isoformat()})


@router.post("/reps/{rep}/resume")
async def resume(rep: Annotated[str, Path(max_length=MAX_ID_LENGTH)],
                 ctx: Ctx) -> Response:
    was_paused = await run_in_threadpool(store_call, lambda: ctx.store.resume(rep))
    return JSONResponse({"rep": rep, "resumed": bool(was_paused)})
