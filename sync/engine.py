"""Routes batches of records against the state store: snapshot, decide, compare-and-set commit."""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Container, Iterable, Mapping, MutableMapping, Sequence
from datetime import datetime
from typing import cast

from sync.compiler import CompiledRouting
from sync.decide import OwnerInfo, RoutingContext, Traces, decide
from sync.models import Decision, Outcome, Record, TraceStep
from sync.state.base import StateStore

# Under heavy contention a batch may lose the compare-and-set; it re-reads and re-decides. The
# bound only turns a livelock (a bug) into an error instead of a hang.
MAX_ATTEMPTS = 1000


class CommitConflict(RuntimeError):
    """A batch lost the compare-and-set MAX_ATTEMPTS times in a row."""


def route_batch(
    records: Sequence[Record],
    routing: CompiledRouting,
    store: StateStore,
    now: datetime,
    *,
    trigger: str = "file",
    users: Mapping[str, OwnerInfo] | None = None,
    account_owners: Mapping[str, str] | None = None,
    learn: Container[str] | None = None,
    extra: Iterable[Decision] = (),
    audit: bool = True,
    dry_run: bool = False,
    crm: str | None = None,
    chosen: Mapping[str, str] | None = None,
    enriched: Mapping[str, tuple[TraceStep, ...]] | None = None,
    traces: Traces | None = None,
) -> list[Decision]:
    """Decide every record and commit pool turns and audit rows atomically.

    The decisions are pure functions of one snapshot; the commit succeeds only if no other
    process took a turn from the same pools meanwhile, else the batch is decided again on a
    fresh snapshot. So concurrent workers never hand out the same turn twice.
    `extra` decisions (e.g. skipped rows) are audited in the same transaction. With
    `audit=False` only the pool turns are committed (the caller audits after writing); with
    `dry_run=True` nothing is committed at all: the decisions are what would happen.
    `chosen`: records whose current owner a person chose over ours (id -> the reason to keep
    it), kept under every `respect_existing_owner` policy (sync/overrides.py).
    `enriched`: what enrichment did to the records (id -> trace steps), put in their traces.
    `traces`: a dict kept across batches (`RoutingContext.traces`), so their equal traces are
    one object, which the SQLite history encodes once.
    The owners of this batch's accounts are added to `account_owners` (when a dict) for later
    batches; with `learn`, only the domains in it (those some later lead will look up), so the
    map does not grow with every account of a long file.
    """
    extra = list(extra)
    track = routing.uses_account_owner
    for _ in range(MAX_ATTEMPTS):
        # The pools and the pauses in one step (one round trip over Redis).
        snapshots, paused = store.load_pools_and_pauses(
            RoutingContext.pool_windows(routing, now), now)
        # This batch's accounts overlay the caller's map, so a lost commit leaves it untouched
        # without copying it (a copy per batch made long files quadratic).
        learned: dict[str, str] = {}
        # (ChainMap writes only to its first map; typeshed asks every map to be mutable.)
        owners = ChainMap(learned, cast(MutableMapping[str, str], account_owners)) \
            if account_owners is not None else learned
        ctx = RoutingContext(routing=routing, now=now, paused=paused,
                             pools=snapshots, users=users, account_owners=owners, crm=crm,
                             chosen=chosen or {}, enriched=enriched or {},
                             traces={} if traces is None else traces,
                             track_matched=not dry_run)  # nothing recorded: not needed
        expected = {name: snap.version for name, snap in snapshots.items()}
        decisions: list[Decision] = []
        for record in records:
            decision = decide(record, ctx, trigger)
            if decision.turn is not None:
                ctx.apply(decision.turn)
            if track and record.object == "account" and record.domain and decision.owner:
                # Leads later in the same batch may follow this account's owner. Store what the
                # CRM would report (its CRM id), not the rep id: with a CRM directory (`users`)
                # a bare rep id is no known user and the lead would not follow.
                learned[record.domain] = decision.owner_crm_id or decision.owner
            decisions.append(decision)
        if dry_run:
            return decisions
        changes = ctx.pending_changes()
        if store.commit({c.pool: expected[c.pool] for c in changes}, changes,
                        [*decisions, *extra] if audit else []):
            if isinstance(account_owners, dict):
                account_owners.update(learned if learn is None else
                                      {d: o for d, o in learned.items() if d in learn})
            return decisions
    raise CommitConflict(f"gave up after {MAX_ATTEMPTS} conflicting commits")


def skipped(record_id: str, reason: str, now: datetime, *, object: str = "account",
            crm: str = "file", trigger: str = "file", previous_owner: str | None = None
            ) -> Decision:
    """A record that could not be routed: reported and audited, never dropped."""
    return Decision(record_id=record_id, object=object, crm=crm, outcome=Outcome.SKIPPED,
                    previous_owner=previous_owner, reason=reason, trigger=trigger,
                    decided_at=now, matched=())  # it reached no rule: known to match none


def with_written(decision: Decision, written_at: datetime) -> Decision:
    return decision._replace(written_at=written_at)
