"""Salesforce failures as one table: (HTTP status, errorCode) -> what the transport does."""

from __future__ import annotations

import re
from collections.abc import Mapping

import requests
from simple_salesforce.exceptions import SalesforceAuthenticationFailed, SalesforceError

from connectors.transport import Failure, Verdict

ANY = None  # a wildcard in a table key

# Looked up most specific first: (status, code), (ANY, code), (status, ANY); a status missing
# from the table falls back to its class (5xx retry, anything else fail). `errorCode` is the
# first error of the REST error body `[{"message": ..., "errorCode": ...}]`.
TABLE: Mapping[tuple[int | None, str | None], Verdict] = {
    # The org's rolling 24-hour API request limit ("TotalRequests Limit exceeded") arrives as
    # a 403. It frees up over hours: checkpoint and stop, never sleep (airbyte PR #9499).
    (403, "REQUEST_LIMIT_EXCEEDED"): Verdict.QUOTA,
    # The session id / OAuth token expired or was revoked. Password and JWT modes re-login
    # inside simple-salesforce first, so a 401 that reaches us means the settings are wrong.
    (401, "INVALID_SESSION_ID"): Verdict.AUTH,
    (401, ANY): Verdict.AUTH,
    # Another transaction (a trigger, a data load, a merge) holds the row lock; it is
    # released within seconds, so the same request succeeds on a later attempt.
    (ANY, "UNABLE_TO_LOCK_ROW"): Verdict.RETRY,
    # Too many requests in a short window (some edges and API gateways): wait and retry.
    (429, ANY): Verdict.RETRY,
    # A query cursor (nextRecordsUrl) expired or was evicted: the same URL fails again.
    # The connector falls back to a fresh keyset query (see connector.list_records).
    (400, "INVALID_QUERY_LOCATOR"): Verdict.FAIL,
    # The org or user cannot use the API at all (edition, permission): not a transient state.
    (403, "API_DISABLED_FOR_ORG"): Verdict.FAIL,
    (403, "API_CURRENTLY_DISABLED"): Verdict.FAIL,
}

# Rows that need the message as well as the code.
MESSAGE_TABLE: Mapping[tuple[str, str], Verdict] = {
    # The concurrent long-running request limit (25 requests running over 20 s) shares
    # REQUEST_LIMIT_EXCEEDED with the daily quota, but clears as soon as they finish.
    ("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn"): Verdict.RETRY,
}


def by_status(status: int) -> Verdict:
    """A status the table does not name: 5xx is the server's trouble, other codes ours."""
    return Verdict.RETRY if status >= 500 else Verdict.FAIL


def verdict(status: int, code: str | None, message: str = "") -> Verdict:
    """The table's answer for one error response."""
    if code is not None:
        for (marked_code, marker), found in MESSAGE_TABLE.items():
            if code == marked_code and marker in message:
                return found
        for key in ((status, code), (ANY, code)):
            if key in TABLE:
                return TABLE[key]
    return TABLE.get((status, ANY), by_status(status))


class RowsLocked(Exception):  # noqa: N818 - named after the vendor's condition
    """Per-record UNABLE_TO_LOCK_ROW in a composite write: the locked records are retried."""

    def __init__(self, ids: list[str], message: str) -> None:
        self.ids = ids
        self.message = message
        super().__init__(f"UNABLE_TO_LOCK_ROW on {len(ids)} record(s): {message}")


def first_error(content: object) -> tuple[str | None, str]:
    """(errorCode, message) of a REST error body: a list of errors, an OAuth error object,
    or plain text (an HTML error page from a proxy)."""
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        first = content[0]
        code = first.get("errorCode") or first.get("statusCode")
        return (str(code) if code else None), str(first.get("message") or "")
    if isinstance(content, Mapping):
        code = content.get("errorCode") or content.get("error")
        message = content.get("message") or content.get("error_description") or ""
        return (str(code) if code else None), str(message)
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    return None, str(content or "")


def classify(exc: BaseException, retry_after: float | None = None) -> Failure | None:
    """The failure an exception stands for; None when it is not a Salesforce call failure.

    `retry_after` is the Retry-After of the response that raised `exc`, if it sent one.
    """
    if isinstance(exc, SalesforceAuthenticationFailed):
        # Login (SOAP or OAuth token endpoint) refused: wrong credentials, locked user,
        # app not approved. A numeric code is an HTTP status from a non-XML/JSON answer.
        code = exc.code
        if isinstance(code, int) and code >= 500:
            return Failure(Verdict.RETRY, str(code), _short(f"login: {exc.auth_message}"),
                           retry_after)
        return Failure(Verdict.AUTH, "401", _short(f"{code}: {exc.auth_message}"))
    if isinstance(exc, SalesforceError):
        status = int(exc.status)
        code, message = first_error(exc.content)
        found = verdict(status, code, message)
        detail = _short(f"{status} {code}: {message}" if code else f"{status}: {message}")
        return Failure(found, str(status), detail,
                       retry_after if found == Verdict.RETRY else None)
    if isinstance(exc, RowsLocked):
        return Failure(Verdict.RETRY, "UNABLE_TO_LOCK_ROW", _short(str(exc)))
    if isinstance(exc, requests.exceptions.SSLError):
        # A subclass of ConnectionError, but retrying cannot make an untrusted certificate
        # trusted: say which settings decide trust instead.
        return Failure(Verdict.FAIL, "tls", _short(
            f"TLS verification failed (trust follows REQUESTS_CA_BUNDLE / SSL_CERT_FILE): "
            f"{exc}"))
    if isinstance(exc, requests.exceptions.Timeout):
        return Failure(Verdict.RETRY, "timeout", _short(f"timed out: {exc}"))
    if isinstance(exc, requests.exceptions.ConnectionError):
        return Failure(Verdict.RETRY, "connection", _short(f"connection failed: {exc}"))
    if isinstance(exc, requests.exceptions.RequestException):
        # Malformed URL, an undecodable body: the request or the answer is wrong as sent.
        return Failure(Verdict.FAIL, "request", _short(f"{type(exc).__name__}: {exc}"))
    return None


# `Sforce-Limit-Info: api-usage=18/5000; per-app-api-usage=17/250(appName=sample)`: the
# org's usage over the rolling 24 h, not the per-app one.
_API_USAGE = re.compile(r"(?:^|[;,\s])api-usage=(\d+)/(\d+)")


def parse_limit_info(header: str | None) -> tuple[int, int] | None:
    """(used, max) from a `Sforce-Limit-Info` header; None when it reports no api-usage."""
    if not header:
        return None
    found = _API_USAGE.search(header)
    return (int(found.group(1)), int(found.group(2))) if found else None


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
