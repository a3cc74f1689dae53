"""HubSpot webhooks: authenticate (v3 signature) → validate → dedupe → enqueue.

See docs/operations.md#post-webhookshubspot and docs/connectors.md#the-built-in-connectors.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from starlette.concurrency import run_in_threadpool

from connectors import registry
from connectors.settings import Settings
from sync.compiler import CompiledRouting
from sync.normalize import id_key
from sync.overrides import Overrides, OwnerChange, Verdict
from tasks.http.common import (
    MAX_EVENTS,
    AppContext,
    Ctx,
    Rejected,
    check_text,
    same,
    secret_value,
)
from tasks.http.routing import routed_properties

log = logging.getLogger("tasks.http")

# docs/operations.md#post-webhookshubspot: reject timestamps older than 5 minutes
SIGNATURE_MAX_AGE_MS = 5 * 60 * 1000
DEDUPE_TTL_SECONDS = 24 * 3600  # HubSpot retries a delivery for up to 24 h

# HubSpot objects this router handles: the event type's prefix -> the CRM object name.
HUBSPOT_OBJECTS = {"company": "companies", "contact": "contacts"}
# Bounds of what an event may carry: HubSpot's ids are 64-bit integers, its instants epoch
# milliseconds; a 4,000-digit id or a 900 KB event id would otherwise be kept (24 h in Redis).
MAX_INTEGER = 2**63 - 1
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant Python has
MAX_NAME_LENGTH = 100  # event ids, subscription types, property names
MAX_VALUE_LENGTH = 1000  # a propertyValue (only owner ids are read)
# HubSpot's v3 spec: these escapes in the request URI are decoded before signing.
_HUBSPOT_URI_DECODE = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$", "%27": "'",
    "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}

router = APIRouter(tags=["webhooks"])


@dataclass(frozen=True, slots=True)
class HubSpotEvent:
    """One validated webhook event."""

    object_id: str
    type: str  # e.g. `company.propertyChange`
    event_id: str
    occurred_at: int
    property_name: str | None
    # propertyChange events: the new value ("" when cleared), and how and by whom HubSpot
    # says it changed (`changeSource` e.g. CRM_UI, INTEGRATION; `sourceId` e.g. userId:123).
    property_value: str | None = None
    change_source: str | None = None
    source_id: str | None = None
    has_value: bool = False  # the event carried `propertyValue` (older apps may not)

    @property
    def object(self) -> str | None:
        """The CRM object this router handles for the event, or None (deals, tickets, ...)."""
        return HUBSPOT_OBJECTS.get(self.type.partition(".")[0])

    def routes(self, properties: Mapping[str, frozenset[str]]) -> bool:
        """Creations, and changes of a property in `properties` (per object: the owner and
        the fields the routing file reads), can change a decision."""
        obj, action = self.object, self.type.partition(".")[2]
        if obj is None:
            return False
        if action == "creation":
            return True
        return action == "propertyChange" and self.property_name in properties.get(obj, ())


def hubspot_signature_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """base64(HMAC-SHA256(secret, method + uri + body + timestamp)) over the raw body bytes."""
    message = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def signed_uri(request: Request, public_url: str | None) -> str:
    """The URI HubSpot signed: the public base URL (behind a proxy) + path + query, else the
    request's own URL; with the escapes HubSpot's spec decodes, decoded."""
    if public_url:
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        uri = public_url.rstrip("/") + raw_path.decode("latin-1")
        query = request.scope.get("query_string", b"").decode("latin-1")
        if query:
            uri += "?" + query
    else:
        uri = str(request.url)
    for escaped, char in _HUBSPOT_URI_DECODE.items():
        uri = uri.replace(escaped, char).replace(escaped.lower(), char)
    return uri


def check_signature(request: Request, body: bytes, settings: Settings, now: float) -> None:
    """Raise Rejected 401 unless the v3 signature is right and its timestamp within 5 min."""
    secret = secret_value(settings.hubspot_webhook_secret)
    if not secret:
        log.error("HubSpot webhook refused: HUBSPOT_WEBHOOK_SECRET is not set")
        raise Rejected(401, "webhook signature cannot be verified", "unauthorized")
    signature = request.headers.get("x-hubspot-signature-v3")
    stamp = request.headers.get("x-hubspot-request-timestamp")
    if not signature or not stamp:
        raise Rejected(401, "missing signature or timestamp", "unauthorized")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 16:
        raise Rejected(401, "invalid timestamp", "unauthorized")
    if abs(now * 1000 - int(stamp)) > SIGNATURE_MAX_AGE_MS:
        raise Rejected(401, "timestamp outside the 5-minute window", "unauthorized")
    expected = hubspot_signature_v3(
        secret, request.method, signed_uri(request, settings.public_url), body, stamp
    )
    if not same(signature, expected):
        raise Rejected(401, "invalid signature", "unauthorized")


def _in_range(low: int, high: int, what: str) -> AfterValidator:
    """An int from `low` to `high` out of an int or a string of its digits (HubSpot ids
    exceed JS's safe range in some SDKs, so some senders quote them)."""

    def check(value: int | str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"{what} must be from {low} to {high}")
        return number

    return AfterValidator(check)


# Strict throughout: a bool is not an id, 1.5 is not an instant, and a float 1.0 neither.
_Digits = Annotated[StrictStr, StringConstraints(pattern=r"^[0-9]{1,19}$")]
# Lengths in the schema too; check_text adds no control characters or lone surrogates.
_Bounded = StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH)
_Printable = AfterValidator(lambda v: check_text(v, MAX_NAME_LENGTH))
_Name = Annotated[StrictStr, _Bounded, _Printable]
ObjectId = Annotated[Annotated[StrictInt, Field(ge=1, le=MAX_INTEGER)] | _Digits,
                     _in_range(1, MAX_INTEGER, "objectId")]
EpochMs = Annotated[Annotated[StrictInt, Field(ge=0, le=MAX_EPOCH_MS)] | _Digits,
                    _in_range(0, MAX_EPOCH_MS, "occurredAt")]
EventId = Annotated[StrictInt, Field(ge=0, le=MAX_INTEGER)] | _Name
# A property's new value: any short text, "" when it was cleared (an owner id is digits).
_Value = Annotated[StrictStr, StringConstraints(max_length=MAX_VALUE_LENGTH),
                   AfterValidator(lambda v: check_text(v, MAX_VALUE_LENGTH) if v else v)]
EventType = Annotated[StrictStr, _Bounded, StringConstraints(pattern=r"^[^.]+\.[^.]+$"),
                      _Printable]


class HubSpotEventIn(BaseModel):
    """One event of a HubSpot webhook delivery as it arrives; the fields HubSpot sends that
    routing does not read (portalId, appId, attemptNumber, propertyValue, ...) are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # Field order is the order the checks are reported in (the first failing one is named).
    object_id: ObjectId = Field(alias="objectId")
    subscription_type: EventType = Field(
        alias="subscriptionType", description="e.g. `company.creation` (older apps: eventType)")
    event_id: EventId = Field(alias="eventId")
    occurred_at: EpochMs = Field(alias="occurredAt", description="epoch milliseconds")
    property_name: _Name | None = Field(default=None, alias="propertyName")
    # Read for owner changes (docs/operations.md#overrides); bounded like the other texts.
    property_value: _Value | None = Field(default=None, alias="propertyValue")
    change_source: _Name | None = Field(default=None, alias="changeSource")
    source_id: _Name | None = Field(default=None, alias="sourceId")

    @model_validator(mode="before")
    @classmethod
    def _older_event_type(cls, data: Any) -> Any:
        # Apps subscribed before HubSpot's v3 webhooks send `eventType`; an empty or null
        # `subscriptionType` falls back to it, as it always has here.
        if isinstance(data, dict):
            return {**data, "subscriptionType": data.get("subscriptionType")
                    or data.get("eventType")}
        return data

    @model_validator(mode="after")
    def _change_names_its_property(self) -> HubSpotEventIn:
        if self.subscription_type.endswith(".propertyChange") and self.property_name is None:
            raise ValueError("propertyChange events need a propertyName")
        return self

    def event(self) -> HubSpotEvent:
        return HubSpotEvent(
            object_id=str(self.object_id), type=self.subscription_type,
            event_id=str(self.event_id), occurred_at=int(self.occurred_at),
            property_name=self.property_name,
            property_value=None if self.property_value is None else str(self.property_value),
            change_source=self.change_source, source_id=self.source_id,
            has_value="property_value" in self.model_fields_set,
        )


# docs/connectors.md#the-built-in-connectors: at most MAX_EVENTS events per delivery.
HubSpotDelivery = Annotated[list[HubSpotEventIn], Field(max_length=MAX_EVENTS)]
HUBSPOT_DELIVERY = TypeAdapter(HubSpotDelivery)

# What a 400 says, per failing field: our own words, so no part of the (maybe huge) input
# is ever echoed back, and the wording does not follow pydantic's releases.
_FIELD_MESSAGES = {
    "objectId": f"objectId must be an integer from 1 to {MAX_INTEGER}",
    "subscriptionType": "subscriptionType must look like `company.creation`",
    "eventId": f"eventId must be an integer from 0 to {MAX_INTEGER}, or a string of 1 to "
               f"{MAX_NAME_LENGTH} printable characters",
    "occurredAt": "occurredAt must be epoch milliseconds",
    "propertyName": f"propertyName must be 1 to {MAX_NAME_LENGTH} printable characters",
    "propertyValue": f"propertyValue must be a string of at most {MAX_VALUE_LENGTH} "
                     "printable characters",
    "changeSource": f"changeSource must be 1 to {MAX_NAME_LENGTH} printable characters",
    "sourceId": f"sourceId must be 1 to {MAX_NAME_LENGTH} printable characters",
}


def parse_hubspot_events(body: bytes) -> list[HubSpotEvent]:
    """Validate a delivery: a JSON array of at most 100 well-formed events (else Rejected 400).

    `body` is the raw bytes the signature was checked over; it is parsed here, never
    re-serialised. The stdlib parser rather than pydantic's: jiter refuses a lone-surrogate
    escape (`"\\ud800"`) as invalid JSON, where the 400 should name the event and field."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise Rejected(400, "body is not valid JSON", "invalid") from exc
    try:
        events = HUBSPOT_DELIVERY.validate_python(data)
    except ValidationError as exc:
        raise Rejected(400, _message(exc.errors(include_input=False, include_url=False)),
                       "invalid") from None
    return [event.event() for event in events]


def _message(errors: Sequence[Mapping[str, Any]]) -> str:
    """The 400's message for the first error, the delivery's own (not an array, too many
    events) before any event's."""
    for error in errors:
        if not error["loc"]:
            if error["type"] == "too_long":
                return f"more than {MAX_EVENTS} events"
            return "expected a JSON array of events"
    first = errors[0]
    index, *rest = first["loc"]
    if not rest:
        # The event's own check (a change without its property), else not an object at all
        what = ("propertyChange events need a propertyName" if first["type"] == "value_error"
                else "expected an object")
    else:
        what = _FIELD_MESSAGES.get(str(rest[0]), f"{rest[0]} is invalid")
    return f"event {index}: {what}"


@router.post("/webhooks/hubspot")
async def hubspot_webhook(request: Request, ctx: Ctx) -> Response:
    try:
        body = await request.body()
        check_signature(request, body, ctx.settings, ctx.clock())
        events = parse_hubspot_events(body)
        accepted, duplicates = await run_in_threadpool(_dedupe_and_enqueue, ctx, events)
    except Rejected as exc:
        ctx.count("hubspot", exc.result, 1)
        return exc.response()
    ctx.count("hubspot", "accepted", accepted)
    ctx.count("hubspot", "duplicate", duplicates)
    return JSONResponse({"accepted": accepted, "duplicates": duplicates})


def owner_changes(events: Sequence[HubSpotEvent], routing: CompiledRouting | None
                  ) -> dict[str, list[tuple[HubSpotEvent, OwnerChange]]]:
    """Per CRM object, the events that change the owner property and say its new value
    (`propertyValue`), as owner changes to judge against our own writes."""
    out: dict[str, list[tuple[HubSpotEvent, OwnerChange]]] = {}
    field_maps = routing.file.field_maps if routing is not None else None
    spec = registry.spec("hubspot")
    for event in events:
        obj = event.object
        if obj is None or not event.has_value or not event.type.endswith(".propertyChange"):
            continue
        if event.property_name != spec.field_map(obj, field_maps).get("owner"):
            continue
        value = (event.property_value or "").strip() or None
        out.setdefault(obj, []).append((event, OwnerChange(
            event.object_id, value, at=datetime.fromtimestamp(event.occurred_at / 1000, UTC),
            by=event.source_id, source=event.change_source)))
    return out


def judge_owner_changes(ctx: AppContext, events: Sequence[HubSpotEvent]) -> set[int]:
    """Record the overrides among these owner-change events; returns the indexes (in
    `events`) of those that must not route the record: a person's choice (an override, new or
    already known), our own write's echo, or a change our later write replaced. Unmarked
    records (never routed by us) and cleared owners route as any change does."""
    routing = ctx.routing()
    changes = owner_changes(events, routing)
    if not changes:
        return set()
    owner_to_rep = routing.owner_to_rep if routing is not None else {}
    overrides = Overrides(ctx.store, metrics=ctx.metrics,
                          rep_of=lambda owner: owner_to_rep.get(id_key(owner)),
                          clock=lambda: datetime.fromtimestamp(ctx.clock(), UTC))
    position = {id(event): i for i, event in enumerate(events)}
    quiet: set[int] = set()
    for obj, pairs in changes.items():
        # One observe per event so two changes of one record in a delivery are judged in
        # order, each against the mark the previous one may have set.
        for event, change in sorted(pairs, key=lambda p: p[0].occurred_at):
            verdict = overrides.observe("hubspot", obj, [change])[change.record_id]
            if verdict not in (Verdict.UNMARKED, Verdict.CLEARED):
                quiet.add(position[id(event)])
    return quiet


def _dedupe_and_enqueue(ctx: AppContext, events: list[HubSpotEvent]) -> tuple[int, int]:
    # The filter follows the routing file the app serves: its field maps and the custom
    # properties its rules name route a record when they change, as the defaults do.
    properties = routed_properties("hubspot", ctx.routing())
    batches: dict[str, list[str]] = {}
    fresh_events: list[HubSpotEvent] = []
    marked: list[str] = []
    try:
        for event in events:
            key = f"webhook:hubspot:{event.event_id}:{event.occurred_at}"
            if ctx.store.seen(key, DEDUPE_TTL_SECONDS):
                continue
            marked.append(key)
            fresh_events.append(event)
        # A person's owner change is recorded, never routed back (docs/operations.md#overrides).
        quiet = judge_owner_changes(ctx, fresh_events)
        for i, event in enumerate(fresh_events):
            if i in quiet:
                continue
            if event.routes(properties) and event.object is not None:
                ids = batches.setdefault(event.object, [])
                if event.object_id not in ids:
                    ids.append(event.object_id)
    except Exception as exc:  # noqa: BLE001
        log.error("state store unavailable for webhook dedupe: %r", exc)
        for key in marked:  # HubSpot delivers again: judged again (recorded once by id)
            with contextlib.suppress(Exception):  # the store is what failed
                ctx.store.forget(key)
        raise Rejected(503, "state store unavailable; retry later", "failed") from exc
    fresh = len(fresh_events)
    # Marked before enqueueing (the mark is the atomic dedupe between concurrent deliveries);
    # should the broker fail, the marks are taken back so HubSpot's retry of this delivery is
    # routed rather than dropped as a duplicate.
    try:
        ctx.hand_over("hubspot", batches, "webhook")
    except BaseException:
        for key in marked:
            try:
                ctx.store.forget(key)
            except Exception as exc:  # noqa: BLE001 - the sweep is the last safety net
                log.error("could not take back webhook mark %s: %r", key, exc)
        raise
    return fresh, len(events) - fresh
