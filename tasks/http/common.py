"""Shared pieces of the HTTP app (a leaf: imports nothing else of tasks.http): the rejection
type, bounded body reading, constant-time compares, the app context and the auth dependency."""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote, unquote, unquote_plus

import anyio
from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.settings import Settings
from sync.compiler import CompiledRouting
from sync.history import History
from sync.history.store import describe_error
from sync.state.base import StateStore
from sync.state.sqlite import SqliteStateStore
from tasks.decider import Decider
from tasks.http.lookup import AccountLookup
from tasks.logging import REDACTED, SECRET_KEY

if TYPE_CHECKING:
    from tasks.metrics import AnyMetrics, Broker

log = logging.getLogger("tasks.http")

Enqueue = Callable[[str, str, list[str], str], None]

MAX_BODY_BYTES = 1 << 20  # docs/operations.md#status-codes: bodies over 1 MiB answer 413
# HubSpot and Salesforce send at most 100 per delivery (docs/connectors.md#the-built-in-connectors)
MAX_EVENTS = 100
MAX_ID_LENGTH = 255  # any id taken from a request: record, rep, event
# Control characters and lone surrogates (JSON's "\ud800"): no id has them, and a lone
# surrogate cannot even be encoded to be stored or logged.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def check_text(value: str, max_length: int = MAX_ID_LENGTH) -> str:
    """`value` when it is 1 to `max_length` characters with no control character or lone
    surrogate; ValueError saying which otherwise."""
    if not value:
        raise ValueError("must not be empty")
    if len(value) > max_length:
        raise ValueError(f"must be at most {max_length} characters")
    if _UNPRINTABLE.search(value):
        raise ValueError("must not hold control characters or lone surrogates")
    return value


# The Salesforce endpoint's secret is the path segment after this (docs/operations.md#settings); any
# query parameter named like a secret (`?token=`) is one too. Neither may reach a log line.
# Everything after the prefix goes: a client's `/webhooks/salesforce/x/../<secret>` or
# `<secret>/extra` is not routed, but it still carries the secret into the access log.
_SECRET_PATH = re.compile(r"(/webhooks/+salesforce/+).+", re.IGNORECASE | re.DOTALL)
_PATH = re.compile(r'/[^\s?#"]*')
_QUERY_PAIR = re.compile(r'([?&;])([^=&;\s"#?]*)=([^&;\s"#]*)')


def redact(text: str) -> str:
    """`text` with the Salesforce webhook secret of any path in it, and the value of every
    query parameter named like a secret, replaced by `[redacted]`. Paths are matched as the
    router sees them (percent-decoded), so an encoded spelling of the path is caught too."""
    if "/" not in text and "=" not in text:
        return text  # no path, no query pair: most log arguments (an address, a method)

    def path(match: re.Match[str]) -> str:
        decoded = unquote(match[0])
        if not _SECRET_PATH.search(decoded):
            return match[0]
        return quote(_SECRET_PATH.sub(rf"\g<1>{REDACTED}", decoded), safe="/[]-._~!$&'()*+,;=:@")

    def pair(match: re.Match[str]) -> str:
        if not SECRET_KEY.search(unquote_plus(match[2])):
            return match[0]
        return f"{match[1]}{match[2]}={REDACTED}"

    return _QUERY_PAIR.sub(pair, _PATH.sub(path, text))


class Rejected(Exception):
    """A request answered with a 4xx (or 503) and a JSON message; nothing was enqueued."""

    def __init__(self, status: int, message: str, result: str) -> None:
        super().__init__(message)
        self.status, self.message, self.result = status, message, result

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.message}, status_code=self.status)


def same(given: str, expected: str) -> bool:
    """Constant-time equality over bytes (compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8", "surrogateescape"))


def secret_value(value: Any) -> str | None:
    """The plain value of a SecretStr setting, or None when unset."""
    return value.get_secret_value() if value is not None else None


class BodyLimit:
    """ASGI middleware: every request body is read here first, bounded in size (413 past 1 MiB:
    by Content-Length before reading, and by the bytes actually read, since a chunked body has
    no length to trust) and in time (408 when it has not fully arrived within `timeout`
    seconds: a client that sends headers and then nothing must not hold a connection), then
    handed to the app from memory. `on_reject(path, result)` counts what was refused."""

    def __init__(self, app: ASGIApp, *, timeout: float, max_bytes: int = MAX_BODY_BYTES,
                 on_reject: Callable[[str, str], None] = lambda path, result: None) -> None:
        self.app, self.timeout, self.max_bytes = app, timeout, max_bytes
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(scope, receive)
        except Rejected as exc:
            self.on_reject(scope.get("path", ""), exc.result)
            response = exc.response()
            # The rest of the body is never read: close rather than keep the connection open.
            response.headers["connection"] = "close"
            await response(scope, receive, send)
            return
        except _Gone:
            return  # the client went away: nobody to answer
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only the disconnect is left to wait for

        await self.app(scope, replay, send)

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        too_large = Rejected(413, f"body over {self.max_bytes} bytes", "too_large")
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value.strip()
                if not declared.isdigit():
                    raise Rejected(400, "invalid Content-Length", "invalid")
                if int(declared) > self.max_bytes:
                    raise too_large
        chunks: list[bytes] = []
        size = 0
        try:
            with anyio.fail_after(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _Gone
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise too_large
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError as exc:
            raise Rejected(408, f"request body not received within {self.timeout:g} s",
                           "timeout") from exc


class _Gone(Exception):  # noqa: N818 - a signal, not an error
    """The client disconnected before its body arrived."""


def store_call(call: Callable[[], Any]) -> Any:
    """Run a state-store call: a ValueError is the caller's 400, any other failure a 503."""
    try:
        return call()
    except Rejected:
        raise  # the call's own answer
    except ValueError as exc:
        raise Rejected(400, str(exc), "invalid") from exc
    except Exception as exc:  # noqa: BLE001
        log.error("state store call failed: %r", exc)
        raise Rejected(503, "state store unavailable; retry later", "failed") from exc


def history_call(call: Callable[[], Any]) -> Any:
    """Run a history query: a database that is down or unset is a 503, never a 500 (the
    message names no URL: the log line has it, redacted)."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - any database failure is a 503 here
        log.error("history call failed: %s", describe_error(exc))
        raise Rejected(503, "decision history unavailable; retry later", "failed") from exc


@dataclass
class AppContext:
    """What every router needs, held on `app.state.ctx` (one per app, no module globals)."""

    settings: Settings
    store: StateStore
    enqueue: Enqueue
    clock: Callable[[], float]
    count: Callable[[str, str, int], None]  # webhook events by crm and result
    broker: Broker | None
    registry: CollectorRegistry  # what /metrics renders
    metrics: AnyMetrics  # the pipeline series (a dry run's CRM calls count there too)
    routing: Callable[[], CompiledRouting | None]  # the routing file served (None: unset)
    # The decision history, opened on first use (`history()`); the app may set it up front.
    history_db: History | None = None
    # POST /route's pool turns, taken in batches by one thread (tasks/decider.py): concurrent
    # requests on one pool would otherwise lose each other's compare-and-set, and one state
    # store round trip set per record does not keep up with a busy form.
    decider: Decider = field(init=False)
    # POST /route's bounded CRM read for company_match (connectors made on first use).
    account_lookup: AccountLookup = field(default_factory=AccountLookup)

    def __post_init__(self) -> None:
        self.decider = Decider(self.store, self.clock)

    def history(self) -> History:
        """The history the store's decisions land in: the SQLite state file's own (embedded),
        else ACCOUNT_ROUTER_DATABASE_URL. ValueError (a 503 via `store_call`) when unset."""
        if self.history_db is None:
            if isinstance(self.store, SqliteStateStore):
                self.history_db = self.store.history
            else:
                self.history_db = History(self.settings.resolved_database_url())
        return self.history_db

    def hand_over(self, crm: str, batches: Mapping[str, list[str]], trigger: str) -> None:
        """Enqueue each object's ids; a broker failure is a 503 (retry), never a 500."""
        for obj, ids in batches.items():
            if not ids:
                continue
            try:
                self.enqueue(crm, obj, ids, trigger)
            except Exception as exc:  # noqa: BLE001 - a broker failure is a 503, never a 500
                log.error("enqueue failed for %s %s (%d ids: %s): %r", crm, obj, len(ids),
                          ",".join(ids), exc)
                raise Rejected(503, "queue unavailable; retry later", "failed") from exc


def context(request: Request) -> AppContext:
    """FastAPI dependency: this app's context."""
    ctx: AppContext = request.app.state.ctx
    return ctx


Ctx = Annotated[AppContext, Depends(context)]


def require_token(request: Request) -> None:
    """FastAPI dependency: the ops API's bearer token (ACCOUNT_ROUTER_API_TOKEN), else 401."""
    token = secret_value(context(request).settings.api_token)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if not token or scheme.lower() != "bearer" or not same(given.strip(), token):
        raise Rejected(401, "missing or wrong bearer token", "unauthorized")
