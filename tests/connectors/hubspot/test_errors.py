"""The HubSpot classification table: every row exercised, by every API package's exception."""

from __future__ import annotations

import json
from http.client import RemoteDisconnected

import pytest
import urllib3.exceptions as u3
from hubspot.crm.companies import ApiException as CompaniesApiException
from hubspot.crm.contacts import ApiException as ContactsApiException
from hubspot.crm.owners import ApiException as OwnersApiException

from connectors.hubspot import errors
from connectors.hubspot.errors import TABLE, classify, match
from connectors.transport import Verdict
from tests.connectors.hubspot.fake_hubspot import fixture


def api_error(status: int, body: object = None, headers: dict[str, str] | None = None,
              cls: type[Exception] = CompaniesApiException) -> Exception:
    exc = cls(status=status, reason="reason")  # type: ignore[call-arg]
    exc.body = json.dumps(body) if isinstance(body, dict) else body  # type: ignore[attr-defined]
    exc.headers = headers  # type: ignore[attr-defined]
    return exc


def status_zero() -> Exception:
    """What the client really raises on a TLS failure: decoding the None body of its status-0
    ApiException fails inside its own handler."""
    try:
        try:
            raise CompaniesApiException(status=0, reason="SSLError\ncertificate verify failed")
        except CompaniesApiException as e:
            e.body = e.body.decode("utf-8")  # type: ignore[attr-defined]
    except AttributeError as exc:
        return exc
    raise AssertionError("unreachable")


CASES = [
    # (case, exception, row, verdict, status, wait)
    ("401 from companies", api_error(401, fixture("401.json")), "401", Verdict.AUTH, "401",
     None),
    ("401 from owners", api_error(401, fixture("401.json"), cls=OwnersApiException), "401",
     Verdict.AUTH, "401", None),
    ("403 missing scopes", api_error(403, fixture("403_missing_scopes.json")),
     "403 MISSING_SCOPES", Verdict.AUTH, "403", None),
    ("403 other", api_error(403, {"status": "error", "message": "no", "category": "FORBIDDEN"}),
     "4xx", Verdict.FAIL, "403", None),
    ("429 daily", api_error(429, fixture("429_daily.json"), cls=ContactsApiException),
     "429 DAILY", Verdict.QUOTA, "429", None),
    ("429 retry-after", api_error(429, fixture("429_ten_secondly.json"), {"Retry-After": "4"}),
     "429", Verdict.RETRY, "429", 4.0),
    ("429 interval", api_error(429, fixture("429_ten_secondly.json"),
                               {"x-hubspot-ratelimit-interval-milliseconds": "10000"}),
     "429", Verdict.RETRY, "429", 10.0),
    ("429 secondly, no headers", api_error(429, {**fixture("429_ten_secondly.json"),
                                                 "policyName": "SECONDLY"}),
     "429", Verdict.RETRY, "429", 1.0),
    ("429 unknown policy", api_error(429, "not json"), "429", Verdict.RETRY, "429", None),
    ("500", api_error(500, fixture("500.json")), "5xx", Verdict.RETRY, "500", None),
    ("503 retry-after", api_error(503, None, {"Retry-After": "2"}), "5xx", Verdict.RETRY,
     "503", 2.0),
    ("read timeout", u3.ReadTimeoutError(None, "/crm/v3/owners", "Read timed out."),  # type: ignore[arg-type]
     "timeout", Verdict.RETRY, "timeout", None),
    ("connect timeout", u3.ConnectTimeoutError("timed out"), "timeout", Verdict.RETRY,
     "timeout", None),
    ("refused", u3.NewConnectionError(None, "Connection refused"),  # type: ignore[arg-type]
     "connection", Verdict.RETRY, "connection", None),
    ("dropped", u3.ProtocolError("Connection aborted.", RemoteDisconnected("closed")),
     "connection", Verdict.RETRY, "connection", None),
    ("wrapped refused", u3.MaxRetryError(None, "/x",  # type: ignore[arg-type]
                                         u3.NewConnectionError(None, "refused")),  # type: ignore[arg-type]
     "connection", Verdict.RETRY, "connection", None),
    ("tls", status_zero(), "no response", Verdict.FAIL, "0", None),
    ("400", api_error(400, fixture("400_validation.json")), "4xx", Verdict.FAIL, "400", None),
    ("404", api_error(404, {"status": "error", "message": "Object not found",
                            "category": "OBJECT_NOT_FOUND"}), "4xx", Verdict.FAIL, "404", None),
    ("redirect", api_error(302, ""), "unexpected", Verdict.FAIL, "302", None),
    ("decode", u3.DecodeError("bad gzip"), "unexpected", Verdict.FAIL, "error", None),
]


@pytest.mark.parametrize(("case", "exc", "row", "verdict", "status", "wait"), CASES,
                         ids=[c[0] for c in CASES])
def test_given_a_failure_when_classified_then_its_row_verdict_and_wait_follow(
    case: str, exc: Exception, row: str, verdict: Verdict, status: str, wait: float | None,
) -> None:
    found = match(exc)
    assert found is not None
    assert (found.row, found.verdict, found.status, found.wait) == (row, verdict, status, wait)
    failure = classify(exc)
    assert failure is not None and failure.verdict == TABLE[row] == verdict


def test_given_the_cases_then_every_row_of_the_table_is_exercised() -> None:
    hit = {found.row for _, exc, *_ in CASES if (found := match(exc)) is not None}
    assert hit == set(TABLE)


def test_given_a_non_http_error_when_classified_then_it_is_not_a_crm_failure() -> None:
    assert classify(KeyError("programming error")) is None
    assert classify(ValueError("bad cursor")) is None


def test_given_vendor_messages_then_details_name_status_policy_and_message() -> None:
    failure = classify(api_error(429, fixture("429_daily.json")))
    assert failure is not None
    assert failure.detail == "HTTP 429 DAILY: You have reached your daily limit."
    long = classify(api_error(400, {"message": "x" * 1000, "category": "VALIDATION_ERROR"}))
    assert long is not None and len(long.detail) <= 300


def test_given_retry_after_as_an_http_date_then_seconds_until_then_are_waited() -> None:
    headers = {"Retry-After": "Wed, 25 Nov 2026 12:00:07 GMT"}
    now = 1795608000.0  # 2026-11-25 12:00:00 UTC
    assert errors.retry_after(headers, now=now) == pytest.approx(7.0)
    assert errors.retry_after({"Retry-After": "soon"}) is None
    assert errors.retry_after({"Retry-After": "-3"}) is None  # invalid: fall back to the interval


def test_given_rate_limit_headers_then_an_empty_window_is_reported() -> None:
    assert errors.exhausted_for({"X-HubSpot-RateLimit-Remaining": "5"}) is None
    assert errors.exhausted_for({"X-HubSpot-RateLimit-Remaining": "0"}) == 10.0
    assert errors.exhausted_for({"X-HubSpot-RateLimit-Remaining": "0",
                                 "X-HubSpot-RateLimit-Interval-Milliseconds": "2000"}) == 2.0
    assert errors.exhausted_for({"X-HubSpot-RateLimit-Secondly-Remaining": "0"}) == 1.0
    assert errors.exhausted_for(None) is None
