"""The one retry layer: the verdict decides retry, stop or fail; waits honour the vendor."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from connectors.transport import (
    RETRY_AFTER_CAP_SECONDS,
    Failure,
    Transport,
    Verdict,
    parse_retry_after,
)
from sync.ports import CredentialsError, CrmUnavailable, QuotaExhausted


class Boom(Exception):
    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        super().__init__(failure.detail)


def classify(exc: BaseException) -> Failure | None:
    return exc.failure if isinstance(exc, Boom) else None


class CountingLimiter:
    def __init__(self) -> None:
        self.acquired = 0

    def acquire(self, cost: int = 1) -> None:
        self.acquired += cost


def transport(sleeps: list[float], **kw: object) -> tuple[Transport, CountingLimiter]:
    limiter = CountingLimiter()
    t = Transport(crm="acme", classify=classify, limiter=limiter,
                  credentials_setting="ACME_TOKEN", sleep=sleeps.append,
                  rng=random.Random(7), **kw)  # type: ignore[arg-type]
    return t, limiter


def failing(*failures: Failure, then: object = "ok") -> tuple[Callable[[], object], list[int]]:
    """A call that fails with each failure in turn, then returns `then`."""
    calls = [0]

    def fn() -> object:
        calls[0] += 1
        if calls[0] <= len(failures):
            raise Boom(failures[calls[0] - 1])
        return then

    return fn, calls


RETRY = Failure(Verdict.RETRY, "503", "HTTP 503")


def test_given_retryable_failures_then_they_are_retried_with_jittered_backoff() -> None:
    sleeps: list[float] = []
    t, limiter = transport(sleeps)
    fn, calls = failing(RETRY, RETRY)

    assert t.call("things.list", fn) == "ok"

    assert calls[0] == 3 and limiter.acquired == 3  # the limit is paid per attempt
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 1.0  # full jitter, doubling
    assert t.stats().calls == {("things.list", "503"): 2, ("things.list", "200"): 1}
    assert t.stats().retries == 2


def test_given_a_vendor_wait_then_it_is_honoured_but_capped() -> None:
    sleeps: list[float] = []
    t, _ = transport(sleeps, max_wait=30.0)
    fn, _ = failing(Failure(Verdict.RETRY, "429", "slow down", wait=4.0),
                    Failure(Verdict.RETRY, "429", "slow down", wait=3600.0))

    t.call("things.list", fn)

    assert sleeps == [4.0, 30.0]


def test_given_retries_exhausted_then_unavailable_names_the_attempts() -> None:
    sleeps: list[float] = []
    t, _ = transport(sleeps, attempts=3)
    fn, calls = failing(RETRY, RETRY, RETRY, RETRY)

    with pytest.raises(CrmUnavailable, match="things.list: gave up after 3 attempts: HTTP 503"):
        t.call("things.list", fn)

    assert calls[0] == 3 and len(sleeps) == 2


@pytest.mark.parametrize(("verdict", "error"), [
    (Verdict.FAIL, CrmUnavailable),
    (Verdict.AUTH, CredentialsError),
    (Verdict.QUOTA, QuotaExhausted),
])
def test_given_a_final_verdict_then_it_is_raised_after_one_call_without_sleeping(
    verdict: Verdict, error: type[Exception],
) -> None:
    sleeps: list[float] = []
    t, _ = transport(sleeps)
    fn, calls = failing(Failure(verdict, "400", "nope"))

    with pytest.raises(error, match="nope") as raised:
        t.call("things.update", fn)

    assert calls[0] == 1 and sleeps == []
    assert t.stats().calls == {("things.update", "400"): 1}
    if verdict == Verdict.AUTH:
        assert raised.value.setting == "ACME_TOKEN"  # type: ignore[attr-defined]


def test_given_an_unclassified_error_then_it_propagates_as_is_and_is_not_counted() -> None:
    sleeps: list[float] = []
    t, _ = transport(sleeps)

    def fn() -> object:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        t.call("things.list", fn)

    assert sleeps == [] and t.stats().calls == {}


def test_given_a_custom_ok_status_then_it_is_counted() -> None:
    t, _ = transport([])
    t.call("things.create", lambda: None, ok_status="201")
    assert t.stats().calls == {("things.create", "201"): 1}
    assert t.stats().total == 1


# --- Retry-After: one parser for every vendor ----------------------------------------------------

NOW = 1795608000.0  # 2026-11-25 12:00:00 UTC


@pytest.mark.parametrize(("value", "seconds"), [
    ("7", 7.0), (" 7 ", 7.0), ("0", 0.0), ("0.5", 0.5),
    ("Wed, 25 Nov 2026 12:00:07 GMT", 7.0),  # an HTTP date: the seconds until then
    ("Wednesday, 25-Nov-26 12:00:07 GMT", 7.0),  # the obsolete RFC 850 form HTTP still allows
    ("Wed, 25 Nov 2026 11:00:00 GMT", 0.0),  # a date already past: go now
])
def test_given_a_readable_retry_after_when_parsed_then_its_seconds(value, seconds) -> None:
    assert parse_retry_after(value, now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [
    None, "", "soon", "-3", "-0.5", "nan", "inf", "1e3", "٣",  # "٣": Arabic-Indic three
    "Wed, 25 Nov 2026 12:00:07 -0000",  # no zone: the instant is unknown
    "Wed, 32 Nov 2026 12:00:07 GMT",
])
def test_given_garbage_or_a_negative_retry_after_when_parsed_then_none(value) -> None:
    # None, not 0: the caller then falls back to its own wait instead of hammering the vendor.
    assert parse_retry_after(value, now=NOW) is None


def test_given_a_huge_retry_after_when_parsed_then_it_is_capped() -> None:
    assert parse_retry_after("99999999999999999999", now=NOW) == RETRY_AFTER_CAP_SECONDS
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now=NOW) == RETRY_AFTER_CAP_SECONDS
    assert parse_retry_after("3600", now=NOW, cap=10.0) == 10.0
    assert parse_retry_after("4", now=NOW, cap=10.0) == 4.0
