"""HubSpot failures as one table (STYLE.md §2, §11): each row names a case and its verdict."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import urllib3.exceptions as u3

from connectors.hubspot import settings as hs
from connectors.transport import Failure, Verdict, parse_retry_after

# Row -> verdict. The generated client raises a different ApiException class per API package
# (crm.companies, crm.contacts, crm.owners, ...), so rows are matched by duck typing on
# `.status`, `.body`, `.headers`; urllib3 errors arrive raw because the client's own retries
# are off (docs/connectors.md#errors-and-retries: retry lives only in our Transport).
TABLE: Mapping[str, Verdict] = {
    # 401: token missing, wrong, revoked or expired. One clear error naming the setting.
    "401": Verdict.AUTH,
    # 403 category MISSING_SCOPES: the private app lacks a scope (e.g. crm.objects.companies
    # .write). Fixed where the token is issued, like a 401; failing each record would hide it.
    "403 MISSING_SCOPES": Verdict.AUTH,
    # 429 policyName DAILY: the account's daily quota is spent until midnight (account time
    # zone). Checkpoint and stop; never sleep for a day (airbyte PR #9499).
    "429 DAILY": Verdict.QUOTA,
    # 429 any other policy (TEN_SECONDLY_ROLLING, SECONDLY): wait out Retry-After, else the
    # interval HubSpot reports, else the policy's window; then try again.
    "429": Verdict.RETRY,
    # 5xx: HubSpot-side trouble (502/503/504 at their edge are common and short-lived).
    "5xx": Verdict.RETRY,
    # No answer in time (connect or read timeout): the request may not have arrived.
    "timeout": Verdict.RETRY,
    # Refused, reset or dropped connection: nothing was answered.
    "connection": Verdict.RETRY,
    # Status 0: the client failed before any response, e.g. TLS verification (check
    # SSL_CERT_FILE / REQUESTS_CA_BUNDLE). Retrying repeats it.
    "no response": Verdict.FAIL,
    # Any other 4xx (400 VALIDATION_ERROR, 404, 409, 414, 403 without MISSING_SCOPES): the
    # request is wrong; retrying repeats the error.
    "4xx": Verdict.FAIL,
    # Anything else the client raises for a status (1xx/3xx, an unfollowed redirect): a
    # surprise, reported rather than retried.
    "unexpected": Verdict.FAIL,
}

_DETAIL_MAX = 300  # characters of a vendor message kept in errors and logs


@dataclass(frozen=True, slots=True)
class Match:
    """Which table row an exception falls under, with what the transport needs to act."""

    row: str
    status: str  # for the call counter: an HTTP status, `timeout`, `connection`
    detail: str
    wait: float | None = None

    @property
    def verdict(self) -> Verdict:
        return TABLE[self.row]

    def failure(self) -> Failure:
        return Failure(self.verdict, self.status, self.detail, self.wait)


def classify(exc: BaseException) -> Failure | None:
    """The transport's classifier: a Failure for a HubSpot call failure, else None."""
    found = match(exc)
    return None if found is None else found.failure()


def match(exc: BaseException) -> Match | None:
    """The table row `exc` falls under; None when it is not a HubSpot call failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    # The client re-raises inside its own handlers (e.g. an AttributeError while decoding the
    # body of a status-0 ApiException), so look through the implicit chain as well.
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _match_one(current)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


def _match_one(exc: BaseException) -> Match | None:
    if _is_api_exception(exc):
        return _match_status(exc)
    if isinstance(exc, u3.MaxRetryError) and exc.reason is not None:
        return _match_one(exc.reason) or Match("unexpected", "error", _text(exc))
    # NewConnectionError subclasses ConnectTimeoutError in urllib3: test it first.
    if isinstance(exc, u3.NewConnectionError | u3.ProtocolError | ConnectionError):
        return Match("connection", "connection", f"connection failed: {_text(exc)}")
    if isinstance(exc, u3.TimeoutError | socket.timeout | TimeoutError):
        return Match("timeout", "timeout", f"timed out: {_text(exc)}")
    if isinstance(exc, u3.HTTPError):
        return Match("unexpected", "error", _text(exc))
    return None


def _is_api_exception(exc: BaseException) -> bool:
    return all(hasattr(exc, name) for name in ("status", "body", "headers"))


def _match_status(exc: BaseException) -> Match:
    status = _int(getattr(exc, "status", None)) or 0
    body = _json(getattr(exc, "body", None))
    headers = getattr(exc, "headers", None)
    category = str(body.get("category") or body.get("errorType") or "")
    policy = str(body.get("policyName") or "")
    message = str(body.get("message") or getattr(exc, "reason", None) or "").strip()
    label = " ".join(p for p in (f"HTTP {status}", policy or category) if p)
    detail = _clip(f"{label}: {message}" if message else label)
    code = str(status)
    if status == 0:
        return Match("no response", "0", detail)
    if status == 401:
        return Match("401", code, detail)
    if status == 403 and category == "MISSING_SCOPES":
        return Match("403 MISSING_SCOPES", code, detail)
    if status == 429 and policy == hs.DAILY_POLICY:
        return Match("429 DAILY", code, detail)
    if status == 429:
        wait = retry_after(headers)
        if wait is None:
            wait = interval(headers)
        if wait is None:
            wait = hs.POLICY_WINDOW_SECONDS.get(policy)
        return Match("429", code, detail, wait)
    if 500 <= status <= 599:
        return Match("5xx", code, detail, retry_after(headers))
    if 400 <= status <= 499:
        return Match("4xx", code, detail)
    return Match("unexpected", code, detail)


# --- rate-limit headers ------------------------------------------------------------------------


def header(headers: object, name: str) -> str | None:
    """A response header by case-insensitive name, from urllib3's HTTPHeaderDict or a dict."""
    if not headers:
        return None
    getter = getattr(headers, "get", None)
    if getter is not None:
        value = getter(name)
        if value is not None:
            return str(value)
    items = getattr(headers, "items", None)
    if items is None:
        return None
    lowered = name.lower()
    for key, value in items():
        if str(key).lower() == lowered:
            return str(value)
    return None


def retry_after(headers: object, now: float | None = None) -> float | None:
    """Seconds asked by `Retry-After` (delta-seconds or an HTTP date, capped); None when absent
    or unreadable."""
    return parse_retry_after(header(headers, hs.HEADER_RETRY_AFTER), now=now)


def interval(headers: object) -> float | None:
    """The rate-limit interval in seconds (`X-HubSpot-RateLimit-Interval-Milliseconds`)."""
    ms = _float(header(headers, hs.HEADER_INTERVAL_MS))
    return None if ms is None or ms <= 0 else ms / 1000.0


def exhausted_for(headers: object) -> float | None:
    """Seconds to hold every caller when a response reports no calls left in its window."""
    remaining = _float(header(headers, hs.HEADER_REMAINING))
    if remaining is not None and remaining <= 0:
        found = interval(headers)
        return hs.BURST_INTERVAL_SECONDS if found is None else found
    secondly = _float(header(headers, hs.HEADER_SECONDLY_REMAINING))
    if secondly is not None and secondly <= 0:
        return hs.POLICY_WINDOW_SECONDS["SECONDLY"]
    return None


# --- helpers ----------------------------------------------------------------------------------


def _json(body: object) -> dict[str, object]:
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8", "replace")
    if isinstance(body, dict):
        return body
    if not isinstance(body, str) or not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]  # any value: the except sorts it out
    except (TypeError, ValueError):
        return None


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def _text(exc: BaseException) -> str:
    return _clip(f"{type(exc).__name__}: {exc}")


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 1] + "…"
