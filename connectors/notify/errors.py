"""Slack and SMTP failures as tables: what the one retry loop (connectors.transport) does."""

from __future__ import annotations

import smtplib
import socket
import ssl
import urllib.error
from collections.abc import Mapping

from slack_sdk.errors import SlackApiError

from connectors.transport import Failure, Verdict, parse_retry_after

# Slack Web API `error` codes (HTTP 200 with `ok: false`, or a 429). Anything not named falls
# back to its HTTP status: 429 and 5xx retry, everything else fails at once.
SLACK_ERRORS: Mapping[str, Verdict] = {
    # Tier limits: chat.postMessage ~1/s per channel, users.lookupByEmail tier 3 (50+/min);
    # the 429 carries Retry-After, which the loop honours (capped).
    "ratelimited": Verdict.RETRY,
    # Slack's own trouble: the same call succeeds later.
    "internal_error": Verdict.RETRY,
    "fatal_error": Verdict.RETRY,
    "service_unavailable": Verdict.RETRY,
    "request_timeout": Verdict.RETRY,
    # The person is not in this workspace (or the id in `slack:` is wrong): retrying repeats it.
    "user_not_found": Verdict.FAIL,
    "users_not_found": Verdict.FAIL,
    "channel_not_found": Verdict.FAIL,
    "not_in_channel": Verdict.FAIL,
    "is_archived": Verdict.FAIL,
    "user_disabled": Verdict.FAIL,
    "cannot_dm_bot": Verdict.FAIL,
    "msg_too_long": Verdict.FAIL,
    "invalid_blocks": Verdict.FAIL,
    # The app's install: fixed by a person, once, in ACCOUNT_ROUTER_SLACK_TOKEN or the scopes.
    "missing_scope": Verdict.FAIL,
    "not_allowed_token_type": Verdict.FAIL,
    "invalid_auth": Verdict.AUTH,
    "not_authed": Verdict.AUTH,
    "account_inactive": Verdict.AUTH,
    "token_revoked": Verdict.AUTH,
    "token_expired": Verdict.AUTH,
}


def by_status(status: int) -> Verdict:
    return Verdict.RETRY if status == 429 or status >= 500 else Verdict.FAIL


def slack_verdict(status: int, error: str | None) -> Verdict:
    if error is not None and error in SLACK_ERRORS:
        return SLACK_ERRORS[error]
    return by_status(status)


def classify_slack(exc: BaseException) -> Failure | None:
    """The failure a slack-sdk call raised (it uses urllib: URLError, timeouts)."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = int(getattr(response, "status_code", 0) or 0)
        data = getattr(response, "data", None)
        error = data.get("error") if isinstance(data, Mapping) else None
        headers = getattr(response, "headers", None) or {}
        retry_after = _header(headers, "Retry-After")
        verdict = slack_verdict(status, str(error) if error else None)
        detail = str(error) if error else f"HTTP {status}"
        return Failure(verdict, str(status or "error"), detail, parse_retry_after(retry_after))
    if isinstance(exc, TimeoutError | socket.timeout):
        return Failure(Verdict.RETRY, "timeout", "timed out")
    if isinstance(exc, urllib.error.HTTPError):  # a proxy's error page, not Slack's JSON
        return Failure(by_status(exc.code), str(exc.code), f"HTTP {exc.code}",
                       parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None))
    if isinstance(exc, urllib.error.URLError | ConnectionError):
        reason = getattr(exc, "reason", exc)
        return Failure(Verdict.RETRY, "connection", f"connection failed ({type(reason).__name__})")
    return None


def _header(headers: Mapping[str, object], name: str) -> str | None:
    for key, value in headers.items():
        if str(key).lower() == name.lower():
            if isinstance(value, list | tuple):
                return str(value[0]) if value else None
            return str(value)
    return None


def smtp_verdict(code: int) -> Verdict:
    """RFC 5321: 4yz is a transient failure (try again later), 5yz permanent."""
    if code in (530, 534, 535):  # authentication required / too weak / credentials rejected
        return Verdict.AUTH
    return Verdict.RETRY if 400 <= code < 500 else Verdict.FAIL


def classify_smtp(exc: BaseException) -> Failure | None:
    """The failure an smtplib call raised."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        code = max(codes) if codes else 550
        return Failure(smtp_verdict(code), str(code), f"recipient refused ({code})")
    if isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
        message = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        text = " ".join(message.split())[:200]
        return Failure(smtp_verdict(code), str(code), f"SMTP {code} {text}")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return Failure(Verdict.RETRY, "connection", "server disconnected")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Failure(Verdict.FAIL, "tls", "TLS certificate not trusted (see SSL_CERT_FILE)")
    if isinstance(exc, TimeoutError | socket.timeout):
        return Failure(Verdict.RETRY, "timeout", "timed out")
    if isinstance(exc, OSError):  # refused, unreachable, reset, name resolution
        return Failure(Verdict.RETRY, "connection", f"connection failed ({type(exc).__name__})")
    return None
