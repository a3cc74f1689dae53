"""POST /route's CRM read for `company_match`: the pipeline's account lookup, bounded (one
attempt per call, a deadline for the whole), because a form waits for the answer.

See docs/operations.md#post-route.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout

from config.display import shorten
from connectors import registry
from connectors.settings import Settings
from sync.compiler import CompiledRouting
from sync.enrich import SKIPPED, EnrichData
from sync.models import Record, TraceStep
from sync.pipeline import prepare
from sync.ports import Connector, CredentialsError, QuotaExhausted

log = logging.getLogger("account_router.http.lookup")

# How long a POST /route request waits for the CRM: a web form's submit is waiting, and
# routing without the match beats not answering. Each call also reads for at most this long.
LOOKUP_SECONDS = 2.0
# Lookups in flight at once in this process. One that outlives its deadline finishes in the
# background (its connector has one attempt and a read timeout of LOOKUP_SECONDS): a CRM that
# hangs ties up these threads, not the app's, and later requests skip at their own deadline.
LOOKUP_THREADS = 4

# The trace step saying a lead's company owner could not be looked up.
ACCOUNT_OWNERS = "account owner lookup"

Prepared = tuple[list[Record], dict[str, str], dict[str, tuple[TraceStep, ...]]]


class AccountLookup:
    """One connector per CRM, made on first use (a Salesforce login once, not per request)
    with one attempt per call, and a small pool running `sync.pipeline.prepare` under a
    deadline."""

    def __init__(self, deadline: float = LOOKUP_SECONDS, threads: int = LOOKUP_THREADS) -> None:
        self.deadline = deadline
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._connectors: dict[str, Connector] = {}
        self._lock = threading.Lock()

    def prepare(self, settings: Settings, routing: CompiledRouting, crm: str,
                records: Sequence[Record]) -> Prepared:
        """The records enriched with the accounts the CRM knows, the owners of the accounts
        they follow, and the trace steps; when the CRM is not configured or does not answer
        in time, the records enriched without accounts and a `skipped` step saying why."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads,
                                                thread_name_prefix="route-lookup")
            pool = self._pool
        future = pool.submit(self._read, settings, routing, crm, records)
        try:
            return future.result(timeout=self.deadline)
        except FuturesTimeout:
            future.cancel()  # not started yet (all threads busy): never runs
            why = f"{crm} did not answer within {self.deadline:g} s"
        except CredentialsError as exc:
            why = f"{crm} is not configured here or refused its credentials ({exc.setting})"
        except QuotaExhausted:
            why = f"{crm}'s daily API quota is spent"
        except Exception as exc:  # noqa: BLE001 - a form is answered whatever the CRM does
            # Connector messages are scrubbed of tokens; the class and text go to the log only.
            log.warning("POST /route: %s account lookup failed: %s", crm,
                        shorten(f"{type(exc).__name__}: {exc}"))
            why = f"{crm} not reachable"
        log.warning("POST /route: routing without company accounts: %s", why)
        return _without(routing, records, why)

    def _read(self, settings: Settings, routing: CompiledRouting, crm: str,
              records: Sequence[Record]) -> Prepared:
        return prepare(self._connector(settings, crm), routing, records)

    def _connector(self, settings: Settings, crm: str) -> Connector:
        with self._lock:
            found = self._connectors.get(crm)
        if found is not None:
            return found
        read = settings.crm_timeout_seconds
        quick = settings.model_copy(update={
            "crm_timeout_seconds": self.deadline if read is None else min(read, self.deadline)})
        factory = registry.factory(crm)
        # One attempt: the Transport's retry loop waits seconds between tries, and the form
        # would rather have its answer. A connector without the option keeps its own.
        extra = {"attempts": 1} if "attempts" in inspect.signature(factory).parameters else {}
        made = factory(quick, **extra)  # outside the lock: a Salesforce login takes a while
        with self._lock:
            kept = self._connectors.setdefault(crm, made)
        if kept is not made:
            made.close()  # another request made one meanwhile
        return kept

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            connectors, self._connectors = list(self._connectors.values()), {}
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        for connector in connectors:
            try:
                connector.close()
            except Exception as exc:  # noqa: BLE001 - closing is best effort at shutdown
                log.warning("closing a connector failed: %r", exc)


def _without(routing: CompiledRouting, records: Sequence[Record], why: str) -> Prepared:
    """The records enriched with no accounts known, each step that needed them noted as
    skipped (in step order with the others' notes), and no account owners (noted too, for
    the leads an `account_owner` rule would have looked up)."""
    enrichment = routing.enrichment
    owners_skipped: tuple[TraceStep, ...] = (
        TraceStep(ACCOUNT_OWNERS, SKIPPED, f"{why}; no account owner looked up"),)
    owners_note: dict[str, tuple[TraceStep, ...]] = {
        r.id: owners_skipped for r in records
        if routing.uses_account_owner and r.object != "account"}
    if enrichment is None:
        return list(records), {}, owners_note
    enriched, notes = enrichment.run_all(records, EnrichData())
    order = {f"enrich {name}": i for i, (name, _) in enumerate(enrichment.steps)}
    skipped = [TraceStep(f"enrich {name}", SKIPPED, f"{why}; no account looked up")
               for name, step in enrichment.steps if getattr(step, "needs_accounts", False)]
    out: dict[str, tuple[TraceStep, ...]] = {}
    for record in enriched:
        steps = [*skipped, *notes.get(record.id, ())]
        out[record.id] = (*sorted(steps, key=lambda s: order.get(s.rule, len(order))),
                          *owners_note.get(record.id, ()))
    return enriched, {}, out
