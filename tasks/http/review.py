"""The review API: list held decisions, approve or reassign them, behind the bearer token.

See docs/operations.md#review-before-writing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints
from starlette.concurrency import run_in_threadpool

from sync import review
from tasks.http.common import (
    AppContext,
    Ctx,
    Rejected,
    check_text,
    log,
    require_token,
    store_call,
)
from tasks.http.ops import PathId
from tasks.review import act

router = APIRouter(tags=["review"], dependencies=[Depends(require_token)])

# A reviewer's refusal as HTTP: unknown item 404, decided (or being decided) 409, a rep that
# cannot take the record 422, the CRM or the record busy 503 (retry later; the item stays).
STATUS = {"unknown": 404, "decided": 409, "ineligible": 422, "unavailable": 503}
# Who acted, for the history: the API has one token, so the reviewer is the API itself.
API_REVIEWER = "api"

RepId = Annotated[str, StringConstraints(strict=True, strip_whitespace=True),
                  AfterValidator(lambda v: check_text(v, 64))]


class ApproveBody(BaseModel):
    """`POST /review/{id}/approve`: optionally who approves, for the history."""

    model_config = ConfigDict(extra="forbid")

    by: RepId | None = None


class ReassignBody(ApproveBody):
    """`POST /review/{id}/reassign`: the rep to write instead of the proposal."""

    rep: RepId


@router.get("/review")
async def list_items(ctx: Ctx) -> Response:
    items = await run_in_threadpool(store_call, ctx.store.reviews)
    return JSONResponse({"items": [review.listed(i) for i in items]})


@router.post("/review/{item_id}/approve")
async def approve(item_id: PathId, ctx: Ctx, body: ApproveBody | None = None) -> Response:
    return await _act(ctx, item_id, None, body.by if body is not None else None)


@router.post("/review/{item_id}/reassign")
async def reassign(item_id: PathId, body: ReassignBody, ctx: Ctx) -> Response:
    return await _act(ctx, item_id, body.rep, body.by)


async def _act(ctx: AppContext, item_id: str, rep: str | None, by: str | None) -> Response:
    routing = ctx.routing()
    if routing is None:
        raise Rejected(503, "no usable routing file (ACCOUNT_ROUTER_CONFIG) to review with",
                       "failed")
    done = await run_in_threadpool(_run, ctx, item_id, rep, by or API_REVIEWER)
    return JSONResponse(done.to_dict())


def _run(ctx: AppContext, item_id: str, rep: str | None, by: str) -> review.Reviewed:
    routing = ctx.routing()
    assert routing is not None  # checked by the caller
    try:
        return act(ctx.store, routing, ctx.settings, item_id, rep=rep, by=by,
                   now=datetime.now(UTC), metrics=ctx.metrics)
    except review.ReviewError as exc:
        raise Rejected(STATUS[exc.status], str(exc), exc.status) from exc
    except Exception as exc:  # noqa: BLE001 - the state store down: a 503, never a 500
        log.error("review action on %s failed: %r", item_id, exc)
        raise Rejected(503, "state store unavailable; retry later", "failed") from exc
