"""The Salesforce error table, and the transport acting on it over (mocked) HTTP."""

from __future__ import annotations

import pytest
import requests
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connectors.ratelimit import RedisBucket
from connectors.salesforce.connector import from_settings, org_key
from connectors.salesforce.errors import (
    RowsLocked,
    classify,
    parse_limit_info,
    verdict,
)
from connectors.transport import LocalBucket, Unlimited, Verdict
from sync.ports import CrmUnavailable, QuotaExhausted
from tests.connectors.salesforce.builders import QUERY_URL, TOKEN, fixture, page, token_settings

URL = "https://acme.my.salesforce.com/services/data/v62.0/query/"


def error(cls, status: int, code: str, message: str = "m"):
    return cls(URL, status, "query", [{"message": message, "errorCode": code}])


@pytest.mark.parametrize(("exc", "expected", "status"), [
    (error(SalesforceRefusedRequest, 403, "REQUEST_LIMIT_EXCEEDED",
           "TotalRequests Limit exceeded."), Verdict.QUOTA, "403"),
    (error(SalesforceRefusedRequest, 403, "REQUEST_LIMIT_EXCEEDED",
           "ConcurrentPerOrgLongTxn Limit exceeded."), Verdict.RETRY, "403"),
    (error(SalesforceRefusedRequest, 403, "INSUFFICIENT_ACCESS"), Verdict.FAIL, "403"),
    (error(SalesforceRefusedRequest, 403, "API_DISABLED_FOR_ORG"), Verdict.FAIL, "403"),
    (error(SalesforceExpiredSession, 401, "INVALID_SESSION_ID"), Verdict.AUTH, "401"),
    (error(SalesforceMalformedRequest, 400, "UNABLE_TO_LOCK_ROW"), Verdict.RETRY, "400"),
    (error(SalesforceMalformedRequest, 400, "MALFORMED_QUERY"), Verdict.FAIL, "400"),
    (error(SalesforceMalformedRequest, 400, "INVALID_QUERY_LOCATOR"), Verdict.FAIL, "400"),
    (error(SalesforceResourceNotFound, 404, "NOT_FOUND"), Verdict.FAIL, "404"),
    (error(SalesforceGeneralError, 429, "REQUEST_LIMIT_EXCEEDED"), Verdict.RETRY, "429"),
    (error(SalesforceGeneralError, 500, "UNKNOWN_EXCEPTION"), Verdict.RETRY, "500"),
    (SalesforceGeneralError(URL, 503, "query", "<html>Service Unavailable</html>"),
     Verdict.RETRY, "503"),
    (SalesforceGeneralError(URL, 409, "query", ""), Verdict.FAIL, "409"),
    (SalesforceAuthenticationFailed("INVALID_LOGIN", "Invalid username"), Verdict.AUTH, "401"),
    (SalesforceAuthenticationFailed(503, "<html>down</html>"), Verdict.RETRY, "503"),
    (RowsLocked(["00Q"], "locked"), Verdict.RETRY, "UNABLE_TO_LOCK_ROW"),
    (requests.exceptions.ReadTimeout("read timed out"), Verdict.RETRY, "timeout"),
    (requests.exceptions.ConnectTimeout("connect timed out"), Verdict.RETRY, "timeout"),
    (requests.exceptions.ConnectionError("refused"), Verdict.RETRY, "connection"),
    (requests.exceptions.SSLError("certificate verify failed"), Verdict.FAIL, "tls"),
])
def test_the_table_classifies_each_failure(exc, expected, status):
    failure = classify(exc)
    assert failure is not None
    assert (failure.verdict, failure.status) == (expected, status)


def test_the_detail_names_status_code_and_message():
    failure = classify(error(SalesforceMalformedRequest, 400, "MALFORMED_QUERY", "unexpected"))
    assert failure is not None and failure.detail == "400 MALFORMED_QUERY: unexpected"


def test_a_retry_after_is_kept_only_for_retried_failures():
    assert classify(error(SalesforceGeneralError, 503, "X"), retry_after=7).wait == 7
    assert classify(error(SalesforceMalformedRequest, 400, "X"), retry_after=7).wait is None


def test_what_is_not_a_call_failure_is_not_classified():
    assert classify(ValueError("a bug")) is None
    assert classify(QuotaExhausted("salesforce", "x")) is None


def test_the_lookup_prefers_the_most_specific_row():
    assert verdict(403, "REQUEST_LIMIT_EXCEEDED") == Verdict.QUOTA
    assert verdict(500, "UNABLE_TO_LOCK_ROW") == Verdict.RETRY
    assert verdict(401, None) == Verdict.AUTH
    assert verdict(418, None) == Verdict.FAIL
    assert verdict(502, None) == Verdict.RETRY


@pytest.mark.parametrize(("header", "usage"), [
    ("api-usage=18/5000", (18, 5000)),
    ("api-usage=25/5000; per-app-api-usage=17/250(appName=sample-connected-app)", (25, 5000)),
    ("per-app-api-usage=17/250(appName=x)", None),
    ("", None),
    (None, None),
])
def test_sforce_limit_info_parses_the_org_usage(header, usage):
    assert parse_limit_info(header) == usage


# --- the transport acting on the table (HTTP mocked) ---------------------------------------------

def test_given_request_limit_exceeded_then_quota_exhausted_after_one_request_and_no_sleep(
        connector, rsps, sleeps):
    rsps.get(QUERY_URL, status=403, json=fixture("error_request_limit.json"))

    with pytest.raises(QuotaExhausted, match="REQUEST_LIMIT_EXCEEDED"):
        connector.list_records("Account", since=None, cursor=None)

    assert len(rsps.calls) == 1 and sleeps == []
    assert connector.stats().calls == {("query", "403"): 1}


def test_given_a_500_then_it_is_retried_and_the_retry_succeeds(connector, rsps, sleeps):
    rsps.get(QUERY_URL, status=500, json=fixture("error_server.json"))
    rsps.get(QUERY_URL, json=fixture("query_accounts_page2.json"))

    listed = connector.list_records("Account", since=None, cursor=None)

    assert len(listed.records) == 1
    assert len(rsps.calls) == 2 and len(sleeps) == 1 and 0 <= sleeps[0] <= 0.5
    stats = connector.stats()
    assert stats.calls == {("query", "500"): 1, ("query", "200"): 1} and stats.retries == 1


def test_given_a_400_then_it_is_not_retried(connector, rsps, sleeps):
    rsps.get(QUERY_URL, status=400, json=fixture("error_malformed_query.json"))

    with pytest.raises(CrmUnavailable, match="INVALID_TYPE"):
        connector.list_records("Account", since=None, cursor=None)

    assert len(rsps.calls) == 1 and sleeps == []


def test_given_a_request_level_lock_then_it_is_retried(connector, rsps, sleeps):
    rsps.get(QUERY_URL, status=400, json=fixture("error_row_locked.json"))
    rsps.get(QUERY_URL, json=page([]))

    connector.list_records("Account", since=None, cursor=None)

    assert len(rsps.calls) == 2 and len(sleeps) == 1


def test_given_a_503_with_retry_after_then_the_wait_honours_it(connector, rsps, sleeps):
    rsps.get(QUERY_URL, status=503, json=fixture("error_server.json"),
             headers={"Retry-After": "7"})
    rsps.get(QUERY_URL, json=page([]))

    connector.list_records("Account", since=None, cursor=None)

    assert sleeps == [7.0]


def test_given_a_503_with_retry_after_as_an_http_date_then_it_is_honoured_up_to_the_cap(
        connector, rsps, sleeps):
    # The shared parser (connectors/transport.py) reads the date form too; a far date is
    # capped, and the transport's max_wait caps the sleep (it used to be ignored: a 0.5 s retry).
    rsps.get(QUERY_URL, status=503, json=fixture("error_server.json"),
             headers={"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"})
    rsps.get(QUERY_URL, json=page([]))

    connector.list_records("Account", since=None, cursor=None)

    assert sleeps == [connector.transport.max_wait]


def test_given_timeouts_and_refused_connections_then_they_are_retried(connector, rsps, sleeps):
    rsps.get(QUERY_URL, body=requests.exceptions.ReadTimeout("read timed out"))
    rsps.get(QUERY_URL, body=requests.exceptions.ConnectionError("connection refused"))
    rsps.get(QUERY_URL, json=page([]))

    connector.list_records("Account", since=None, cursor=None)

    assert len(sleeps) == 2
    assert connector.stats().calls == {("query", "timeout"): 1, ("query", "connection"): 1,
                                       ("query", "200"): 1}


def test_given_a_server_that_stays_down_then_crm_unavailable_after_bounded_attempts(
        connector, rsps, sleeps):
    for _ in range(6):
        rsps.get(QUERY_URL, status=503, json=fixture("error_server.json"))

    with pytest.raises(CrmUnavailable, match="gave up after 6 attempts"):
        connector.list_records("Account", since=None, cursor=None)

    assert len(rsps.calls) == 6 and len(sleeps) == 5


def test_given_a_limiter_then_every_call_acquires_from_it(rsps):
    class Counting:
        acquired = 0

        def acquire(self, cost: int = 1) -> None:
            Counting.acquired += cost

    conn = from_settings(token_settings(), limiter=Counting())
    rsps.get(QUERY_URL, json=page([]))
    rsps.get(QUERY_URL, json=page([]))

    conn.users()

    assert Counting.acquired == 2


def test_given_no_limiter_then_a_local_bucket_at_the_configured_rate():
    conn = from_settings(token_settings(salesforce_calls_per_second=7))
    assert isinstance(conn.transport.limiter, LocalBucket)
    assert conn.transport.limiter.fill == 7
    assert isinstance(from_settings(token_settings(), limiter=Unlimited()).transport.limiter,
                      Unlimited)


def test_given_a_redis_url_when_two_connectors_share_an_org_then_they_spend_one_redis_budget(
    redis_url,
):
    """DESIGN §2: the rate limit is shared by every worker of an org, not one per process."""
    first = from_settings(token_settings(redis_url=redis_url,
                                         salesforce_calls_per_second=3))
    second = from_settings(token_settings(redis_url=redis_url,
                                          salesforce_calls_per_second=3))
    other = from_settings(token_settings(redis_url=redis_url,
                                         SALESFORCE_INSTANCE_URL="https://other.my.salesforce.com"))
    try:
        a, b, c = (conn.transport.limiter for conn in (first, second, other))
        assert isinstance(a, RedisBucket) and isinstance(b, RedisBucket)
        assert a.key == b.key != getattr(c, "key", None)
        assert TOKEN not in a.key
        for _ in range(3):  # the org's whole burst, spent through the first connector
            a.acquire()
        waits: list[float] = []
        b._sleep = lambda seconds: (waits.append(seconds), b.reset())
        b.acquire()  # the second connector finds the org's budget empty and waits
        assert waits and waits[0] > 0
    finally:
        for conn in (first, second, other):
            conn.close()


def test_given_an_org_id_then_the_budget_is_named_by_it_in_either_id_form():
    assert org_key(token_settings(SALESFORCE_ORG_ID="00D000000000001AAA")) == \
        org_key(token_settings(SALESFORCE_ORG_ID="00D000000000001")) == "00D000000000001"


def test_given_an_error_that_echoes_the_token_then_the_message_masks_it(connector, rsps):
    rsps.get(QUERY_URL, status=400,
             json=[{"message": f"bad header Bearer {TOKEN}", "errorCode": "MALFORMED_QUERY"}])

    with pytest.raises(CrmUnavailable) as caught:
        connector.list_records("Account", since=None, cursor=None)

    assert TOKEN not in str(caught.value) and "***" in str(caught.value)
    assert TOKEN not in repr(connector) and TOKEN not in repr(connector.transport)
