"""The ops API: reprocess ids, read decisions, pause and resume reps, behind the bearer token.

See docs/operations.md#ops-api-authentication (ACCOUNT_ROUTER_API_TOKEN).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse, Response
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
)
from starlette.concurrency import run_in_threadpool

from connectors import registry
from connectors.registry import canonical_object
from sync.models import Decision
from sync.pipeline import Pipeline, RunReport
from sync.ports import CredentialsError, CrmError
from tasks.http.common import (
    AppContext,
    Ctx,
    Rejected,
    check_text,
    history_call,
    require_token,
    store_call,
)

log = logging.getLogger("tasks.http")

MAX_REPROCESS_IDS = 1000
# A dry run reads its records from the CRM while the request waits: one batch read (HubSpot
# and Salesforce batch reads take 100 ids), a second or so.
MAX_DRY_RUN_IDS = 100

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
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError("is out of range once in UTC (years 1 to 9999)") from exc


# Ids from a body (strict: 1 is not "1") and from the path; none empty, over 255 characters,
# or holding a control character or a lone surrogate.
RecordId = Annotated[str, StringConstraints(strict=True, strip_whitespace=True),
                     AfterValidator(check_text)]
PathId = Annotated[str, Path(), AfterValidator(check_text)]
Name = Annotated[str, StringConstraints(strict=True), AfterValidator(lambda v: check_text(v, 64))]
Instant = Annotated[datetime | None, BeforeValidator(_instant)]


class ReprocessBody(BaseModel):
    """`POST /reprocess`: ids of one CRM object to route again."""

    model_config = ConfigDict(extra="forbid")

    crm: Name
    object: Name
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
        if len(unique) > MAX_DRY_RUN_IDS:
            raise Rejected(413, f"a dry run takes at most {MAX_DRY_RUN_IDS} ids ({len(unique)} "
                           "given): split them, or reprocess without dry_run", "too_large")
        decisions = await run_in_threadpool(dry_run, ctx, crm, obj, unique)
        return JSONResponse({"dry_run": True, "crm": crm, "object": obj,
                             "decisions": [d.to_dict() for d in decisions]})
    await run_in_threadpool(ctx.hand_over, crm, {obj: unique}, "reprocess")
    return JSONResponse({"enqueued": len(unique), "crm": crm, "object": obj}, status_code=202)


@dataclass
class _Collected(RunReport):
    """A run report that also keeps every decision, in the order the pipeline made them."""

    decisions: list[Decision] = field(default_factory=list)

    def add(self, decision: Decision) -> None:
        super().add(decision)
        self.decisions.append(decision)


def dry_run(ctx: AppContext, crm: str, obj: str, ids: list[str]) -> list[Decision]:
    """The decisions reprocessing `ids` would make now, in the order of `ids`: the pipeline
    built as the workers build it (tasks/worker.py), over the routing file this app serves,
    with `dry_run` set: it reads the CRM, takes no pool turn, writes nothing to the CRM or the
    state store, audits nothing."""
    routing = ctx.routing()
    if routing is None:
        raise Rejected(503, "no usable routing file (ACCOUNT_ROUTER_CONFIG) to decide with",
                       "failed")
    settings = ctx.settings
    try:
        connector = registry.create_for(crm, routing, settings)
    except (ValueError, CredentialsError) as exc:
        raise Rejected(400, f"{crm} is not configured here: {exc}", "invalid") from exc
    report = _Collected(crm, obj)
    try:
        pipeline = Pipeline(connector, routing, ctx.store, dry_run=True,
                            recheck_after=settings.recheck_after_seconds, metrics=ctx.metrics)
        pipeline.route_ids(obj, ids, trigger="reprocess", report=report)
    except CrmError as exc:
        log.error("dry run on %s %s failed: %s", crm, obj, exc)
        raise Rejected(503, f"{crm} unavailable; retry later", "failed") from exc
    finally:
        connector.close()
    order = {record_id: i for i, record_id in enumerate(ids)}
    return sorted(report.decisions, key=lambda d: order.get(d.record_id, len(order)))


@router.get("/decisions/{record_id}")
async def decisions(
    record_id: PathId,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    found = await run_in_threadpool(
        history_call, lambda: ctx.history().decisions(record_id=record_id, limit=limit))
    return JSONResponse([d.to_dict() for d in found])


@router.post("/reps/{rep}/pause")
async def pause(rep: PathId, ctx: Ctx, body: PauseBody | None = None) -> Response:
    if not await run_in_threadpool(_known, ctx, rep):
        raise _unknown(ctx, rep)
    until = body.until if body is not None else None
    await run_in_threadpool(store_call, lambda: ctx.store.pause(rep, until))
    return JSONResponse({"rep": rep, "paused": True,
                         "until": None if until is None else until.isoformat()})


@router.post("/reps/{rep}/resume")
async def resume(rep: PathId, ctx: Ctx) -> Response:
    # A rep removed from the routing file since its pause can still be resumed.
    known = await run_in_threadpool(_known, ctx, rep)
    was_paused = await run_in_threadpool(store_call, lambda: ctx.store.resume(rep))
    if not known and not was_paused:
        raise _unknown(ctx, rep)
    return JSONResponse({"rep": rep, "resumed": bool(was_paused)})


def _known(ctx: AppContext, rep: str) -> bool:
    """Whether the routing file served names `rep` (a pause of anyone else would be kept and
    shown, yet route nothing)."""
    routing = ctx.routing()
    return routing is not None and rep in routing.reps


def _unknown(ctx: AppContext, rep: str) -> Rejected:
    if not ctx.settings.config:
        return Rejected(404, f"unknown rep {rep!r}: no routing file (ACCOUNT_ROUTER_CONFIG) "
                        "names the reps", "unknown")
    return Rejected(404, f"unknown rep {rep!r}: not in the routing file", "unknown")
