"""The CRM pipeline: fetch, lock, recheck, decide, write, audit, checkpoint.

See docs/operations.md#the-pipeline.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sync.compiler import CompiledRouting
from sync.decide import OwnerInfo, RoutingContext, decide
from sync.engine import route_batch, skipped
from sync.enrich import AccountIndex, EnrichData
from sync.metrics import Metrics, NullMetrics
from sync.models import (
    Decision,
    Outcome,
    Record,
    ReviewItem,
    TraceStep,
    decision_key,
    review_id,
)
from sync.normalize import build_record, id_key
from sync.overrides import (
    DEFAULT_MARK_TTL,
    Overrides,
    OwnerChange,
    OwnWrites,
    Verdict,
    judge,
    kept_reason,
)
from sync.ports import (
    AfterWrite,
    Connector,
    CrmRecord,
    CrmSpec,
    CrmUnavailable,
    QuotaExhausted,
    WriteResult,
    Written,
)
from sync.precreate import as_made, match_keys
from sync.state.base import Precreated, StateStore

if TYPE_CHECKING:  # SQLAlchemy loads only where a history is opened
    from sync.history import History

log = logging.getLogger("account_router.pipeline")

WRITES = (Outcome.ASSIGNED, Outcome.FALLBACK)
RETRY_CHUNK = 100  # previously failed ids re-read per call
MAX_PROBLEMS_KEPT = 20  # skipped or unwritten decisions a run report names (the CLI shows them)
# The owner token of record locks for the run in this context (see `Pipeline.locks_owned_by`);
# unset, each batch locks under a fresh token.
_lock_owner: ContextVar[str | None] = ContextVar("account_router_lock_owner", default=None)


@dataclass
class RunReport:
    """What one sweep or reprocess did; the CLI prints it and derives the exit status."""

    crm: str
    object: str
    outcomes: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    reps: Counter[str] = field(default_factory=Counter)
    written: int = 0
    write_failed: int = 0
    locked_elsewhere: int = 0
    pages: int = 0
    listed: int = 0  # records the sweep's listing returned so far
    total: int | None = None  # records the listing holds in all, when the CRM said so
    stopped: str | None = None  # why the run stopped early (quota), None when it finished
    changes: list[Decision] = field(default_factory=list)  # dry run: what would change
    speed: list[float] = field(default_factory=list)  # seconds, record created -> written
    # The first skipped or unwritten decisions, so the CLI can say which records and why (the
    # audit has every one; a sweep of a broken export must not hold them all in memory).
    problems: list[Decision] = field(default_factory=list)
    # Set by a caller that wants every decision audited by this run (a review's write).
    settled: list[Decision] | None = None

    @property
    def failed(self) -> bool:
        return bool(self.write_failed or self.outcomes.get("skipped"))

    def add(self, decision: Decision) -> None:
        self.outcomes[str(decision.outcome)] += 1
        if (decision.outcome == Outcome.SKIPPED or decision.write_error) \
                and len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(decision)
        if decision.outcome in WRITES:
            self.rules[decision.rule or "(fallback)"] += 1
            if decision.owner:
                self.reps[decision.owner] += 1


def to_record(spec: CrmSpec, routing: CompiledRouting, obj: str, crm_record: CrmRecord,
              crm: str | None = None) -> Record:
    """Normalize a record of `spec`'s CRM object `obj` through its field map, the routing
    file's `field_maps` applied (ValueError if unusable). No CRM call: POST /route normalizes
    a record the CRM does not hold yet the same way."""
    kind = spec.kind(obj)
    mapping = spec.field_map(obj, routing.file.field_maps)
    props = crm_record.properties
    values: dict[str, object] = {f"fields.{k}": v for k, v in props.items() if v is not None}
    for normalized, crm_field in mapping.items():
        value = props.get(crm_field)
        if value is not None:
            values[normalized] = value
    values["id"] = crm_record.id
    return build_record(values, object=kind, crm=crm or spec.name,
                        created_at=crm_record.created_at)


def prepare(connector: Connector, routing: CompiledRouting, records: Sequence[Record]
            ) -> tuple[list[Record], dict[str, str], dict[str, tuple[TraceStep, ...]]]:
    """A batch's records enriched (docs/routing-file.md#enrichment), the owners of the
    accounts their leads follow, and what enrichment did to each (id -> trace steps): what the
    CRM is read for before deciding. The pipeline runs it for every batch; `POST /route` for
    its one record when a step needs accounts (bounded there: tasks/http/lookup.py)."""
    enrichment = routing.enrichment
    if enrichment is None:
        return list(records), account_owners(connector, routing, records), {}
    data = account_names(connector, records) if enrichment.needs_accounts else EnrichData()
    enriched, notes = enrichment.run_all(records, data)
    return enriched, account_owners(connector, routing, enriched), notes


def account_owners(connector: Connector, routing: CompiledRouting, records: Sequence[Record]
                   ) -> dict[str, str]:
    """Owner id by domain of the accounts the leads' domains match, when a rule follows the
    account owner (none read otherwise)."""
    if not routing.uses_account_owner:
        return {}
    domains = sorted({r.domain for r in records
                      if r.object != "account" and r.domain and not r.freemail})
    return connector.accounts_by_domain(domains) if domains else {}


def account_names(connector: Connector, records: Sequence[Record]) -> EnrichData:
    """The accounts `company_match` may match these records' leads to: those the connector
    finds by the leads' company names (batched, `accounts_by_name`), and the accounts of the
    leads' own domains (a lead whose domain has an account keeps it). A connector without a
    name lookup gives none: its leads are left as they are."""
    lookup = getattr(connector, "accounts_by_name", None)
    leads = [r for r in records if r.object != "account"]
    names = sorted({r.raw["name"] for r in leads if "name" in r.raw})
    if lookup is None or not names:
        return EnrichData()
    domains = sorted({r.domain for r in leads if r.domain and not r.freemail})
    known = connector.accounts_by_domain(domains) if domains else {}
    return EnrichData(AccountIndex.build(lookup(names), known_domains=known))


class RecordBusy(RuntimeError):
    """The record's lock is held elsewhere (a batch routing it right now)."""


@dataclass
class _Held:
    """A decided owner write not yet sent: its record stays locked (under `token`) until the
    write lands or fails onto the retry list, and its audit row waits for the result."""

    decision: Decision
    owner: str  # the CRM owner id to write
    key: str  # the record's lock key
    token: str
    page: int  # the sweep page it was read on (0 outside a sweep)
    at: datetime  # when it was decided
    record: Record  # what was routed, for the followers once the write lands
    # The POST /route decision it carries out: kept again if the write fails, so the retry
    # writes the same owner rather than routing the record anew.
    precreated: Precreated | None = None


@dataclass
class _Writes:
    """Owner writes carried across a sweep's pages, so the CRM sees full batches rather than
    one part-filled batch per page. `batch` 0: no carrying, each batch writes its own."""

    batch: int = 0
    held: dict[str, _Held] = field(default_factory=dict)

    def take(self, n: int) -> list[_Held]:
        """The `n` oldest held writes, removed from the buffer."""
        ids = list(self.held)[:n]
        return [self.held.pop(i) for i in ids]

    def oldest_page(self) -> int | None:
        return min((h.page for h in self.held.values()), default=None)


class Pipeline:
    """Routes CRM records through one connector, in this process (embedded) or in a task."""

    def __init__(
        self,
        connector: Connector,
        routing: CompiledRouting,
        store: StateStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        recheck_after: float = 30.0,
        users_ttl: float = 300.0,
        lock_ttl: float = 120.0,
        dry_run: bool = False,
        metrics: Metrics | None = None,
        followers: Sequence[AfterWrite] = (),
        mark_ttl: timedelta = DEFAULT_MARK_TTL,
    ) -> None:
        self.connector = connector
        # Called with each batch of landed owner writes (notify, first-touch watch, own-write
        # marks); see `_follow`.
        self.followers = tuple(followers)
        # Our own writes are marked before their records are unlocked, ahead of the other
        # followers: a person's change is then never confused with our write's echo, whatever
        # path wrote (docs/operations.md#overrides).
        self.own_writes = OwnWrites(store, mark_ttl)
        self.crm = connector.name
        self.spec = connector.spec  # the CRM's objects and field maps, as it declares them
        self.routing = routing
        self.store = store
        self.clock = clock
        self.recheck_after = recheck_after
        self.users_ttl = users_ttl
        self.lock_ttl = lock_ttl
        self.dry_run = dry_run
        self._users: Mapping[str, OwnerInfo] | None = None
        self._users_at: datetime | None = None
        self.metrics: Metrics = metrics or NullMetrics()
        self.overrides = Overrides(
            store, metrics=self.metrics, clock=clock,
            rep_of=lambda owner: routing.owner_to_rep.get(id_key(owner)))
        # CRM calls are reported as deltas of `connector.stats()` since the last report; the
        # baseline is shared by every run of this pipeline, so overlapping runs never count a
        # call twice.
        self._calls_lock = threading.Lock()
        self._calls_reported = self._call_stats()

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    @contextmanager
    def locks_owned_by(token: str) -> Iterator[None]:
        """Lock records under `token` for every batch run inside the block (this thread or
        task only). A caller that runs the same work again after a state-store outage keeps
        its token, so the locks its first attempt could not release are its own again rather
        than blocking the records until they expire."""
        reset = _lock_owner.set(token)
        try:
            yield
        finally:
            _lock_owner.reset(reset)

    def users(self) -> Mapping[str, OwnerInfo] | None:
        """The CRM's owners by id key, cached for `users_ttl` seconds (one call per refresh);
        None for a source without a user directory (a file), judged as in file mode."""
        if not getattr(self.connector, "directory", True):
            return None
        now = self.clock()
        if self._users is None or self._users_at is None or \
                (now - self._users_at).total_seconds() > self.users_ttl:
            self._users = {id_key(u.id): OwnerInfo(active=u.active, person=u.person)
                           for u in self.connector.users()}
            self._users_at = now
        return self._users

    def to_record(self, obj: str, crm_record: CrmRecord) -> Record:
        """Normalize a CRM record through the object's field map (ValueError if unusable)."""
        return to_record(self.spec, self.routing, obj, crm_record, self.crm)

    # -- metrics -------------------------------------------------------------------------

    def _call_stats(self) -> tuple[dict[tuple[str, str], int], int]:
        stats = getattr(self.connector, "stats", None)
        if stats is None:
            return {}, 0
        current = stats()
        return dict(current.calls), current.retries

    def _report_calls(self) -> None:
        """Feed the CRM calls and retries made since the last report into the metrics."""
        with self._calls_lock:
            calls, retries = self._call_stats()
            before, retried = self._calls_reported
            self._calls_reported = (calls, retries)
        for (endpoint, status), n in calls.items():
            for _ in range(n - before.get((endpoint, status), 0)):
                self.metrics.crm_call(self.crm, endpoint, status)
        for _ in range(retries - retried):
            self.metrics.retry(self.crm)

    def _counted(self, decision: Decision, report: RunReport) -> None:
        """Add a decision to the run's report and, unless a dry run, to the metrics."""
        report.add(decision)
        if self.dry_run:
            return
        self.metrics.decision(str(decision.outcome), decision.rule)
        # Speed to lead is about records we give an owner: a sweep re-deciding a year-old kept
        # record would otherwise fill the top bucket on every run.
        if decision.outcome in WRITES and decision.created_at is not None \
                and decision.decided_at is not None:
            self.metrics.speed("decided",
                               (decision.decided_at - decision.created_at).total_seconds())

    # -- entry points --------------------------------------------------------------------

    def route_ids(self, obj: str, ids: Sequence[str], *, trigger: str = "reprocess",
                  now: datetime | None = None, report: RunReport | None = None) -> RunReport:
        """Route chosen records (webhooks, ops reprocessing, failed-write retries)."""
        obj = self.spec.canonical_object(obj)
        report = report or RunReport(self.crm, obj)
        wanted = list(dict.fromkeys(i.strip() for i in ids if i.strip()))
        found = self.connector.read_records(obj, wanted)
        present = {r.id for r in found}
        gone = [i for i in wanted if i not in present]
        try:
            self._process(obj, found, trigger=trigger, read_at=None, now=now, report=report,
                          gone=gone)
        finally:
            self._report_calls()  # the read above is outside the batch
        return report

    def write_decided(self, obj: str, decision: Decision, *, expect_owner: str | None,
                      now: datetime | None = None) -> Decision:
        """Write an owner decided outside routing (a review approved or reassigned): lock the
        record, re-read its owner, and write only if it is still `expect_owner` (the owner it
        had when the proposal was made), through the same write path as routing (audited,
        followers run). Returns the audited decision: written (`written_at` set), failed
        (`write_error`), or `kept_existing` when someone else set an owner meanwhile (nothing
        written) or `skipped` when the record is gone. Raises RecordBusy when another worker
        holds the record's lock."""
        obj = self.spec.canonical_object(obj)
        instant = now or self.clock()
        report = RunReport(self.crm, obj, settled=[])
        key = f"{self.crm}:{obj}:{decision.record_id}"
        token = _lock_owner.get() or uuid.uuid4().hex
        if key not in self.store.lock_records([key], token, self.lock_ttl):
            raise RecordBusy(f"{key} is being routed by another worker; try again")
        try:
            # The whole record, not only its owner: the followers (notify...) are given it.
            found = self.connector.read_records(obj, [decision.record_id])
            record = self.to_record(obj, found[0]) if found else None
        except BaseException:
            self.store.unlock_records([key], token)
            raise
        finally:
            self._report_calls()
        if record is None:
            self.store.unlock_records([key], token)
            gone = skipped(decision.record_id, "record gone from the CRM", instant,
                           object=decision.object, crm=self.crm, trigger=decision.trigger)
            self.store.commit({}, [], [gone])
            return gone
        current = record.owner
        if id_key(current or "") != id_key(expect_owner or ""):
            self.store.unlock_records([key], token)
            rep = self.routing.rep_for_owner(current)
            kept = decision._replace(
                outcome=Outcome.KEPT_EXISTING, previous_owner=rep or current,
                owner=rep or current, owner_crm_id=current, turn=None,
                reason=f"owner set to {rep or current or 'nobody'} while the proposal "
                       f"({decision.owner}) waited; not overwritten")
            self.store.commit({}, [], [kept])
            return kept
        assert decision.owner_crm_id is not None  # the caller writes a CRM owner id
        writes = _Writes()
        writes.held[decision.record_id] = _Held(decision, decision.owner_crm_id, key, token,
                                                0, instant, record)
        try:
            self._flush(obj, writes, report, everything=True)
        finally:
            self._report_calls()
        assert report.settled  # _flush audits the one held write, whatever its fate
        return report.settled[-1]

    def sweep(self, obj: str, *, full: bool = False, since: datetime | None = None,
              now: datetime | None = None,
              on_page: Callable[[RunReport], None] | None = None) -> RunReport:
        """Incremental from the stored watermark, page by page; the first run (and `full`)
        covers every record. A daily quota stops it cleanly.

        Owner writes are carried across pages into full batches (the connector's
        `write_batch_size`), so the checkpoint after a page is committed only once every
        write decided up to that page has landed or failed onto the retry list: a worker
        killed with writes still held resumes before them and decides them again. Leaving
        early (a quota, an error, `on_page` raising) writes or parks what is held first."""
        obj = self.spec.canonical_object(obj)
        report = RunReport(self.crm, obj)
        key = f"sweep:{self.crm}:{obj}"
        saved = json.loads(self.store.get_checkpoint(key) or "null")
        writes = _Writes(0 if self.dry_run else self._write_batch())
        ready: list[tuple[int, str]] = []  # finished pages' checkpoints, not yet committed
        try:
            start_since, cursor, max_seen = self._resume(saved, full, since)
            # A resumed listing's count would include the pages done before: no total then.
            counted = cursor is None
            # Writes that failed last time go first (nothing is silently lost) -- once per
            # sweep, not again on each resumed page of a sweep run one page per task.
            pending = [] if self.dry_run or cursor else self.store.failed(self.crm, obj)
            for start in range(0, len(pending), RETRY_CHUNK):
                self.route_ids(obj, pending[start:start + RETRY_CHUNK], trigger="retry",
                               now=now, report=report)
            while True:
                page = self.connector.list_records(obj, since=start_since, cursor=cursor)
                number = report.pages + 1
                if counted and report.pages == 0 and page.total is not None:
                    report.total = page.total  # the first query's count covers the sweep
                report.listed += len(page.records)
                self._process(obj, page.records, trigger="sweep", read_at=None, now=now,
                              report=report, writes=writes, page=number)
                for record in page.records:
                    if record.modified_at is not None and (
                            max_seen is None or record.modified_at > max_seen):
                        max_seen = record.modified_at
                cursor = page.cursor
                report.pages = number
                if cursor is None or self._held_too_long(writes):
                    self._flush(obj, writes, report, everything=True)
                if not self.dry_run:
                    ready.append((number, json.dumps(_checkpoint(start_since, cursor,
                                                                 max_seen))))
                    self._commit_ready(key, ready, writes)
                if on_page is not None:
                    on_page(report)
                if cursor is None:
                    break
        except QuotaExhausted as exc:
            # The checkpoint holds the last page whose writes all landed: the next run resumes
            # there, and the writes still held wait on the retry list too.
            self._commit_ready(key, ready, writes)
            self._park(obj, writes, report, "daily API quota exhausted")
            report.stopped = str(exc)
            if not self.dry_run:
                self.metrics.quota_stop(self.crm)
        except CrmUnavailable:
            # The CRM is down: writing now would only spend the retries again.
            self._commit_ready(key, ready, writes)
            self._park(obj, writes, report, "CRM unavailable")
            raise
        except BaseException:
            # Anything else (a store error, `on_page` stopping after one page): the held
            # writes were decided, so write them, then commit the pages they complete.
            self._leave(obj, key, ready, writes, report)
            raise
        finally:
            self._report_calls()
        return report

    def _write_batch(self) -> int:
        """Owner writes per CRM call for carrying writes across pages; 0 for a connector that
        does not say (each page then writes its own)."""
        size = getattr(self.connector, "write_batch_size", 0)
        return size if isinstance(size, int) and size > 0 else 0

    def _held_too_long(self, writes: _Writes) -> bool:
        """True once the oldest held write has waited half its lock's life or as long as a
        snapshot may age unchecked (recheck_after): write it before either runs out."""
        if not writes.held:
            return False
        oldest = min(h.at for h in writes.held.values())
        return (self.clock() - oldest).total_seconds() >= min(self.lock_ttl / 2,
                                                              self.recheck_after)

    def _commit_ready(self, key: str, ready: list[tuple[int, str]], writes: _Writes) -> None:
        """Commit the checkpoint of the latest finished page with no write still held from
        it or an earlier page: a checkpoint never passes a record whose write is pending."""
        oldest = writes.oldest_page()
        safe = [entry for entry in ready if oldest is None or entry[0] < oldest]
        if safe:
            self.store.set_checkpoint(key, safe[-1][1])
            del ready[:len(safe)]

    def _leave(self, obj: str, key: str, ready: list[tuple[int, str]], writes: _Writes,
               report: RunReport) -> None:
        """Leaving a sweep on an error: write what is held, then commit the finished pages.
        Writes that cannot be sent wait on the retry list, and the checkpoint stays before
        them (the caller re-raises its own error, not this one)."""
        try:
            self._flush(obj, writes, report, everything=True)
        except QuotaExhausted:
            self._park(obj, writes, report, "daily API quota exhausted")
            return
        except Exception:
            log.exception("held owner writes not sent; they wait on the retry list",
                          extra={"crm": self.crm, "object": obj})
            self._park(obj, writes, report, "write did not complete")
            return
        self._commit_ready(key, ready, writes)

    def _park(self, obj: str, writes: _Writes, report: RunReport, why: str) -> None:
        """Held writes that will not be sent now: audited unwritten, on the retry list,
        unlocked."""
        held = writes.take(len(writes.held))
        if not held:
            return
        out = {h.decision.record_id: h.decision for h in held}
        self._mark_unwritten(out, {h.decision.record_id: h.owner for h in held}, why)
        report.write_failed += len(out)
        self._settle(obj, held, out, report, failed=list(out))

    @staticmethod
    def _resume(saved: dict[str, str | None] | None, full: bool, since: datetime | None
                ) -> tuple[datetime | None, str | None, datetime | None]:
        if since is not None:
            return since, None, None
        if saved is None:
            return None, None, None  # first run: every record
        saved_since = _parse(saved.get("since"))
        cursor = saved.get("cursor")
        max_seen = _parse(saved.get("max_seen"))
        if full:
            # Resume an interrupted full sweep; otherwise start a fresh one.
            if cursor and saved_since is None:
                return None, cursor, max_seen
            return None, None, None
        if cursor:
            return saved_since, cursor, max_seen
        return max_seen or saved_since, None, max_seen

    def explain(self, obj: str, record_id: str, now: datetime | None = None) -> Decision:
        """How one CRM record would route now: nothing written, counted or locked."""
        return self.explain_record(obj, record_id, now)[1]

    def explain_record(self, obj: str, record_id: str, now: datetime | None = None
                       ) -> tuple[Record | None, Decision]:
        """`explain`, with the normalized record it read (None when the CRM has none), so a
        caller showing clause-by-clause detail needs no second read."""
        obj = self.spec.canonical_object(obj)
        found = self.connector.read_records(obj, [record_id])
        instant = now or self.clock()
        if not found:
            return None, skipped(record_id, "record not found in the CRM", instant,
                                 object=self.spec.kind(obj), crm=self.crm,
                                 trigger="explain")
        (record,), owners, enriched = self._prepare([self.to_record(obj, found[0])])
        snapshots = self.store.load_pools(RoutingContext.pool_windows(self.routing, instant))
        ctx = RoutingContext(routing=self.routing, now=instant, paused=self.store.pauses(instant),
                             pools=snapshots, users=self.users(), crm=self.crm,
                             account_owners=owners, enriched=enriched,
                             # A person's choice is kept here as the routing run would.
                             chosen=self._chosen(obj, found, [record], "explain",
                                                 observe=False))
        return record, decide(record, ctx, trigger="explain")

    def simulate(self, obj: str, *, now: datetime | None = None,
                 history: History | None = None) -> Simulation:
        """What this routing file would do to every record of `obj`: the records that would
        change owner and each owner's load before and after. Reads only: nothing is written,
        audited or locked, and pool cursors are read, never advanced.

        With the decision `history`, "before" is also what the router recorded: each move's
        rule and instant of its latest decision, and each owner's assignments over the
        `ROUTED_WINDOW` before `now`."""
        obj = self.spec.canonical_object(obj)
        instant = now or self.clock()
        records, unreadable, decisions = self.decide_all(obj, now=instant)

        def who(owner: str | None) -> str:
            # Owners by rep id where the routing file knows them, so before and after compare.
            if not owner:
                return NO_OWNER
            return self.routing.owner_to_rep.get(id_key(owner)) or owner

        before: Counter[str] = Counter()
        after: Counter[str] = Counter()
        moves: list[Move] = []
        for record, decision in zip(records, decisions, strict=True):
            now_owner = who(record.owner)
            new = (decision.owner or NO_OWNER) if decision.outcome in WRITES else now_owner
            before[now_owner] += 1
            after[new] += 1
            if new != NO_OWNER and new != now_owner:
                moves.append(Move(record.id, now_owner, new, rule_of(decision)))
        loads = tuple(OwnerLoad(o, before[o], after[o])
                      for o in sorted(before.keys() | after.keys(), key=lambda o: (-after[o], o)))
        result = Simulation(self.crm, obj, len(records), tuple(moves), loads, unreadable)
        return result if history is None else self.with_history(result, history, now=instant)

    def decide_all(self, obj: str, *, now: datetime | None = None
                   ) -> tuple[list[Record], tuple[str, ...], list[Decision]]:
        """Every record of `obj` and what this routing file decides for it now, in listing
        order, plus the ids the field map could not normalize. Reads only, as `simulate`:
        nothing written, audited or locked; pool cursors read, never advanced."""
        obj = self.spec.canonical_object(obj)
        instant = now or self.clock()
        try:
            crm_records: list[CrmRecord] = []
            cursor: str | None = None
            while True:  # every record: a what-if is about the whole book, not what changed
                page = self.connector.list_records(obj, since=None, cursor=cursor)
                crm_records += page.records
                cursor = page.cursor
                if cursor is None:
                    break
            records: list[Record] = []
            unreadable: list[str] = []
            for crm_record in crm_records:
                try:
                    records.append(self.to_record(obj, crm_record))
                except ValueError:
                    unreadable.append(crm_record.id)
            records, owners, enriched = self._prepare(records)
            # One batch, so pool rotation runs on across all records as it would for real.
            # Records a person took over stay theirs, as a real run would keep them.
            chosen = self._chosen(obj, crm_records, records, "simulate", observe=False)
            decisions = route_batch(records, self.routing, self.store, instant,
                                    trigger="simulate", users=self.users(), dry_run=True,
                                    crm=self.crm, account_owners=owners, enriched=enriched,
                                    chosen=chosen)
        finally:
            self._report_calls()
        return records, tuple(unreadable), decisions

    def with_history(self, simulation: Simulation, history: History, *,
                     now: datetime | None = None) -> Simulation:
        """`simulation` with its "before" read from the decision history: each move's
        `rule_before` and `decided_before`, each owner's `routed_before` over the
        `ROUTED_WINDOW` before `now`. Separate from `simulate` so a caller whose history fails
        keeps the CRM's answer rather than reading every record again."""
        instant = now or self.clock()
        moves = simulation.moves
        latest = history.latest(simulation.crm, self.spec.kind(simulation.object),
                                [m.record_id for m in moves])
        routed: Counter[str] = Counter()
        for row in history.load(since=instant - ROUTED_WINDOW, until=instant):
            routed[row.rep] += row.count
        known = {load.owner: load for load in simulation.loads}
        # A rep the router fed lately who holds none of these records still shows.
        owners = sorted(known.keys() | routed.keys(),
                        key=lambda o: (-known[o].after if o in known else 0, o))
        loads = tuple(replace(known.get(o) or OwnerLoad(o, 0, 0), routed_before=routed[o])
                      for o in owners)
        return replace(simulation, history=True, loads=loads,
                       moves=tuple(_with_rule_before(m, latest.get(m.record_id))
                                   for m in moves))

    # -- owners decided elsewhere ---------------------------------------------------------

    def write_decisions(self, obj: str, items: Sequence[tuple[Decision, CrmRecord]],
                        *, report: RunReport | None = None) -> RunReport:
        """Write owners decided outside the rules (first-touch SLA re-routes), each with the
        record as just read, through the one write path: locked, written in batches, audited
        with the result, the followers called. A record another run holds locked right now is
        audited unwritten (that run is routing it) and left to it."""
        obj = self.spec.canonical_object(obj)
        report = report or RunReport(self.crm, obj)
        token = _lock_owner.get() or uuid.uuid4().hex
        keys = {d.record_id: f"{self.crm}:{obj}:{d.record_id}" for d, _ in items}
        held = self.store.lock_records(list(keys.values()), token, self.lock_ttl) \
            if keys else set()
        writes = _Writes()
        unwritten: list[Decision] = []
        try:
            for decision, crm_record in items:
                key = keys[decision.record_id]
                if key not in held:
                    report.locked_elsewhere += 1
                    unwritten.append(decision._replace(
                        write_error="record locked by another run routing it"))
                    continue
                if decision.owner_crm_id is None:
                    unwritten.append(decision._replace(
                        write_error=f"{decision.owner} has no {self.crm} id in crm_ids"))
                    self.store.unlock_records([key], token)
                    continue
                try:
                    record = self.to_record(obj, crm_record)
                except ValueError as exc:
                    unwritten.append(decision._replace(write_error=str(exc)))
                    self.store.unlock_records([key], token)
                    continue
                writes.held[decision.record_id] = _Held(
                    decision, decision.owner_crm_id, key, token, 0, self.clock(), record)
        except BaseException:
            self.store.unlock_records([keys[i] for i in keys if keys[i] in held], token)
            raise
        if unwritten:
            report.write_failed += len(unwritten)
            for decision in unwritten:
                self._counted(decision, report)
            self.store.commit({}, [], unwritten)
        try:
            self._flush(obj, writes, report, everything=True)
        finally:
            self._report_calls()
        return report

    # -- the batch -----------------------------------------------------------------------

    def _prepare(self, records: Sequence[Record]
                 ) -> tuple[list[Record], dict[str, str], dict[str, tuple[TraceStep, ...]]]:
        return prepare(self.connector, self.routing, records)

    def _process(self, obj: str, crm_records: Sequence[CrmRecord], *, trigger: str,
                 read_at: datetime | None, now: datetime | None, report: RunReport,
                 gone: Sequence[str] = (), writes: _Writes | None = None,
                 page: int = 0) -> None:
        """Lock, recheck, decide and audit one batch. Its owner writes go to `writes` (a
        sweep's, carried across pages and written in full batches) or, without one, are
        written before this returns."""
        instant = now or self.clock()
        kind = self.spec.kind(obj)
        own = writes is None or writes.batch <= 0
        writes = writes if writes is not None else _Writes()
        if writes.held:
            # Read again while its write is held (modified meanwhile): already decided and
            # locked by this sweep; deciding it twice would write it twice.
            crm_records = [r for r in crm_records if r.id not in writes.held]
        # The report spans the run; these mark where this batch starts, for its log line.
        outcomes_before = Counter(report.outcomes)
        written_before, failed_before = report.written, report.write_failed
        audit: list[Decision] = [
            skipped(i, "record gone from the CRM", instant, object=kind, crm=self.crm,
                    trigger=trigger) for i in gone]
        token = _lock_owner.get() or uuid.uuid4().hex
        keys = {r.id: f"{self.crm}:{obj}:{r.id}" for r in crm_records}
        if self.dry_run:
            held = set(keys.values())
        else:
            held = self.store.lock_records(list(keys.values()), token, self.lock_ttl)
        mine = [r for r in crm_records if keys[r.id] in held]
        report.locked_elsewhere += len(crm_records) - len(mine)
        if not self.dry_run and len(mine) < len(crm_records):
            # The lock may belong to a live task, or to a worker killed mid-batch whose lock
            # outlives the redelivery. Either way the record goes on the retry list: the next
            # run reads it again (kept if someone routed it meanwhile), so a sweep whose
            # watermark moves past it never strands it unrouted.
            self.store.add_failed(self.crm, obj, [r.id for r in crm_records
                                                  if keys[r.id] not in held])
        waiting: set[str] = set()  # ids whose write is held: locked and audited at the flush
        try:
            mine = self._recheck(obj, mine, read_at, audit, instant, kind, trigger)
            reviewing = self._under_review(obj, mine)
            records: list[Record] = []
            for crm_record in mine:
                if crm_record.id in reviewing:
                    continue
                try:
                    records.append(self.to_record(obj, crm_record))
                except ValueError as exc:
                    audit.append(skipped(crm_record.id, str(exc), instant, object=kind,
                                         crm=self.crm, trigger=trigger))
            chosen = self._chosen(obj, mine, records, trigger)
            records, owners, enriched = self._prepare(records)
            by_id = {r.id: r for r in records}
            taken = self._precreated(obj, records, instant)
            made = {i: as_made(e, by_id[i], instant, trigger) for i, e in taken.items()} \
                if taken else {}
            rest = [r for r in records if r.id not in made] if made else records
            decisions = [*made.values(), *route_batch(
                rest, self.routing, self.store, instant, trigger=trigger, users=self.users(),
                account_owners=owners, audit=False, dry_run=self.dry_run, crm=self.crm,
                chosen=chosen, enriched=enriched)]
            current = {r.id: r.owner for r in records}
            if not self.dry_run:
                self._hold_for_review(obj, decisions, instant, current,
                                      {i: e.window for i, e in taken.items()})
            decided, pending = self._plan(obj, decisions, current, report)
            if not self.dry_run:
                for record_id, owner in pending.items():
                    writes.held[record_id] = _Held(decided[record_id], owner, keys[record_id],
                                                   token, page, self.clock(),
                                                   by_id[record_id], taken.get(record_id))
                waiting = set(pending)
            for decision in decided.values():
                if decision.record_id in waiting:
                    continue
                if trigger == "sweep" and decision.outcome == Outcome.KEPT_EXISTING:
                    # Counted, not audited: a sweep re-reads every record our own writes
                    # touched, and an audit row per record per sweep would bury the real
                    # decisions. Webhooks and reprocessing audit kept records.
                    self._counted(decision, report)
                else:
                    audit.append(decision)
        finally:
            for decision in audit:
                self._counted(decision, report)
            if not self.dry_run:
                if audit:
                    self.store.commit({}, [], audit)
                self.store.unlock_records([keys[r.id] for r in mine if r.id not in waiting],
                                          token)
        try:
            # Audited and unlocked by the flush, whatever the writes' fate.
            self._flush(obj, writes, report, everything=own)
        finally:
            self._report_calls()
            log.info("batch routed", extra={
                "crm": self.crm, "object": obj, "trigger": trigger,
                "records": len(crm_records) + len(gone),
                "outcomes": dict(report.outcomes - outcomes_before),
                "written": report.written - written_before,
                "write_failed": report.write_failed - failed_before,
                "held": len(writes.held),
                "locked_elsewhere": len(crm_records) - len(mine), "dry_run": self.dry_run})

    def _precreated(self, obj: str, records: Sequence[Record], instant: datetime
                    ) -> dict[str, Precreated]:
        """The records a POST /route decision was made for, by id, each with that decision's
        entry (docs/operations.md#post-route): a record with no owner, created within
        `precreate_ttl`, whose email (else registered non-free-mail domain) matches a
        decision still waiting. The entry is taken: one record per decision, and no second
        pool turn. A dry run takes nothing (it decides by the rules)."""
        if self.dry_run or not records:
            return {}
        oldest = instant - self.routing.file.precreate_ttl
        asking: list[tuple[str, tuple[str | None, str | None]]] = []
        for record in records:
            # Older records were in the CRM before any waiting decision could be made for
            # them: skipping them keeps a first full sweep from asking about every record.
            if record.owner is not None or (record.created_at is not None
                                            and record.created_at < oldest):
                continue
            keys = match_keys(record)
            if keys != (None, None):
                asking.append((record.id, keys))
        if not asking:
            return {}
        taken = self.store.take_precreated_many(self.crm, obj, [k for _, k in asking], instant)
        return {record_id: entry for (record_id, _), entry in zip(asking, taken, strict=True)
                if entry is not None}

    def _chosen(self, obj: str, crm_records: Sequence[CrmRecord], records: Sequence[Record],
                trigger: str, *, observe: bool = True) -> dict[str, str]:
        """Overrides seen in this batch's owners (a person changed the owner we wrote) are
        recorded; returns the records whose owner a person chose, with the reason to keep it
        (docs/operations.md#overrides). An explicit reprocess routes them as usual."""
        if not records:
            return {}
        marks = self.store.owner_marks(self.crm, obj, [r.id for r in records])
        if not marks:
            return {}
        raw = {r.id: r for r in crm_records}
        changes = []
        for record in records:
            if record.id not in marks:
                continue
            crm_record = raw.get(record.id)
            by = crm_record.properties.get(self.spec.modified_by) \
                if crm_record is not None and self.spec.modified_by else None
            changes.append(OwnerChange(
                record.id, record.owner,
                at=crm_record.modified_at if crm_record is not None else None,
                by=by if isinstance(by, str) and by else None, source=trigger))
        if self.dry_run or not observe:  # judged, never recorded
            verdicts = {c.record_id: judge(marks[c.record_id], c) for c in changes}
        else:
            verdicts = self.overrides.observe(self.crm, obj, changes, marks)
        if trigger == "reprocess":
            return {}
        chosen: dict[str, str] = {}
        for record in records:
            mark = marks.get(record.id)
            if mark is None or record.owner is None:
                continue
            if mark.overridden or verdicts.get(record.id) in (Verdict.OVERRIDE,
                                                              Verdict.ALREADY):
                chosen[record.id] = kept_reason(mark, record.owner)
        return chosen
    def _under_review(self, obj: str, records: Sequence[CrmRecord]) -> set[str]:
        """Records with an open review item: left alone (a reviewer decides them; routing them
        again would take a second pool turn), and off the retry list, since the review's own
        write is what settles them."""
        if not records or self.dry_run:
            return set()
        reviewing = self.store.under_review(self.crm, obj, [r.id for r in records])
        if reviewing:
            self.store.remove_failed(self.crm, obj, sorted(reviewing))
        return reviewing

    def _hold_for_review(self, obj: str, decisions: Sequence[Decision], instant: datetime,
                         owners: Mapping[str, str | None],
                         windows: Mapping[str, str | None] | None = None) -> None:
        """Open a review item for each decision held for review (its pool turn is already
        taken), remembering the owner the record had, which approval checks again. `windows`:
        where the turn was counted for decisions made without one here (POST /route's)."""
        held = [d for d in decisions if d.outcome == Outcome.PENDING_REVIEW]
        if held:
            deadline = instant + self.routing.review_timeout
            windows = windows or {}
            self.store.add_reviews([review_item(d, obj, deadline, owners.get(d.record_id),
                                                windows.get(d.record_id)) for d in held])

    def _recheck(self, obj: str, records: list[CrmRecord], read_at: datetime | None,
                 audit: list[Decision], instant: datetime, kind: str, trigger: str
                 ) -> list[CrmRecord]:
        """Re-read owners of a stale snapshot in one call, so a human's assignment made since
        is respected (docs/operations.md#the-pipeline); a record gone meanwhile is skipped, not
        dropped."""
        if read_at is None or not records or \
                (self.clock() - read_at).total_seconds() <= self.recheck_after:
            return records
        owners = self.connector.read_owners(obj, [r.id for r in records])
        owner_field = self.spec.field_map(obj, self.routing.file.field_maps).get("owner")
        fresh: list[CrmRecord] = []
        for record in records:
            if record.id not in owners:
                audit.append(skipped(record.id, "record gone from the CRM", instant,
                                     object=kind, crm=self.crm, trigger=trigger))
                continue
            props = dict(record.properties)
            if owner_field:
                props[owner_field] = owners[record.id]
            fresh.append(CrmRecord(record.id, record.object, props, record.created_at,
                                   record.modified_at))
        return fresh

    def _plan(self, obj: str, decisions: list[Decision], current: Mapping[str, str | None],
              report: RunReport) -> tuple[dict[str, Decision], dict[str, str]]:
        """Each decision by record id, and the owner writes they call for (record id -> CRM
        owner id). Decisions that need no write are settled here: off the retry list."""
        pending: dict[str, str] = {}
        out: dict[str, Decision] = {}
        directory = getattr(self.connector, "directory", True)
        for d in decisions:
            if not directory and d.outcome in WRITES and d.owner_crm_id is None:
                d = d._replace(owner_crm_id=d.owner)  # a file takes rep ids as owners
            out[d.record_id] = d
            if d.outcome not in WRITES:
                continue
            if d.owner_crm_id is None:
                out[d.record_id] = d._replace(
                    write_error=f"{d.owner} has no {self.crm} id in crm_ids")
            elif current.get(d.record_id) is None or \
                    id_key(current[d.record_id] or "") != id_key(d.owner_crm_id):
                pending[d.record_id] = d.owner_crm_id
        if self.dry_run:
            report.changes += [d for d in decisions if d.record_id in pending]
            return out, pending
        report.write_failed += sum(1 for d in out.values() if d.write_error)
        done = [i for i in out if i not in pending]
        if done:
            self.store.remove_failed(self.crm, obj, done)
        return out, pending

    def _flush(self, obj: str, writes: _Writes, report: RunReport, *,
               everything: bool) -> None:
        """Write held owners in batches (only full ones unless `everything`), then audit each
        decision with its write's result and release its lock; raises the quota stop after
        auditing the batches that landed before the CRM's daily quota ran out."""
        n = len(writes.held) if everything or writes.batch <= 0 else \
            len(writes.held) // writes.batch * writes.batch
        held = writes.take(n)
        if not held:
            return
        pending = {h.decision.record_id: h.owner for h in held}
        out = {h.decision.record_id: h.decision for h in held}
        failed: list[str] = []
        quota: QuotaExhausted | None = None
        try:
            results: list[WriteResult] | None
            answered: Mapping[str, str] = pending  # the ids the results below speak for
            try:
                results = self.connector.write_owners(obj, pending)
            except QuotaExhausted as exc:
                # Batches that landed before the quota ran out are written; the rest wait.
                results = [r for r in exc.landed if r.ok]
                landed = {r.id for r in results}
                answered = {i: o for i, o in pending.items() if i in landed}
                unwritten = {i: o for i, o in pending.items() if i not in landed}
                self._mark_unwritten(out, unwritten, "daily API quota exhausted")
                failed, quota = list(unwritten), exc
            except CrmUnavailable as exc:
                self._mark_unwritten(out, pending, str(exc))
                failed, results = list(pending), None
            except Exception as exc:
                # Not the CRM's answer (a bug, a lost connection to the store...): the
                # decisions stay on the retry list rather than vanish with the exception.
                self._mark_unwritten(out, pending, f"write did not complete ({exc!r})")
                failed, results = list(pending), None
                raise
            if results is not None:
                written_at = self.clock()
                by_id = {r.id: r for r in results}
                for record_id in answered:
                    result = by_id.get(record_id)
                    d = out[record_id]
                    if result is not None and result.ok:
                        out[record_id] = d._replace(written_at=written_at)
                        report.written += 1
                        if d.created_at is not None:
                            seconds = (written_at - d.created_at).total_seconds()
                            report.speed.append(seconds)
                            self.metrics.speed("written", seconds)
                    else:
                        error = result.error if result is not None else "no result returned"
                        out[record_id] = d._replace(write_error=error)
                        failed.append(record_id)
        finally:
            report.write_failed += len(failed)
            self._settle(obj, held, out, report, failed=failed)
        if quota is not None:
            raise quota

    def _settle(self, obj: str, held: Sequence[_Held], out: Mapping[str, Decision],
                report: RunReport, *, failed: Sequence[str]) -> None:
        """After held writes were sent (or given up): the retry list, the audit rows with the
        results, the locks released."""
        if failed:
            self.store.add_failed(self.crm, obj, list(failed))
            self._keep_precreated([h for h in held if h.decision.record_id in set(failed)])
        done = [i for i in out if i not in set(failed)]
        if done:
            self.store.remove_failed(self.crm, obj, done)
        for decision in out.values():
            self._counted(decision, report)
        self.store.commit({}, [], list(out.values()))
        landed = [Written(out[h.decision.record_id], h.record) for h in held
                  if out[h.decision.record_id].written_at is not None]
        self._follow(obj, landed, (self.own_writes,))
        if report.settled is not None:
            report.settled.extend(out.values())
        tokens: dict[str, list[str]] = {}
        for h in held:
            tokens.setdefault(h.token, []).append(h.key)
        for token, keys in tokens.items():
            self.store.unlock_records(keys, token)
        self._follow(obj, landed, self.followers)

    def _keep_precreated(self, held: Sequence[_Held]) -> None:
        """POST /route decisions whose write failed wait again for the retry (which finds the
        record with no owner still) until their own expiry: the retry writes the owner the API
        answered, with no second turn."""
        now = self.clock()
        for h in held:
            entry = h.precreated
            if entry is None or entry.expires_at <= now:
                continue
            self.store.put_precreated(entry, (entry.expires_at - now).total_seconds())

    def _follow(self, obj: str, items: list[Written], followers: Sequence[AfterWrite]) -> None:
        """Hand the landed writes to each follower, after their audit rows are committed and
        their locks released. What follows a write must never undo it or stop the next batch,
        so a follower's failure is logged, with the count but not the records (customer data),
        and routing goes on."""
        if not items or self.dry_run:
            return
        for follower in followers:
            try:
                follower.written(self.crm, obj, items)
            except Exception:
                log.exception("a follower of owner writes failed; routing goes on",
                              extra={"crm": self.crm, "object": obj,
                                     "follower": type(follower).__name__,
                                     "records": len(items)})

    @staticmethod
    def _mark_unwritten(out: dict[str, Decision], ids: Mapping[str, str], why: str) -> None:
        for record_id in ids:
            out[record_id] = out[record_id]._replace(write_error=f"{why}; retried next run")


def review_item(decision: Decision, obj: str, deadline: datetime,
                previous_owner: str | None, window: str | None = None) -> ReviewItem:
    """The review item for a decision held for review on the CRM object `obj`;
    `previous_owner` is the record's CRM owner id when decided; `window` the turn's window
    when the decision carries no turn (it was taken earlier, by POST /route)."""
    assert decision.owner is not None and decision.decided_at is not None  # held ones have both
    return ReviewItem(
        id=review_id(decision_key(decision)),
        record_id=decision.record_id, crm=decision.crm, object=obj,
        proposed_owner=decision.owner, proposed_crm_id=decision.owner_crm_id,
        rule=decision.rule, pool=decision.turn.pool if decision.turn else decision.pool,
        window=decision.turn.window if decision.turn else window, reason=decision.reason,
        previous_owner=previous_owner, created_at=decision.decided_at,
        deadline=deadline)


def _checkpoint(since: datetime | None, cursor: str | None, max_seen: datetime | None
                ) -> dict[str, str | None]:
    return {"since": since.isoformat() if since else None, "cursor": cursor,
            "max_seen": max_seen.isoformat() if max_seen else None}


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# -- what-if (`Pipeline.simulate`) --------------------------------------------------------

NO_OWNER = "(none)"


# How far back `Simulation` counts each owner's recorded assignments.
ROUTED_WINDOW = timedelta(days=30)


def rule_of(decision: Decision) -> str:
    """The rule that gave `decision` its owner, "(fallback)" for the top-level fallback."""
    return decision.rule or "(fallback)"


@dataclass(frozen=True, slots=True)
class Move:
    """A record a routing file would give another owner (owners by rep id where known)."""

    record_id: str
    before: str  # rep id, else the CRM owner id, else NO_OWNER
    after: str
    rule: str  # the winning rule, "(fallback)" for the top-level fallback
    # From the decision history (None without one): the rule of the record's latest recorded
    # decision when that decision gave it the owner it has now (None when the router never
    # routed it, or a person has changed the owner since), and when that decision was made
    # (None when never decided).
    rule_before: str | None = None
    decided_before: datetime | None = None


def _with_rule_before(move: Move, latest: Decision | None) -> Move:
    if latest is None:
        return move
    gave_owner = latest.outcome in WRITES and latest.owner == move.before
    return replace(move, rule_before=rule_of(latest) if gave_owner else None,
                   decided_before=latest.decided_at)


@dataclass(frozen=True, slots=True)
class OwnerLoad:
    """Records one owner holds now and would hold under the simulated routing file."""

    owner: str
    before: int
    after: int
    # Assignments (assigned, fallback) the history recorded for this owner over the
    # ROUTED_WINDOW before the simulated instant, every CRM object; None without a history.
    routed_before: int | None = None


@dataclass(frozen=True, slots=True)
class Simulation:
    """What a routing file would do to one CRM object's records; nothing was written."""

    crm: str
    object: str
    records: int  # records decided (unreadable ones excluded)
    moves: tuple[Move, ...]  # in listing order
    loads: tuple[OwnerLoad, ...]  # most records after first, then by owner
    unreadable: tuple[str, ...] = ()  # ids the field map could not normalize
    history: bool = False  # whether the decision history was read (rule_before, routed_before)
