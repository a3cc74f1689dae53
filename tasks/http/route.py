"""`POST /route`: the decision API for records not in the CRM yet (a web form, an enrichment
pipeline), behind the bearer token: a real pool turn, audited with trigger `api`, idempotent by
key, and kept for the CRM record to claim when it appears.

See docs/operations.md#post-route.
"""

from __future__ import annotations

import asyncio
import email.message
import hashlib
import json
import math
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from functools import lru_cache, partial
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
    ValidationError,
)
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from connectors import registry
from sync.compiler import CompiledRouting
from sync.engine import CommitConflict
from sync.enrich import EnrichData
from sync.models import Decision, Record, TraceStep
from sync.pipeline import to_record
from sync.ports import CrmRecord, CrmSpec
from sync.precreate import OWNER_OUTCOMES, precreated
from tasks.decider import Prepared
from tasks.http.common import (
    AppContext,
    Ctx,
    Rejected,
    check_text,
    check_token,
    first_error,
    log,
    require_token,
    store_call,
)

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
    """Documents the endpoint (OpenAPI); `RouteEndpoint`, in front of the router, answers it."""
    answer = await run_in_threadpool(decide_once, ctx, body)
    return JSONResponse(answer)


class RouteEndpoint:
    """ASGI middleware answering `POST /route` ahead of the framework's router, dependencies
    and response classes, with the same answers as the route above: 401 without the token,
    the body (already bounded by `BodyLimit`) parsed as FastAPI parses it, 400 naming the
    field, the decision as JSON. Those layers cost much of a request's CPU (README,
    benchmarks: route_api.py); every other request passes through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/route" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        ctx: AppContext = scope["app"].state.ctx
        try:
            check_token(ctx, _header(scope, b"authorization"))
            body = _parsed(await _body(receive), _header(scope, b"content-type"))
            answer = await decided(ctx, body)
        except Rejected as exc:
            await exc.response()(scope, receive, send)
            return
        except Exception:  # noqa: BLE001 - as the app's handler: a bug is a 503, never a 500
            log.exception("unexpected error on POST /route")
            await JSONResponse({"error": "temporarily unavailable"}, status_code=503)(
                scope, receive, send)
            return
        # As JSONResponse renders it, without building one.
        payload = json.dumps(answer, ensure_ascii=False, allow_nan=False,
                             separators=(",", ":")).encode("utf-8")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(payload)).encode("latin-1")),
                                (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})


def _header(scope: Scope, name: bytes) -> str:
    """The first header `name` (lower case), as Starlette decodes it; "" when absent."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise Rejected(400, "request body incomplete", "invalid")  # the client left
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


@lru_cache(maxsize=64)
def _is_json(content_type: str) -> bool:
    """FastAPI's test: `application/json` or `application/*+json`, parameters aside."""
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def _parsed(raw: bytes, content_type: str) -> RouteBody:
    """The body as FastAPI reads it for a `RouteBody` parameter: JSON only when the content
    type says so (else the bytes, refused as not an object), errors located under `body`."""
    value: Any = raw
    if not raw:
        raise Rejected(400, "body: Field required", "invalid")
    if content_type and _is_json(content_type):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise Rejected(400, f"body.{exc.pos}: JSON decode error", "invalid") from exc
        except (ValueError, RecursionError) as exc:  # not UTF-8, or nested too deep
            raise Rejected(400, "There was an error parsing the body", "invalid") from exc
    try:
        return RouteBody.model_validate(value, from_attributes=True)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise Rejected(400, first_error(errors), "invalid") from exc


def decide_once(ctx: AppContext, body: RouteBody) -> dict[str, Any]:
    """The answer for `body`: the one given before under its key (same request), else a new
    decision made and remembered. Blocks (store calls, the pool turn): not on the event loop."""
    turn = _RouteTurn(ctx, body, *_crm_object(body.crm, body.object))
    future = ctx.decider.submit_turn(turn, trigger=TRIGGER)
    result = store_call(lambda: _taken(future))
    if result is _READS_CRM:
        return turn.decide_here()
    return _settled(turn, result)


async def decided(ctx: AppContext, body: RouteBody) -> dict[str, Any]:
    """`decide_once` for the event loop: the request's store calls run on the decider's
    thread with its batch, and nothing holds a thread while the request waits."""
    if body.crm in registry.BUILTIN:
        crm_object = _crm_object(body.crm, body.object)  # a dict lookup
    else:
        # Not on the loop, nor on the decider's thread: this reads the installed packages'
        # entry points (tens of milliseconds).
        crm_object = await run_in_threadpool(_crm_object, body.crm, body.object)
    turn = _RouteTurn(ctx, body, *crm_object)
    future = ctx.decider.submit_turn(turn, trigger=TRIGGER)
    try:
        result = await asyncio.wait_for(asyncio.wrap_future(future), CLAIM_SECONDS)
    except Exception as exc:  # noqa: BLE001 - answered as `decide_once` answers it
        result = store_call(partial(_taken_error, exc))
    if result is _READS_CRM:
        return await run_in_threadpool(turn.decide_here)
    if result is _HELD:
        return await run_in_threadpool(_settled, turn, result)
    answer: dict[str, Any] = result
    return answer


def _settled(turn: _RouteTurn, result: Any) -> dict[str, Any]:
    if result is _HELD:
        return _awaited(turn.ctx, turn.key, turn.fingerprint)
    answer: dict[str, Any] = result
    return answer


# `_RouteTurn.prepare`'s answers without a record: a concurrent request holds the key's claim
# (wait for its answer); deciding the record needs the CRM's accounts (`decide_here`).
_HELD = object()
_READS_CRM = object()


class _RouteTurn:
    """One request's work around its pool turn (`tasks.decider.Turn`): claim the key, or
    replay its answer; then the decision's answer, and the entry kept for the record."""

    def __init__(self, ctx: AppContext, body: RouteBody, spec: CrmSpec, obj: str) -> None:
        self.ctx, self.body, self.spec, self.obj = ctx, body, spec, obj
        self.key = hashlib.blake2b(body.idempotency_key.encode("utf-8"),
                                   digest_size=16).hexdigest()
        self.fingerprint = _fingerprint(spec.name, obj, body.record)
        self.record: Record | None = None
        self.routing: CompiledRouting | None = None

    def prepare(self) -> Prepared | Any:
        """On the decider's thread: the claim, then the record, unless deciding it needs the
        CRM's accounts (a bounded wait every request would share: `decide_here`)."""
        # The routing file is read here, off the event loop (it stats the files).
        routing = self.ctx.routing()
        if routing is None:
            raise Rejected(503, "no usable routing file (ACCOUNT_ROUTER_CONFIG) to decide "
                           "with", "failed")
        self.routing, spec, obj = routing, self.spec, self.obj
        store, key = self.ctx.store, self.key
        # Of concurrent requests with one key, one claims it and decides; the others wait for
        # its answer. The claim is short (CLAIM_SECONDS): the answer, kept for precreate_ttl,
        # is what makes later requests idempotent. One store call for both (a round trip
        # saved per request).
        claimed, stored = store_call(lambda: store.claim_answer(key, f"route:{key}",
                                                                CLAIM_SECONDS))
        if stored is not None:
            return _replayed(stored, self.fingerprint)
        if not claimed:
            return _HELD
        try:
            self.record = record = self._record(routing, spec, obj)
            if _reads_crm(routing, record):
                return _READS_CRM  # the claim stays held for `decide_here`
            enriched: tuple[TraceStep, ...] = ()
            if routing.enrichment is not None:
                # The routing file's steps, as the workers run them: no CRM read needed.
                records, steps = routing.enrichment.run_all([record], EnrichData())
                self.record = record = records[0]
                enriched = steps.get(record.id, ())
        except BaseException:
            self.abandon()
            raise
        return Prepared(record, routing, spec.name, enriched)

    def decide_here(self) -> dict[str, Any]:
        """After `prepare` answered `_READS_CRM`, on the request's own thread: `company_match`,
        or a lead that may follow its company's owner (`account_owner`): the CRM's accounts
        read as the workers read them, bounded (when the CRM does not answer in time the
        trace says what was skipped), then a plain decider turn."""
        ctx, routing, record = self.ctx, self.routing, self.record
        assert routing is not None and record is not None  # prepared
        try:
            records, owners, enriched = ctx.account_lookup.prepare(
                ctx.settings, routing, self.spec.name, [record])
            self.record = records[0]
            future = ctx.decider.submit(self.record, routing, crm=self.spec.name,
                                        trigger=TRIGGER, enriched=enriched,
                                        account_owners=owners)
            decision: Decision = store_call(lambda: _taken(future))
        except BaseException:
            self.abandon()
            raise
        return self.settle(decision)

    def settle(self, decision: Decision) -> dict[str, Any]:
        routing, record = self.routing, self.record
        assert routing is not None and record is not None  # prepared
        try:
            answer = answer_of(decision, routing)
            entry = precreated(self.key, self.spec.name, self.obj, record, decision,
                               routing.file.precreate_ttl)
            stored = json.dumps({"fingerprint": self.fingerprint, "answer": answer},
                                separators=(",", ":"))
            ttl = routing.file.precreate_ttl.total_seconds()
            # The answer, and the decision kept for the record, in one store call.
            store_call(lambda: self.ctx.store.put_answer(self.key, stored, ttl, entry))
        except BaseException:
            self.abandon()
            raise
        return answer

    def abandon(self) -> None:
        try:
            self.ctx.store.forget(f"route:{self.key}")  # let a retry decide
        except Exception as exc:  # noqa: BLE001 - the claim lapses by itself anyway
            log.error("could not release the claim on an idempotency key: %r", exc)

    def _record(self, routing: CompiledRouting, spec: CrmSpec, obj: str) -> Record:
        """The record as the pipeline reads it (not enriched yet)."""
        body = self.body
        now = datetime.fromtimestamp(self.ctx.clock(), UTC)
        props = dict(body.record)
        # The record does not exist in the CRM: it has no owner to keep, whatever the form
        # says.
        owner_field = spec.field_map(obj, routing.file.field_maps).get("owner")
        if owner_field is not None:
            props.pop(owner_field, None)
        try:
            return to_record(spec, routing, obj, CrmRecord(
                f"{TRIGGER}:{body.idempotency_key}", obj, props, created_at=now))
        except ValueError as exc:
            raise Rejected(422, f"record: {exc}", "invalid") from exc


def _reads_crm(routing: CompiledRouting, record: Record) -> bool:
    """Whether deciding `record` needs the CRM's accounts: a `company_match` step, or a rule
    following the account owner for a lead with a company domain (what the workers read)."""
    if routing.enrichment is not None and routing.enrichment.needs_accounts:
        return True
    return (routing.uses_account_owner and record.object != "account"
            and bool(record.domain) and not record.freemail)


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


def _taken(future: Future[Any]) -> Any:
    """The turn's result once its batch committed; a store failure raises for `store_call`
    (503)."""
    try:
        return future.result(timeout=CLAIM_SECONDS)
    except Exception as exc:  # noqa: BLE001 - mapped below
        return _taken_error(exc)


def _taken_error(exc: Exception) -> Any:
    if isinstance(exc, CommitConflict):
        raise Rejected(503, "pools too contended right now; retry", "failed") from exc
    if isinstance(exc, TimeoutError):
        raise Rejected(503, "the state store did not answer in time; retry", "failed") from exc
    raise exc


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

