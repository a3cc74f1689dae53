"""`POST /route`: the decision API for records not in the CRM yet (a web form, an enrichment
pipeline), behind the bearer token: a real pool turn, audited with trigger `api`, idempotent by
key, and kept for the CRM record to claim when it appears.

See docs/operations.md#post-route.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)
from starlette.concurrency import run_in_threadpool

from connectors import registry
from sync.compiler import CompiledRouting
from sync.engine import CommitConflict
from sync.enrich import EnrichData
from sync.models import Decision, Record, TraceStep
from sync.pipeline import to_record
from sync.ports import CrmRecord, CrmSpec
from sync.precreate import OWNER_OUTCOMES, precreated
from sync.state.base import Precreated
from tasks.http.common import AppContext, Ctx, Rejected, check_text, log, require_token, store_call

router = APIRouter(tags=["route"], dependencies=[Depends(require_token)])

TRIGGER = "api"
# A form posts tens of fields; a few hundred leave room for custom properties while keeping one
# request's normalization cheap (the 1 MiB body limit bounds the rest).
MAX_FIELDS = 500
MAX_KEY_LENGTH = 255  # a record field's name
# The decision's record id is `api:<key>`: within the 255 characters any id in a request may
# have, so `GET /decisions/api:<key>` finds it.
MAX_IDEMPOTENCY_KEY = 200
# The claim on a key while its request is routed: far longer than one decision takes (a few
# milliseconds), short enough that a server killed mid-request frees the key soon.
CLAIM_SECONDS = 30.0
# How long a request waits for the answer of a concurrent one with the same key, and how often
# it looks: then 409, retry.
WAIT_SECONDS = 5.0
POLL_SECONDS = 0.01


def _scalar(value: Any) -> str | int | float | None:
    """A record field's value: a string, a number, true/false (as `true`/`false`, the way the
    CRMs spell booleans) or null; anything else is refused, naming the field."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise ValueError("must be a string, a number, true/false or null")


FieldName = Annotated[str, StringConstraints(strict=True),
                      AfterValidator(lambda v: check_text(v, MAX_KEY_LENGTH))]
FieldValue = Annotated[str | int | float | None, BeforeValidator(_scalar)]
Name = Annotated[str, StringConstraints(strict=True), AfterValidator(lambda v: check_text(v, 64))]
Key = Annotated[str, StringConstraints(strict=True),
                AfterValidator(lambda v: check_text(v, MAX_IDEMPOTENCY_KEY))]


class RouteBody(BaseModel):
    """`POST /route`: a record in the CRM's own field names for one of its objects."""

    model_config = ConfigDict(extra="forbid")

    crm: Name
    object: Name
    record: dict[FieldName, FieldValue] = Field(max_length=MAX_FIELDS)
    idempotency_key: Key


@router.post("/route")
async def route(body: RouteBody, ctx: Ctx) -> Response:
    answer = await run_in_threadpool(decide_once, ctx, body)
    return JSONResponse(answer)


def decide_once(ctx: AppContext, body: RouteBody) -> dict[str, Any]:
    """The answer for `body`: the one given before under its key (same request), else a new
    decision made and remembered. Runs off the event loop (store calls block)."""
    routing = ctx.routing()
    if routing is None:
        raise Rejected(503, "no usable routing file (ACCOUNT_ROUTER_CONFIG) to decide with",
                       "failed")
    spec, obj = _crm_object(body.crm, body.object)
    key = hashlib.blake2b(body.idempotency_key.encode("utf-8"), digest_size=16).hexdigest()
    fingerprint = _fingerprint(spec.name, obj, body.record)
    store = ctx.store
    # Of concurrent requests with one key, one claims it and decides; the others wait for its
    # answer. The claim is short (CLAIM_SECONDS): the answer, kept for precreate_ttl, is what
    # makes later requests idempotent. One store call for both (a round trip saved per request).
    claimed, stored = store_call(lambda: store.claim_answer(key, f"route:{key}", CLAIM_SECONDS))
    if stored is not None:
        return _replayed(stored, fingerprint)
    if not claimed:
        return _awaited(ctx, key, fingerprint)
    try:
        answer, entry = _decide(ctx, routing, spec, obj, body, key)
        ttl = routing.file.precreate_ttl.total_seconds()
        stored_answer = json.dumps({"fingerprint": fingerprint, "answer": answer},
                                   separators=(",", ":"))
        # The answer, and the decision kept for the record, in one store call.
        store_call(lambda: store.put_answer(key, stored_answer, ttl, entry))
    except BaseException:
        try:
            store.forget(f"route:{key}")  # let a retry decide
        except Exception as exc:  # noqa: BLE001 - the claim lapses by itself anyway
            log.error("could not release the claim on an idempotency key: %r", exc)
        raise
    return answer


def _crm_object(crm: str, obj: str) -> tuple[CrmSpec, str]:
    """The CRM's declaration and its object in the CRM's own spelling; 422 naming the field."""
    # `spec` finds a built-in without reading the installed packages' entry points (that
    # read costs tens of milliseconds: not once per request); only a miss lists them all.
    try:
        spec = registry.spec(crm)
    except ValueError:
        spec = None
    if spec is None or not spec.factory:
        raise Rejected(422, f"crm: unknown CRM {crm!r} (expected one of: "
                       f"{', '.join(registry.names())})", "invalid")
    try:
        return spec, spec.canonical_object(obj)
    except ValueError as exc:
        raise Rejected(422, f"object: {exc}", "invalid") from exc


def _fingerprint(crm: str, obj: str, record: dict[str, Any]) -> str:
    """What makes two requests the same request (a retry), whatever the key order."""
    text = json.dumps([crm, obj, record], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _replayed(stored: str, fingerprint: str) -> dict[str, Any]:
    data = json.loads(stored)
    if data.get("fingerprint") != fingerprint:
        raise Rejected(422, "idempotency_key: already used for a different request (another "
                       "crm, object or record)", "invalid")
    answer: dict[str, Any] = data["answer"]
    return answer


def _awaited(ctx: AppContext, key: str, fingerprint: str,
             sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """The answer of the concurrent request that holds the key's claim, once it is there."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        sleep(POLL_SECONDS)
        stored = store_call(lambda: ctx.store.answer(key))
        if stored is not None:
            return _replayed(stored, fingerprint)
    raise Rejected(409, "idempotency_key: a request with this key is still being routed; "
                   "retry", "busy")


def _decide(ctx: AppContext, routing: CompiledRouting, spec: CrmSpec, obj: str,
            body: RouteBody, key: str) -> tuple[dict[str, Any], Precreated | None]:
    """Decide the record with a real pool turn (the pipeline's engine: compare-and-set on the
    state store) and audit it: the answer, and the entry to keep for the CRM record when the
    decision gives it an owner or holds a proposal for review (no review item yet: there is
    no record to write until it appears)."""
    now = datetime.fromtimestamp(ctx.clock(), UTC)
    props = dict(body.record)
    # The record does not exist in the CRM: it has no owner to keep, whatever the form says.
    owner_field = spec.field_map(obj, routing.file.field_maps).get("owner")
    if owner_field is not None:
        props.pop(owner_field, None)
    try:
        record = to_record(spec, routing, obj, CrmRecord(
            f"{TRIGGER}:{body.idempotency_key}", obj, props, created_at=now))
    except ValueError as exc:
        raise Rejected(422, f"record: {exc}", "invalid") from exc
    enriched: dict[str, tuple[TraceStep, ...]] = {}
    owners: dict[str, str] | None = None
    if _reads_crm(routing, record):
        # `company_match`, or a lead that may follow its company's owner (`account_owner`):
        # the CRM's accounts read as the workers read them, bounded; when the CRM does not
        # answer in time the trace says what was skipped.
        records, owners, enriched = ctx.account_lookup.prepare(
            ctx.settings, routing, spec.name, [record])
        record = records[0]
    elif routing.enrichment is not None:
        # The routing file's steps, as the workers run them: no CRM read needed.
        records, enriched = routing.enrichment.run_all([record], EnrichData())
        record = records[0]
    turn = ctx.decider.submit(record, routing, crm=spec.name, trigger=TRIGGER,
                              enriched=enriched, account_owners=owners)
    decision: Decision = store_call(lambda: _taken(turn))
    ctx.metrics.decision(str(decision.outcome), decision.rule)
    entry = precreated(key, spec.name, obj, record, decision, routing.file.precreate_ttl)
    return answer_of(decision, routing), entry


def _reads_crm(routing: CompiledRouting, record: Record) -> bool:
    """Whether deciding `record` needs the CRM's accounts: a `company_match` step, or a rule
    following the account owner for a lead with a company domain (what the workers read)."""
    if routing.enrichment is not None and routing.enrichment.needs_accounts:
        return True
    return (routing.uses_account_owner and record.object != "account"
            and bool(record.domain) and not record.freemail)


def _taken(turn: Future[Decision]) -> Decision:
    """The decision once its batch committed; a store failure raises for `store_call` (503)."""
    try:
        return turn.result(timeout=CLAIM_SECONDS)
    except CommitConflict as exc:
        raise Rejected(503, "pools too contended right now; retry", "failed") from exc
    except FutureTimeout as exc:
        raise Rejected(503, "the state store did not answer in time; retry", "failed") from exc


def answer_of(decision: Decision, routing: CompiledRouting) -> dict[str, Any]:
    """The answer's JSON (docs/operations.md#post-route): `owner` null unless the decision
    gives the record one. A proposal held for review gives none yet: the record is to be
    created without an owner, and reviewed when it appears (the proposal is in the reason)."""
    owner = None
    if decision.outcome in OWNER_OUTCOMES and decision.owner is not None:
        rep = routing.reps.get(decision.owner)
        owner = {"id": decision.owner, "name": rep.name if rep else None,
                 "email": rep.email if rep else None, "crm_id": decision.owner_crm_id}
    return {
        "owner": owner,
        "outcome": str(decision.outcome),
        "rule": decision.rule,
        "reason": decision.reason,
        "trace": [step.to_dict() for step in decision.trace],
        "decided_at": decision.decided_at.isoformat() if decision.decided_at else None,
    }

