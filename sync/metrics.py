"""The metrics port: what the pipeline counts, without knowing where it goes.

See docs/operations.md#metrics.

The core only talks to this protocol; the Prometheus/Redis implementations live in
`tasks/metrics.py`, so `sync` imports neither.
"""

from __future__ import annotations

from typing import Protocol


class Metrics(Protocol):
    def decision(self, outcome: str, rule: str | None) -> None:
        """One routing decision produced (kept, assigned, skipped, ...)."""

    def crm_call(self, crm: str, endpoint: str, status: str) -> None:
        """One CRM API call and how it ended (an HTTP status, `timeout`, `connection`)."""

    def retry(self, crm: str) -> None:
        """One retry of a CRM call."""

    def quota_stop(self, crm: str) -> None:
        """A sweep stopped because the CRM's daily quota ran out."""

    def speed(self, stage: str, seconds: float) -> None:
        """Speed to lead: seconds from the record's creation to `stage` (decided, written)."""

    def override(self, rule: str | None) -> None:
        """A person changed the owner of a record the router assigned under `rule`."""


class NullMetrics:
    """Counts nothing: the default, for tests and one-off runs."""

    def decision(self, outcome: str, rule: str | None) -> None:
        return None

    def crm_call(self, crm: str, endpoint: str, status: str) -> None:
        return None

    def retry(self, crm: str) -> None:
        return None

    def quota_stop(self, crm: str) -> None:
        return None

    def speed(self, stage: str, seconds: float) -> None:
        return None

    def override(self, rule: str | None) -> None:
        return None
