"""What both channels share: one retry executor per channel, its outcome as a `Delivery`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from connectors.transport import Classifier, Transport, TransportFailure, Unlimited, Verdict
from sync.notify import Delivery
from sync.ports import CrmError

T = TypeVar("T")

# Bounded: a notification is worth a few seconds of a worker, not minutes. 429s wait what
# Slack asks (Retry-After), capped, since a worker sleeping for a minute delays routing.
ATTEMPTS = 3
RETRY_AFTER_CAP_SECONDS = 10.0


def transport(name: str, classify: Classifier, setting: str,
              sleep: Callable[[float], None] = time.sleep, attempts: int = ATTEMPTS,
              max_wait: float = RETRY_AFTER_CAP_SECONDS) -> Transport:
    # Notifications are not a CRM's API quota: no shared rate limiter. Slack's per-channel
    # limit is about one message a second, and each rep is their own DM channel.
    return Transport(crm=name, classify=classify, limiter=Unlimited(), credentials_setting=setting,
                     attempts=attempts, base_wait=0.5, max_wait=max_wait, sleep=sleep)


def run(tx: Transport, endpoint: str, fn: Callable[[], T]) -> T | Delivery:
    """`fn` through the transport, or the `Delivery` saying how it failed for good."""
    try:
        return tx.call(endpoint, fn)
    except CrmError as exc:
        cause = exc.__cause__
        verdict = cause.failure.verdict if isinstance(cause, TransportFailure) else Verdict.FAIL
        return Delivery(ok=False, error=str(exc), retryable=verdict == Verdict.RETRY)
