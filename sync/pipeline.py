"""The CRM pipeline (DESIGN.md §1): fetch, lock, recheck, decide, write, audit, checkpoint."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime

from config.fieldmaps import field_map
from sync.compiler import CompiledRouting
from sync.decide import OwnerInfo, RoutingContext, decide
from sync.engine import route_batch, skipped
from sync.metrics import Metrics, NullMetrics
from sync.models import Decision, Outcome, Record
from sync.normalize import build_record, id_key
from sync.ports import (
    OBJECT_KINDS,
    Connector,
    CrmRecord,
    CrmUnavailable,
    QuotaExhausted,
    WriteResult,
    canonical_object,
)
from sync.state.base import StateStore

log = logging.getLogger("account_router.pipeline")

WRITES = (Outcome.ASSIGNED, Outcome.FALLBACK)
RETRY_CHUNK = 100  # previously failed ids re-read per call
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

    @property
    def failed(self) -> bool:
        return bool(self.write_failed or self.outcomes.get("skipped"))

    def add(self, decision: Decision) -> None:
        self.outcomes[str(decision.outcome)] += 1
        if decision.outcome in WRITES:
            self.rules[decision.rule or "(fallback)"] += 1
            if decision.owner:
                self.reps[decision.owner] += 1


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
    ) -> None:
        self.connector = connector
        self.crm = connector.name
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
        kind = OBJECT_KINDS[self.crm][obj]
        mapping = field_map(self.crm, obj, self.routing.file.field_maps)
        props = crm_record.properties
        values: dict[str, object] = {f"fields.{k}": v for k, v in props.items() if v is not None}
        for normalized, crm_field in mapping.items():
            value = props.get(crm_field)
            if value is not None:
                values[normalized] = value
        values["id"] = crm_record.id
        return build_record(values, object=kind, crm=self.crm, created_at=crm_record.created_at)

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
        obj = canonical_object(self.crm, obj)
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

    def sweep(self, obj: str, *, full: bool = False, since: datetime | None = None,
              now: datetime | None = None,
              on_page: Callable[[RunReport], None] | None = None) -> RunReport:
        """Incremental from the stored watermark, page by page, checkpointed after each page;
        the first run (and `full`) covers every record. A daily quota stops it cleanly."""
        obj = canonical_object(self.crm, obj)
        report = RunReport(self.crm, obj)
        key = f"sweep:{self.crm}:{obj}"
        saved = json.loads(self.store.get_checkpoint(key) or "null")
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
                if counted and report.pages == 0 and page.total is not None:
                    report.total = page.total  # the first query's count covers the sweep
                report.listed += len(page.records)
                self._process(obj, page.records, trigger="sweep", read_at=None, now=now,
                              report=report)
                for record in page.records:
                    if record.modified_at is not None and (
                            max_seen is None or record.modified_at > max_seen):
                        max_seen = record.modified_at
                cursor = page.cursor
                report.pages += 1
                if not self.dry_run:
                    self.store.set_checkpoint(key, json.dumps(_checkpoint(
                        start_since, cursor, max_seen)))
                if on_page is not None:
                    on_page(report)
                if cursor is None:
                    break
        except QuotaExhausted as exc:
            # The checkpoint already holds the last finished page: the next run resumes there.
            report.stopped = str(exc)
            if not self.dry_run:
                self.metrics.quota_stop(self.crm)
        finally:
            self._report_calls()
        return report

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
        obj = canonical_object(self.crm, obj)
        found = self.connector.read_records(obj, [record_id])
        instant = now or self.clock()
        if not found:
            return None, skipped(record_id, "record not found in the CRM", instant,
                                 object=OBJECT_KINDS[self.crm][obj], crm=self.crm,
                                 trigger="explain")
        record = self.to_record(obj, found[0])
        snapshots = self.store.load_pools(RoutingContext.pool_windows(self.routing, instant))
        ctx = RoutingContext(routing=self.routing, now=instant, paused=self.store.pauses(instant),
                             pools=snapshots, users=self.users(), crm=self.crm,
                             account_owners=self._account_owners([record]))
        return record, decide(record, ctx, trigger="explain")

    def simulate(self, obj: str, *, now: datetime | None = None) -> Simulation:
        """What this routing file would do to every record of `obj`: the records that would
        change owner and each owner's load before and after. Reads only: nothing is written,
        audited or locked, and pool cursors are read, never advanced."""
        obj = canonical_object(self.crm, obj)
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
            # One batch, so pool rotation runs on across all records as it would for real.
            decisions = route_batch(records, self.routing, self.store, instant,
                                    trigger="simulate", users=self.users(), dry_run=True,
                                    crm=self.crm, account_owners=self._account_owners(records))
        finally:
            self._report_calls()

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
                moves.append(Move(record.id, now_owner, new, decision.rule or "(fallback)"))
        loads = tuple(OwnerLoad(o, before[o], after[o])
                      for o in sorted(before.keys() | after.keys(), key=lambda o: (-after[o], o)))
        return Simulation(self.crm, obj, len(records), tuple(moves), loads, tuple(unreadable))

    # -- the batch -----------------------------------------------------------------------

    def _account_owners(self, records: Sequence[Record]) -> dict[str, str]:
        if not self.routing.uses_account_owner:
            return {}
        domains = sorted({r.domain for r in records
                          if r.object != "account" and r.domain and not r.freemail})
        return self.connector.accounts_by_domain(domains) if domains else {}

    def _process(self, obj: str, crm_records: Sequence[CrmRecord], *, trigger: str,
                 read_at: datetime | None, now: datetime | None, report: RunReport,
                 gone: Sequence[str] = ()) -> None:
        instant = now or self.clock()
        kind = OBJECT_KINDS[self.crm][obj]
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
        try:
            mine = self._recheck(obj, mine, read_at, audit, instant, kind, trigger)
            records: list[Record] = []
            for crm_record in mine:
                try:
                    records.append(self.to_record(obj, crm_record))
                except ValueError as exc:
                    audit.append(skipped(crm_record.id, str(exc), instant, object=kind,
                                         crm=self.crm, trigger=trigger))
            decisions = route_batch(
                records, self.routing, self.store, instant, trigger=trigger, users=self.users(),
                account_owners=self._account_owners(records), audit=False,
                dry_run=self.dry_run, crm=self.crm)
            current = {r.id: r.owner for r in records}
            written, quota = self._write(obj, decisions, current, report)
            for decision in written:
                if trigger == "sweep" and decision.outcome == Outcome.KEPT_EXISTING:
                    # Counted, not audited: a sweep re-reads every record our own writes
                    # touched, and an audit row per record per sweep would bury the real
                    # decisions. Webhooks and reprocessing audit kept records.
                    self._counted(decision, report)
                else:
                    audit.append(decision)
            if quota is not None:
                raise quota  # after `finally` has audited every decision of this batch
        finally:
            for decision in audit:
                self._counted(decision, report)
            if not self.dry_run:
                if audit:
                    self.store.commit({}, [], audit)
                self.store.unlock_records([keys[r.id] for r in mine], token)
            self._report_calls()
            log.info("batch routed", extra={
                "crm": self.crm, "object": obj, "trigger": trigger,
                "records": len(crm_records) + len(gone),
                "outcomes": dict(report.outcomes - outcomes_before),
                "written": report.written - written_before,
                "write_failed": report.write_failed - failed_before,
                "locked_elsewhere": len(crm_records) - len(mine), "dry_run": self.dry_run})

    def _recheck(self, obj: str, records: list[CrmRecord], read_at: datetime | None,
                 audit: list[Decision], instant: datetime, kind: str, trigger: str
                 ) -> list[CrmRecord]:
        """Re-read owners of a stale snapshot in one call, so a human's assignment made since
        is respected (DESIGN.md §1); a record gone meanwhile is skipped, not dropped."""
        if read_at is None or not records or \
                (self.clock() - read_at).total_seconds() <= self.recheck_after:
            return records
        owners = self.connector.read_owners(obj, [r.id for r in records])
        owner_field = field_map(self.crm, obj, self.routing.file.field_maps).get("owner")
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

    def _write(self, obj: str, decisions: list[Decision], current: Mapping[str, str | None],
               report: RunReport) -> tuple[list[Decision], QuotaExhausted | None]:
        """Write new owners in batches; every decision comes back with its write's result,
        and the quota stop, if the CRM's daily quota ran out, for the caller to raise."""
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
            return list(out.values()), None
        failed: list[str] = []
        quota: QuotaExhausted | None = None
        if pending:
            results: list[WriteResult] | None
            answered = pending  # the ids whose results below say what happened
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
        report.write_failed += len(failed) + sum(
            1 for d in out.values() if d.write_error and d.record_id not in pending)
        if failed:
            self.store.add_failed(self.crm, obj, failed)
        done = [i for i in out if i not in failed]
        if done:
            self.store.remove_failed(self.crm, obj, done)
        return list(out.values()), quota

    @staticmethod
    def _mark_unwritten(out: dict[str, Decision], ids: Mapping[str, str], why: str) -> None:
        for record_id in ids:
            out[record_id] = out[record_id]._replace(write_error=f"{why}; retried next run")


def _checkpoint(since: datetime | None, cursor: str | None, max_seen: datetime | None
                ) -> dict[str, str | None]:
    return {"since": since.isoformat() if since else None, "cursor": cursor,
            "max_seen": max_seen.isoformat() if max_seen else None}


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# -- what-if (`Pipeline.simulate`) --------------------------------------------------------

NO_OWNER = "(none)"


@dataclass(frozen=True, slots=True)
class Move:
    """A record a routing file would give another owner (owners by rep id where known)."""

    record_id: str
    before: str  # rep id, else the CRM owner id, else NO_OWNER
    after: str
    rule: str  # the winning rule, "(fallback)" for the top-level fallback


@dataclass(frozen=True, slots=True)
class OwnerLoad:
    """Records one owner holds now and would hold under the simulated routing file."""

    owner: str
    before: int
    after: int


@dataclass(frozen=True, slots=True)
class Simulation:
    """What a routing file would do to one CRM object's records; nothing was written."""

    crm: str
    object: str
    records: int  # records decided (unreadable ones excluded)
    moves: tuple[Move, ...]  # in listing order
    loads: tuple[OwnerLoad, ...]  # most records after first, then by owner
    unreadable: tuple[str, ...] = ()  # ids the field map could not normalize
