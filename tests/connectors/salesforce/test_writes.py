"""Salesforce owner writes: composite PATCH in batches of 200, per-record results, locked rows."""

from __future__ import annotations

import pytest

from sync.ports import QuotaExhausted, WriteResult
from tests.connectors.salesforce.builders import (
    COMPOSITE_URL,
    body,
    failed,
    fixture,
    ok,
    sf_id,
)

AVA = "005RM000001AVAAYA4"
LEADS = ["00QRM000001a001AAA", "00QRM000001a002AAA", "00QRM000001a003AAA",
         "00QRM000001a004AAA"]


def test_given_450_records_when_writing_then_three_patches_of_200_200_50(connector, rsps):
    owners = {sf_id("001", n): AVA for n in range(450)}
    ids = list(owners)
    for start in (0, 200, 400):
        rsps.patch(COMPOSITE_URL, json=[ok(i) for i in ids[start:start + 200]])

    results = connector.write_owners("account", owners)

    assert [len(body(c)["records"]) for c in rsps.calls] == [200, 200, 50]
    first = body(rsps.calls[0])
    assert first["allOrNone"] is False
    assert first["records"][0] == {"attributes": {"type": "Account"}, "id": ids[0],
                                   "OwnerId": AVA}
    for call in rsps.calls:
        assert call.request.method == "PATCH"
        assert call.request.url == COMPOSITE_URL
        assert call.request.headers["Sforce-Auto-Assign"] == "FALSE"
    assert [r.id for r in results] == ids and all(r.ok for r in results)


def test_given_per_record_errors_then_each_record_gets_its_own_result(connector, rsps, sleeps):
    # The 4th record is locked: it alone is re-sent, and succeeds.
    rsps.patch(COMPOSITE_URL, json=fixture("composite_mixed.json"))
    rsps.patch(COMPOSITE_URL, json=[ok(LEADS[3])])

    results = connector.write_owners("Lead", dict.fromkeys(LEADS, AVA))

    assert results == [
        WriteResult(LEADS[0], True),
        WriteResult(LEADS[1], False, "INVALID_CROSS_REFERENCE_KEY: invalid cross reference id"),
        WriteResult(LEADS[2], False, "ENTITY_IS_DELETED: entity is deleted"),
        WriteResult(LEADS[3], True),
    ]
    assert [r["id"] for r in body(rsps.calls[1])["records"]] == [LEADS[3]]
    assert rsps.calls[1].request.headers["Sforce-Auto-Assign"] == "FALSE"
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.5  # the transport's first backoff


def test_given_a_row_that_stays_locked_then_it_fails_retryable_after_bounded_retries(
        connector, rsps, sleeps):
    locked = [failed("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record")]
    rsps.patch(COMPOSITE_URL, json=[ok(LEADS[0]), *locked])
    for _ in range(5):
        rsps.patch(COMPOSITE_URL, json=locked)

    results = connector.write_owners("Lead", {LEADS[0]: AVA, LEADS[1]: AVA})

    assert results[0] == WriteResult(LEADS[0], True)
    assert results[1] == WriteResult(
        LEADS[1], False, "UNABLE_TO_LOCK_ROW: unable to obtain exclusive access to this record",
        retryable=True)
    assert len(rsps.calls) == 6  # the transport's attempts, no more
    assert all([r["id"] for r in body(c)["records"]] == [LEADS[1]] for c in rsps.calls[1:])
    # Full jitter under a doubling cap: 0.5, 1, 2, 4, 8 seconds.
    assert len(sleeps) == 5
    assert all(0 <= wait <= 0.5 * 2 ** n for n, wait in enumerate(sleeps))


def test_given_a_batch_that_keeps_failing_then_it_and_later_batches_fail_retryable(
        connector, rsps, sleeps):
    owners = {sf_id("001", n): AVA for n in range(250)}
    for _ in range(6):
        rsps.patch(COMPOSITE_URL, status=503, json=fixture("error_server.json"))

    results = connector.write_owners("Account", owners)

    assert len(rsps.calls) == 6  # the second batch is not attempted against a failing org
    assert len(results) == 250 and not any(r.ok for r in results)
    assert all(r.retryable and "gave up after 6 attempts" in (r.error or "") for r in results)
    assert len(sleeps) == 5


def test_given_a_batch_that_is_refused_as_malformed_then_no_retry_and_not_retryable(
        connector, rsps, sleeps):
    rsps.patch(COMPOSITE_URL, status=400,
               json=[{"message": "Invalid JSON", "errorCode": "JSON_PARSER_ERROR"}])

    results = connector.write_owners("Lead", {LEADS[0]: AVA})

    assert results == [WriteResult(LEADS[0], False, results[0].error, retryable=False)]
    assert "JSON_PARSER_ERROR" in (results[0].error or "")
    assert len(rsps.calls) == 1 and sleeps == []


def test_given_the_daily_quota_runs_out_while_writing_then_quota_exhausted_without_sleep(
        connector, rsps, sleeps):
    rsps.patch(COMPOSITE_URL, status=403, json=fixture("error_request_limit.json"))

    with pytest.raises(QuotaExhausted):
        connector.write_owners("Lead", {LEADS[0]: AVA})

    assert len(rsps.calls) == 1 and sleeps == []


def test_given_no_owners_then_nothing_is_sent(connector, rsps):
    assert connector.write_owners("Lead", {}) == []
    assert len(rsps.calls) == 0
