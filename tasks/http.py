"""The HTTP app (DESIGN.md §5): CRM webhooks in, record ids onto the queue; the ops API."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from connectors.registry import canonical_object, names, routed_fields
from connectors.settings import Settings
from sync.state.base import StateStore

if TYPE_CHECKING:
    from tasks.metrics import AnyMetrics, Broker

log = logging.getLogger(__name__)

Enqueue = Callable[[str, str, list[str], str], None]

MAX_BODY_BYTES = 1 << 20  # §5: bodies over 1 MiB answer 413
MAX_EVENTS = 100  # §7: HubSpot and Salesforce both send at most 100 per delivery
MAX_REPROCESS_IDS = 1000
SIGNATURE_MAX_AGE_MS = 5 * 60 * 1000  # §7: reject timestamps older than 5 minutes
DEDUPE_TTL_SECONDS = 24 * 3600  # HubSpot retries a delivery for up to 24 h

# HubSpot objects this router handles: the event type's prefix -> the CRM object name.
HUBSPOT_OBJECTS = {"company": "companies", "contact": "contacts"}
# Properties whose change can alter a routing decision: the owner and every mapped field.
HUBSPOT_ROUTED_PROPERTIES = routed_fields("hubspot")
# HubSpot's v3 spec: these escapes in the request URI are decoded before signing.
_HUBSPOT_URI_DECODE = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$", "%27": "'",
    "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
SALESFORCE_ID_LENGTHS = (15, 18)
SOAP_ACK = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}"><soapenv:Body>'
    '<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
    "<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"
)


class Rejected(Exception):
    """A request answered with a 4xx (or 503) and a JSON message; nothing was enqueued."""

    def __init__(self, status: int, message: str, result: str) -> None:
        super().__init__(message)
        self.status, self.message, self.result = status, message, result

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.message}, status_code=self.status)


@dataclass(frozen=True, slots=True)
class HubSpotEvent:
    """One validated webhook event."""

    object_id: str
    type: str  # e.g. `company.propertyChange`
    event_id: str
    occurred_at: int
    property_name: str | None

    @property
    def object(self) -> str | None:
        """The CRM object this router handles for the event, or None (deals, tickets, ...)."""
        return HUBSPOT_OBJECTS.get(self.type.partition(".")[0])

    @property
    def routes(self) -> bool:
        """Creations, and changes of the owner or of a mapped field, can change a decision."""
        obj, action = self.object, self.type.partition(".")[2]
        if obj is None:
            return False
        if action == "creation":
            return True
        return action == "propertyChange" and self.property_name in HUBSPOT_ROUTED_PROPERTIES[obj]


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


def _same(given: str, expected: str) -> bool:
    """Constant-time equality over bytes (compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


async def _read_body(request: Request) -> bytes:
    """The raw body, refused with 413 past 1 MiB: by Content-Length before reading, and by the
    bytes actually read (a chunked body has no length to trust)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isascii() or not declared.strip().isdigit():
            raise Rejected(400, "invalid Content-Length", "invalid")
        if int(declared) > MAX_BODY_BYTES:
            raise Rejected(413, f"body over {MAX_BODY_BYTES} bytes", "too_large")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise Rejected(413, f"body over {MAX_BODY_BYTES} bytes", "too_large")
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise Rejected(400, "client disconnected", "invalid") from exc
    return b"".join(chunks)


def _check_hubspot_signature(
    request: Request, body: bytes, settings: Settings, now: float
) -> None:
    secret = _secret(settings.hubspot_webhook_secret)
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
    if not _same(signature, expected):
        raise Rejected(401, "invalid signature", "unauthorized")


def parse_hubspot_events(body: bytes) -> list[HubSpotEvent]:
    """Validate a delivery: a JSON array of at most 100 well-formed events (else Rejected 400)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise Rejected(400, "body is not valid JSON", "invalid") from exc
    if not isinstance(data, list):
        raise Rejected(400, "expected a JSON array of events", "invalid")
    if len(data) > MAX_EVENTS:
        raise Rejected(400, f"more than {MAX_EVENTS} events", "invalid")
    return [_hubspot_event(i, item) for i, item in enumerate(data)]


def _hubspot_event(index: int, item: object) -> HubSpotEvent:
    def bad(what: str) -> Rejected:
        return Rejected(400, f"event {index}: {what}", "invalid")

    if not isinstance(item, dict):
        raise bad("expected an object")
    object_id = _integer(item.get("objectId"))
    if object_id is None or object_id <= 0:
        raise bad("objectId must be a positive integer")
    kind = item.get("subscriptionType") or item.get("eventType")
    if not isinstance(kind, str) or kind.count(".") != 1 or not all(kind.split(".")):
        raise bad("subscriptionType must look like `company.creation`")
    event_id = item.get("eventId")
    if isinstance(event_id, bool) or not isinstance(event_id, int | str) or event_id == "":
        raise bad("eventId is required")
    occurred_at = _integer(item.get("occurredAt"))
    if occurred_at is None or occurred_at < 0:
        raise bad("occurredAt must be epoch milliseconds")
    name = item.get("propertyName")
    if kind.endswith(".propertyChange") and (not isinstance(name, str) or not name):
        raise bad("propertyChange events need a propertyName")
    return HubSpotEvent(
        object_id=str(object_id), type=kind, event_id=str(event_id),
        occurred_at=occurred_at, property_name=name if isinstance(name, str) else None,
    )


def _integer(value: object) -> int | None:
    """An int, or a string of digits (HubSpot ids exceed JS's safe range in some SDKs)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        return int(value)
    return None


def parse_outbound_message(body: bytes) -> tuple[str, dict[str, list[str]]]:
    """A Salesforce Outbound Message -> (organization id, {object: [record ids]})."""
    lowered = body.lower()
    if b"<!doctype" in lowered or b"<!entity" in lowered:
        # ElementTree expands internal entities (billion laughs); no DTD is ever legitimate here.
        raise Rejected(400, "DOCTYPE and entities are not accepted", "invalid")
    try:
        root = ET.fromstring(body)
    # LookupError: an unknown `encoding=` in the XML declaration.
    except (ET.ParseError, ValueError, LookupError, RecursionError) as exc:
        raise Rejected(400, "body is not well-formed XML", "invalid") from exc
    found = [el for el in root.iter() if _local(el.tag) == "notifications"]
    if len(found) != 1:
        raise Rejected(400, "expected one <notifications> element", "invalid")
    message = found[0]
    org = next((el.text or "" for el in message if _local(el.tag) == "OrganizationId"), "")
    notifications = [el for el in message if _local(el.tag).lower() == "notification"]
    if not notifications or len(notifications) > MAX_EVENTS:
        raise Rejected(400, f"expected 1 to {MAX_EVENTS} notifications", "invalid")
    ids: dict[str, list[str]] = {}
    for i, note in enumerate(notifications):
        sobject = next((el for el in note if _local(el.tag) == "sObject"), None)
        if sobject is None:
            raise Rejected(400, f"notification {i}: no <sObject>", "invalid")
        try:
            obj = canonical_object("salesforce", sobject.get(XSI_TYPE, "").rpartition(":")[2])
        except ValueError as exc:
            raise Rejected(400, f"notification {i}: {exc}", "invalid") from exc
        record_id = next(((el.text or "").strip() for el in sobject if _local(el.tag) == "Id"), "")
        if len(record_id) not in SALESFORCE_ID_LENGTHS or not record_id.isalnum() \
                or not record_id.isascii():
            raise Rejected(400, f"notification {i}: <sf:Id> is not a Salesforce id", "invalid")
        if record_id not in ids.setdefault(obj, []):
            ids[obj].append(record_id)
    return org.strip(), ids


def _local(tag: object) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def same_org(given: str, expected: str) -> bool:
    """15- and 18-character ids name the same org when their first 15 characters match (the
    last 3 only encode the case of the first 15)."""
    if len(given) not in SALESFORCE_ID_LENGTHS or len(expected) not in SALESFORCE_ID_LENGTHS:
        return False
    return _same(given[:15], expected[:15])


# Each webhook holds a worker thread until its batch is in the broker (up to the batch window,
# ACCOUNT_ROUTER_BATCH_WINDOW_MS): at 1,000 requests/s and 100 ms that is 100 threads, more than
# AnyIO's default of 40, which would queue requests behind the window instead of batching them.
ENQUEUE_THREADS = 200


@asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    anyio.to_thread.current_default_thread_limiter().total_tokens = ENQUEUE_THREADS
    yield


def create_app(
    settings: Settings,
    store: StateStore,
    enqueue: Enqueue,
    *,
    clock: Callable[[], float] = time.time,
    metrics: AnyMetrics | None = None,
    broker: Broker | None = None,
) -> FastAPI:
    """The app over one store and one enqueue callable; routing never runs in this process.

    `/metrics` serves this app's webhook counter, the shared pipeline series of `metrics`
    (default `metrics_for(settings)`: Redis-backed, so every worker process's counts show), and
    the queue gauges of `broker` (default: the Celery broker at `settings.redis_url`; none in
    embedded mode, where the queue is this process's executor and the gauges are left out)."""
    from tasks.metrics import Broker, metrics_for

    shared = metrics if metrics is not None else metrics_for(settings)
    if broker is None and settings.redis_url:
        broker = Broker(settings.redis_url)
    app = FastAPI(title="account-router", lifespan=_lifespan)
    registry = CollectorRegistry()
    registry.register(shared.collector())
    if broker is not None:
        registry.register(broker.collector())
    events_total = Counter(
        "account_router_webhook_events", "Webhook events by outcome (rejected: per request).",
        ["crm", "result"], registry=registry,
    )

    def count(crm: str, result: str, n: int = 1) -> None:
        if n:
            events_total.labels(crm=crm, result=result).inc(n)

    def hand_over(crm: str, batches: Mapping[str, list[str]], trigger: str) -> None:
        for obj, ids in batches.items():
            if not ids:
                continue
            try:
                enqueue(crm, obj, ids, trigger)
            except Exception as exc:  # noqa: BLE001 - a broker failure is a 503, never a 500
                log.error("enqueue failed for %s %s (%d ids: %s): %r", crm, obj, len(ids),
                          ",".join(ids), exc)
                raise Rejected(503, "queue unavailable; retry later", "failed") from exc

    @app.exception_handler(Rejected)
    async def _rejected(request: Request, exc: Rejected) -> Response:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": "invalid request parameters"}, status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # A bug must not look like a server crash to the CRM's retry logic: 503 asks it to retry.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "temporarily unavailable"}, status_code=503)

    # --- webhooks: authenticate -> validate -> dedupe -> enqueue (STYLE.md §8) --------------

    @app.post("/webhooks/hubspot")
    async def hubspot_webhook(request: Request) -> Response:
        try:
            body = await _read_body(request)
            _check_hubspot_signature(request, body, settings, clock())
            events = parse_hubspot_events(body)
            accepted, duplicates = await run_in_threadpool(_dedupe_and_enqueue, events)
        except Rejected as exc:
            count("hubspot", exc.result)
            return exc.response()
        count("hubspot", "accepted", accepted)
        count("hubspot", "duplicate", duplicates)
        return JSONResponse({"accepted": accepted, "duplicates": duplicates})

    def _dedupe_and_enqueue(events: list[HubSpotEvent]) -> tuple[int, int]:
        batches: dict[str, list[str]] = {}
        fresh = 0
        marked: list[str] = []
        try:
            for event in events:
                key = f"webhook:hubspot:{event.event_id}:{event.occurred_at}"
                if store.seen(key, DEDUPE_TTL_SECONDS):
                    continue
                marked.append(key)
                fresh += 1
                if event.routes and event.object is not None:
                    ids = batches.setdefault(event.object, [])
                    if event.object_id not in ids:
                        ids.append(event.object_id)
        except Exception as exc:  # noqa: BLE001
            log.error("state store unavailable for webhook dedupe: %r", exc)
            raise Rejected(503, "state store unavailable; retry later", "failed") from exc
        # Marked before enqueueing (the mark is the atomic dedupe between concurrent
        # deliveries); should the broker fail, the marks are taken back so HubSpot's retry of
        # this delivery is routed rather than dropped as a duplicate.
        try:
            hand_over("hubspot", batches, "webhook")
        except BaseException:
            for key in marked:
                try:
                    store.forget(key)
                except Exception as exc:  # noqa: BLE001 - the sweep is the last safety net
                    log.error("could not take back webhook mark %s: %r", key, exc)
            raise
        return fresh, len(events) - fresh

    @app.post("/webhooks/salesforce")
    async def salesforce_webhook(request: Request) -> Response:
        try:
            body = await _read_body(request)
            secret = _secret(settings.salesforce_webhook_secret)
            given = request.headers.get("x-account-router-secret")
            if secret and (given is None or not _same(given, secret)):
                raise Rejected(401, "missing or wrong shared secret", "unauthorized")
            if not settings.salesforce_org_id:
                log.error("Salesforce webhook refused: SALESFORCE_ORG_ID is not set")
                raise Rejected(401, "organization cannot be verified", "unauthorized")
            org, batches = parse_outbound_message(body)
            if not same_org(org, settings.salesforce_org_id.strip()):
                raise Rejected(403, "message from another organization", "forbidden")
            await run_in_threadpool(hand_over, "salesforce", batches, "webhook")
        except Rejected as exc:
            count("salesforce", exc.result)
            return exc.response()
        count("salesforce", "accepted", sum(len(ids) for ids in batches.values()))
        # Acked only now: without the ack Salesforce keeps retrying, so nothing is lost.
        return Response(SOAP_ACK, media_type="text/xml")

    # --- ops API ----------------------------------------------------------------------------

    def authorize(request: Request) -> None:
        token = _secret(settings.api_token)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if not token or scheme.lower() != "bearer" or not _same(given.strip(), token):
            raise Rejected(401, "missing or wrong bearer token", "unauthorized")

    async def json_body(request: Request, *, optional: bool = False) -> dict[str, Any]:
        body = await _read_body(request)
        if optional and not body.strip():
            return {}
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise Rejected(400, "body is not valid JSON", "invalid") from exc
        if not isinstance(data, dict):
            raise Rejected(400, "expected a JSON object", "invalid")
        return data

    @app.post("/reprocess", status_code=202)
    async def reprocess(request: Request) -> Response:
        authorize(request)
        data = await json_body(request)
        crm, obj, ids = data.get("crm"), data.get("object"), data.get("ids")
        known = names()
        if crm not in known:
            raise Rejected(400, f"crm must be one of {', '.join(known)}", "invalid")
        if not isinstance(obj, str):
            raise Rejected(400, "object is required", "invalid")
        try:
            obj = canonical_object(crm, obj)
        except ValueError as exc:
            raise Rejected(400, str(exc), "invalid") from exc
        if (not isinstance(ids, list) or not ids or len(ids) > MAX_REPROCESS_IDS
                or not all(isinstance(i, str) and i.strip() for i in ids)):
            raise Rejected(400, f"ids must be 1 to {MAX_REPROCESS_IDS} non-empty strings",
                           "invalid")
        if data.get("dry_run", False) is not False:
            raise Rejected(400, "use the CLI for dry runs (`account-router reprocess "
                           "--dry-run`)", "invalid")
        unique = list(dict.fromkeys(i.strip() for i in ids))
        await run_in_threadpool(hand_over, crm, {obj: unique}, "reprocess")
        return JSONResponse({"enqueued": len(unique), "crm": crm, "object": obj},
                            status_code=202)

    @app.get("/decisions/{record_id}")
    async def decisions(request: Request, record_id: str) -> Response:
        authorize(request)
        raw = request.query_params.get("limit", "100")
        limit = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 4 else 0
        if not 1 <= limit <= 1000:
            raise Rejected(400, "limit must be 1 to 1000", "invalid")
        found = await run_in_threadpool(
            _store_call, lambda: store.decisions(record_id=record_id, limit=limit))
        return JSONResponse([d.to_dict() for d in found])

    @app.post("/reps/{rep}/pause")
    async def pause(request: Request, rep: str) -> Response:
        authorize(request)
        data = await json_body(request, optional=True)
        until = _instant(data.get("until"))
        await run_in_threadpool(_store_call, lambda: store.pause(rep, until))
        return JSONResponse({"rep": rep, "paused": True,
                             "until": None if until is None else until.isoformat()})

    @app.post("/reps/{rep}/resume")
    async def resume(request: Request, rep: str) -> Response:
        authorize(request)
        was_paused = await run_in_threadpool(_store_call, lambda: store.resume(rep))
        return JSONResponse({"rep": rep, "resumed": bool(was_paused)})

    # --- health and metrics -----------------------------------------------------------------

    def check_state() -> str:
        try:
            _store_call(lambda: store.pauses(datetime.now(UTC)))
        except Rejected:
            return "unavailable"
        return "ok"

    def check_broker() -> str:
        if broker is None:
            return "embedded"  # no broker: enqueued work runs on this process's executor
        try:
            broker.ping()
        except Exception as exc:  # noqa: BLE001 - any failure means webhooks cannot enqueue
            log.error("broker unreachable: %r", exc)
            return "unavailable"
        return "ok"

    @app.get("/healthz")
    async def healthz() -> Response:
        # Checked side by side: the broker and the state store may be different Redis servers
        # (ACCOUNT_ROUTER_STATE_URL), and a slow one should not add its timeout to the other's.
        state, queue = await asyncio.gather(run_in_threadpool(check_state),
                                            run_in_threadpool(check_broker))
        healthy = state == "ok" and queue in ("ok", "embedded")
        # "state" (the store) is the key this endpoint always answered; "checks" has them all.
        return JSONResponse({"state": state, "checks": {"state": state, "broker": queue}},
                            status_code=200 if healthy else 503)

    @app.get("/metrics")
    async def metrics_page() -> Response:
        try:
            body = await run_in_threadpool(generate_latest, registry)  # Redis: blocking I/O
        except Exception as exc:  # noqa: BLE001 - an unreachable Redis is a 503, never a 500
            log.error("metrics unavailable: %r", exc)
            return JSONResponse({"error": "metrics unavailable"}, status_code=503)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app


def _store_call(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except ValueError as exc:
        raise Rejected(400, str(exc), "invalid") from exc
    except Exception as exc:  # noqa: BLE001
        log.error("state store call failed: %r", exc)
        raise Rejected(503, "state store unavailable; retry later", "failed") from exc


def _instant(value: object) -> datetime | None:
    """An ISO 8601 instant with a UTC offset (`Z` accepted), or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected(400, "until must be an ISO 8601 instant", "invalid")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise Rejected(400, "until must be an ISO 8601 instant", "invalid") from exc
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise Rejected(400, "until needs a UTC offset (e.g. 2026-12-01T09:00:00Z)", "invalid")
    return parsed.astimezone(UTC)
