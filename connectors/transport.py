"""The one retry layer every connector uses: classify failures by table; retry, stop or fail."""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Protocol, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from sync.ports import CallStats, CredentialsError, CrmUnavailable, QuotaExhausted

T = TypeVar("T")

# The most any Retry-After is believed. Vendors ask seconds for a short-window limit or a 5xx
# (HubSpot's windows are 1 s and 10 s); a longer ask is a daily quota the error tables stop on,
# or a broken header. HubSpot pauses its limiter shared by every worker for the wait, so an
# uncapped "3600" or far-future date would park them all; the transport's own `max_wait` still
# caps each sleep below this.
RETRY_AFTER_CAP_SECONDS = 60.0
# RFC 9110 §10.2.3 delay-seconds is ASCII digits; decimals are tolerated (float() alone would
# also take "-3", "nan", "1e999" and non-ASCII digits).
_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_retry_after(value: str | None, *, now: float | None = None,
                      cap: float = RETRY_AFTER_CAP_SECONDS) -> float | None:
    """Seconds a `Retry-After` value asks for, at most `cap`: delay-seconds or an HTTP date
    (a past date is 0). None when absent or unreadable (negative, garbage, a zoneless date),
    so the caller falls back to its own wait."""
    if value is None:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return min(float(text), cap)
    try:
        at = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if at is None or at.tzinfo is None:  # "-0000" zone: the instant is unknown
        return None
    seconds = at.timestamp() - (time.time() if now is None else now)
    return min(max(0.0, seconds), cap) if math.isfinite(seconds) else None


class Verdict(StrEnum):
    """What to do about one failed call (STYLE.md §2: errors as a table, retry as one loop)."""

    RETRY = "retry"  # 429, 5xx, timeouts, Salesforce UNABLE_TO_LOCK_ROW
    FAIL = "fail"  # any other 4xx: the request is wrong; retrying repeats the error
    AUTH = "auth"  # credentials rejected: one clear error naming the setting
    QUOTA = "quota"  # a daily quota: checkpoint and stop, never sleep for a day


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed call as the connector's table classified it."""

    verdict: Verdict
    status: str  # for the call counter: an HTTP status, `timeout`, `connection`
    detail: str
    wait: float | None = None  # seconds the vendor asked us to wait (Retry-After, interval)


class Classifier(Protocol):
    def __call__(self, exc: BaseException) -> Failure | None:
        """The failure an exception stands for; None when it is not a CRM call failure."""


class TransportFailure(Exception):
    """Raised inside the retry loop to carry a classified failure."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        super().__init__(failure.detail)


class RateLimiter(Protocol):
    def acquire(self, cost: int = 1) -> None:
        """Block until `cost` calls fit in the budget."""


class LocalBucket:
    """An in-process token bucket (embedded mode): `rate` calls per `per` seconds."""

    def __init__(self, rate: float, per: float = 1.0, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.capacity = burst if burst is not None else rate
        self.fill = rate / per
        self.tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._stamp) * self.fill)
        self._stamp = now

    def acquire(self, cost: int = 1) -> None:
        if cost > self.capacity:
            # It could never fit: waiting would loop forever.
            raise ValueError(f"cost {cost} exceeds the bucket's capacity {self.capacity:g}")
        while True:
            with self._lock:
                self._refill()
                # A hair of tolerance: float refill can land a rounding error short of `cost`,
                # and a wait below the clock's resolution would then spin without time moving.
                if self.tokens >= cost - 1e-9:
                    self.tokens -= cost
                    return
                wait = (cost - self.tokens) / self.fill
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """The vendor says the window is spent: hold every caller for `seconds`.

        Refill up to now first (else the idle time before the pause would be credited against
        it), and do not stack: several workers reporting the same spent window wait it once.
        """
        with self._lock:
            self._refill()
            self.tokens = min(self.tokens, -seconds * self.fill)


class Unlimited:
    def acquire(self, cost: int = 1) -> None:
        return None

    def pause(self, seconds: float) -> None:
        return None


@dataclass
class Transport:
    """Runs CRM calls: rate limit, count, classify failures, retry with full jitter.

    `max_wait` caps any single sleep, including a vendor's Retry-After, so a bad header cannot
    park a worker; retries stop after `attempts` tries in all.
    """

    crm: str
    classify: Classifier
    limiter: RateLimiter
    credentials_setting: str
    attempts: int = 6
    base_wait: float = 0.5
    max_wait: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random | None = None
    # Optional observers (metrics): each counted call as (endpoint, status), and each retry.
    # Called outside the lock; an observer's failure never fails the CRM call.
    on_call: Callable[[str, str], None] | None = None
    on_retry: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self._calls: Counter[tuple[str, str]] = Counter()
        self._retries = 0
        self._lock = threading.Lock()
        self._rng = self.rng or random.Random()

    def stats(self) -> CallStats:
        with self._lock:
            return CallStats(calls=dict(self._calls), retries=self._retries)

    def count(self, endpoint: str, status: str) -> None:
        with self._lock:
            self._calls[(endpoint, status)] += 1
        if self.on_call is not None:
            _observe(self.on_call, endpoint, status)

    def call(self, endpoint: str, fn: Callable[[], T], ok_status: str = "200") -> T:
        """Call `fn` under the rate limit; retry what the table says to retry."""

        def attempt() -> T:
            self.limiter.acquire()
            try:
                result = fn()
            except Exception as exc:
                failure = self.classify(exc)
                if failure is None:
                    raise
                self.count(endpoint, failure.status)
                raise TransportFailure(failure) from exc
            self.count(endpoint, ok_status)
            return result

        def should_retry(exc: BaseException) -> bool:
            return isinstance(exc, TransportFailure) and exc.failure.verdict == Verdict.RETRY

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            asked = exc.failure.wait if isinstance(exc, TransportFailure) else None
            # Full jitter (AWS architecture blog): spreads retrying workers apart.
            backoff = self._rng.uniform(0, self.base_wait * 2 ** (state.attempt_number - 1))
            chosen = max(asked, backoff) if asked is not None else backoff
            return min(chosen, self.max_wait)

        def before_sleep(state: RetryCallState) -> None:
            with self._lock:
                self._retries += 1
            if self.on_retry is not None:
                _observe(self.on_retry)

        retrying = Retrying(stop=stop_after_attempt(self.attempts), wait=wait,
                            retry=retry_if_exception(should_retry), sleep=self.sleep,
                            before_sleep=before_sleep, reraise=True)
        try:
            return retrying(attempt)
        except TransportFailure as exc:
            failure = exc.failure
            if failure.verdict == Verdict.QUOTA:
                raise QuotaExhausted(self.crm, failure.detail) from exc
            if failure.verdict == Verdict.AUTH:
                raise CredentialsError(self.crm, self.credentials_setting, failure.detail) \
                    from exc
            if failure.verdict == Verdict.RETRY:
                raise CrmUnavailable(self.crm, f"{endpoint}: gave up after {self.attempts} "
                                     f"attempts: {failure.detail}") from exc
            raise CrmUnavailable(self.crm, f"{endpoint}: {failure.detail}") from exc


def _observe(hook: Callable[..., None], *args: str) -> None:
    try:
        hook(*args)
    except Exception:  # noqa: BLE001 - metrics must never fail a CRM call
        logging.getLogger(__name__).warning("transport observer failed", exc_info=True)
