"""Decision history in PostgreSQL, 1M decisions: bytes each, insert rate, lookups, query times."""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import string
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sync.history import History  # noqa: E402
from sync.models import Decision, Outcome, PoolTurn, TraceStep  # noqa: E402
from tests.servers.postgres import PostgresServer  # noqa: E402

# The instant the generated history ends: fixed so every run measures the same windows.
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
# Issue 9's sizing: a portal routing ~10k records a day, kept 90 days (the default retention).
DAYS = 90
TARGETS = {"bytes": 300.0, "rate": 20_000.0, "p99_ms": 20.0, "query_ms": 300.0}
# Durable like production (the test fixture turns these off for speed): the insert rate must not
# be flattered by skipping the WAL flush a real commit pays.
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}

SF_ID_CHARS = string.ascii_letters + string.digits


class Shape:
    """A routing file's worth of names: 50 reps, 8 pools, 20 rules, a few queues."""

    def __init__(self, rng: random.Random) -> None:
        self.reps = [f"rep-{name}" for name in _rep_names(rng, 50)]
        self.pools = ["smb-us", "smb-emea", "mid-market", "enterprise-east", "enterprise-west",
                      "inbound-leads", "partners", "apac"]
        # Each pool has 5-9 members; a rep may sit in two pools.
        self.members = {pool: rng.sample(self.reps, rng.randint(5, 9)) for pool in self.pools}
        self.queues = ["queue-unrouted", "queue-review"]
        # 20 rules in file order: named-account reps first, then territories into pools, then
        # account_owner for leads and contacts, then queues (the shapes docs/routing-file.md shows).
        self.rules: list[tuple[str, str, str]] = []  # (name, kind, target)
        for i in range(4):
            self.rules.append((f"named-accounts-{i + 1}", "rep", self.reps[i]))
        for i in range(13):
            pool = self.pools[i % len(self.pools)]
            self.rules.append((f"territory-{pool}-{i + 1}", "pool", pool))
        self.rules.append(("follow-account-owner", "account_owner", ""))
        self.rules.append(("unqualified-to-queue", "queue", self.queues[0]))
        self.rules.append(("large-deal-review", "queue", self.queues[1]))
        # Which rule wins, skewed like real files: a few broad territory rules take most traffic.
        self.rule_weights = [rng.paretovariate(1.2) for _ in self.rules]
        self.hubspot_owner = {rep: str(rng.randint(10_000_000, 99_999_999)) for rep in self.reps}
        self.salesforce_owner = {rep: "005" + _sf_suffix(rng) for rep in self.reps}


def _rep_names(rng: random.Random, n: int) -> list[str]:
    first = ["ana", "ben", "chloe", "dev", "eli", "fay", "gus", "hana", "ivan", "jo", "kai",
             "lena", "mo", "nia", "omar", "pia", "quinn", "raj", "sara", "tom", "uma", "vik",
             "wen", "xavi", "yara", "zoe"]
    names: list[str] = []
    while len(names) < n:
        name = f"{rng.choice(first)}.{rng.choice(string.ascii_lowercase)}"
        if name not in names:
            names.append(name)
    return names


def _sf_suffix(rng: random.Random) -> str:
    """The 15 characters after a Salesforce key prefix (an 18-char id: prefix + 12 + 3 check)."""
    return "".join(rng.choices(SF_ID_CHARS, k=15))


def _seconds(rng: random.Random, median: float) -> float:
    """A lognormal delay around `median` seconds: most quick, a long tail (retries, backlogs)."""
    return rng.lognormvariate(0.0, 1.0) * median


def generate(n: int, seed: int) -> Iterator[tuple[int, Decision]]:
    """`n` decisions over the DAYS before NOW, oldest first, with service-mode decision ids
    (microseconds since the epoch, +1 on collision), like the Redis commit assigns them."""
    rng = random.Random(seed)
    shape = Shape(rng)
    rule_names = [r[0] for r in shape.rules]
    start = NOW - timedelta(days=DAYS)
    span = (NOW - start).total_seconds()
    # Sorted arrival times: uniform over the span is close enough to a daily rhythm for sizes.
    offsets = sorted(rng.random() * span for _ in range(n))
    last_id = 0
    seen: list[tuple[str, str, str]] = []  # (crm, object, record id) decided before
    for offset in offsets:
        created = start + timedelta(seconds=offset)
        crm = "hubspot" if rng.random() < 0.6 else "salesforce"
        if seen and rng.random() < 0.08:
            # Decided again (reprocess, an owner change, a sweep after a rule edit): record-id
            # lookups then find several decisions, as they do in a real history.
            crm, obj, record_id = seen[rng.randrange(max(0, len(seen) - 50_000), len(seen))]
            trigger = "sweep"
        elif crm == "hubspot":
            obj = "account" if rng.random() < 0.55 else "contact"
            record_id = str(rng.randint(1_000_000_000, 39_999_999_999))
            trigger = "webhook" if rng.random() < 0.7 else "sweep"
        else:
            obj = rng.choices(["account", "lead", "contact"], [0.35, 0.5, 0.15])[0]
            prefix = {"account": "001", "lead": "00Q", "contact": "003"}[obj]
            record_id = prefix + _sf_suffix(rng)
            trigger = rng.choices(["sweep", "webhook", "api"], [0.6, 0.3, 0.1])[0]
        seen.append((crm, obj, record_id))
        decided = created + timedelta(seconds=_seconds(rng, 2.0 if trigger == "webhook" else 40))
        decided = min(decided, NOW)
        decision_id = max(last_id + 1, int(decided.timestamp() * 1_000_000))
        last_id = decision_id
        yield decision_id, _decision(rng, shape, rule_names, crm, obj, record_id, trigger,
                                     created, decided)


def _decision(rng: random.Random, shape: Shape, rule_names: list[str], crm: str, obj: str,
              record_id: str, trigger: str, created: datetime, decided: datetime) -> Decision:
    owners = shape.hubspot_owner if crm == "hubspot" else shape.salesforce_owner
    roll = rng.random()
    # Outcome mix of a healthy file: most assigned, some fallback, a few kept / unassigned /
    # skipped (already owned by a valid rep under `keep_valid`).
    if roll < 0.05:
        rep = rng.choice(shape.reps)
        return Decision(record_id, obj, crm, Outcome.KEPT_EXISTING, previous_owner=rep, owner=rep,
                        owner_crm_id=owners[rep],
                        reason=f"kept existing owner {rep} (active rep)", trigger=trigger,
                        created_at=created, decided_at=decided)
    if roll < 0.07:
        return Decision(record_id, obj, crm, Outcome.SKIPPED, reason="no routing for this object",
                        trigger=trigger, created_at=created, decided_at=decided)
    if roll < 0.10:
        trace = tuple(TraceStep(name, "no_match", "conditions not met") for name in rule_names)
        return Decision(record_id, obj, crm, Outcome.UNASSIGNED, trace=trace,
                        reason="no rule assigned anyone; fallback rep-manager unavailable "
                               "(out of office)",
                        trigger=trigger, created_at=created, decided_at=decided)
    winner = rng.choices(range(len(shape.rules)), shape.rule_weights)[0]
    name, kind, target = shape.rules[winner]
    steps = [TraceStep(r, "no_match", "conditions not met") for r in rule_names[:winner]]
    pool: str | None = None
    turn: PoolTurn | None = None
    outcome = Outcome.ASSIGNED
    if kind == "rep":
        owner = target
        detail = f"rep {owner}"
    elif kind == "pool":
        pool = target
        owner = rng.choice(shape.members[pool])
        passed = f" (passed over: {rng.choice(shape.reps)} out of office)" \
            if rng.random() < 0.1 else ""
        detail = f"pool {pool} round_robin -> {owner}{passed}"
        turn = PoolTurn(pool, owner, f"day:{decided.date().isoformat()}", owner, None)
    elif kind == "account_owner":
        owner = rng.choice(shape.reps)
        detail = f"owner of account example{rng.randint(1, 9999)}.com: {owner}"
    else:
        owner = target
        detail = f"queue {owner}"
    if rng.random() < 0.08:  # the chosen rep was away: the backup took it
        backup = rng.choice(shape.reps)
        detail = f"rep {owner} unavailable (out of office) -> backup {backup}"
        owner, outcome = backup, Outcome.FALLBACK
    steps.append(TraceStep(name, "won", detail))
    written: datetime | None = decided + timedelta(seconds=_seconds(rng, 0.6))
    error: str | None = None
    if rng.random() < 0.01:
        written, error = None, "HTTP 429 from HubSpot: daily limit reached, retrying later"
    crm_id = owners.get(owner, owner)
    return Decision(record_id, obj, crm, outcome, owner=owner, owner_crm_id=crm_id, rule=name,
                    reason=f"rule {name}: {detail}", trace=tuple(steps), trigger=trigger,
                    pool=pool, created_at=created, decided_at=decided, written_at=written,
                    turn=turn, write_error=error)


def _ms(seconds: float) -> float:
    return seconds * 1000.0


_TICK = os.sysconf("SC_CLK_TCK")


def server_cpu(server: PostgresServer) -> float:
    """CPU seconds the PostgreSQL server has used so far: the postmaster, its live processes
    (backends, autovacuum, checkpointer...) and those already reaped (parallel workers). On a
    busy shared machine wall times stretch with the load; CPU time does not."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    total = 0
    fields = _stat(postmaster)
    total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    for child in Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split():
        # A child that exited meanwhile is in the postmaster's cutime by now.
        with contextlib.suppress(FileNotFoundError):
            total += sum(int(f) for f in _stat(int(child))[11:13])
    return total / _TICK


def _stat(pid: int) -> list[str]:
    # After the `(comm)` field, which may hold spaces: state is field 0, utime field 11.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _timed(call: Callable[[], object], repeat: int,
           server: PostgresServer) -> tuple[float, float, float]:
    """(first run, median of `repeat` runs, median server CPU) in ms."""
    times, cpu = [], []
    for _ in range(repeat):
        cpu_before = server_cpu(server)
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
        cpu.append(server_cpu(server) - cpu_before)
    return _ms(times[0]), _ms(statistics.median(times)), _ms(statistics.median(cpu))


def _history_bytes(server: PostgresServer, database: str) -> tuple[int, dict[str, int]]:
    """pg_total_relation_size (heap + indexes + TOAST) of every table the migrations made."""
    with server.connect(database) as conn:
        conn.execute("VACUUM ANALYZE")
        rows = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
            " AND c.relname <> 'alembic_version' ORDER BY 2 DESC"
        ).fetchall()
    sizes = {str(name): int(size) for name, size in rows}
    return sum(sizes.values()), sizes


def _insert(history: History, batch: list[tuple[int, Decision]], server: PostgresServer,
            spent: list[float]) -> int:
    """History.record(batch), adding its wall, client CPU and server CPU seconds to `spent`."""
    wall, client, cpu = time.perf_counter(), time.process_time(), server_cpu(server)
    new = history.record(batch)
    spent[0] += time.perf_counter() - wall
    spent[1] += time.process_time() - client
    spent[2] += server_cpu(server) - cpu
    return new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5_000,
                        help="decisions per History.record call (the outbox flush's batch)")
    parser.add_argument("--lookups", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    with PostgresServer(settings=DURABLE) as server:
        url = server.create_database("history_bench")
        with History(url) as history:
            history.upgrade()

            inserted = 0
            spent = [0.0, 0.0, 0.0]  # wall, client CPU, server CPU seconds in History.record
            record_ids: list[str] = []
            batch: list[tuple[int, Decision]] = []
            last_report = time.monotonic()
            for row in generate(args.decisions, args.seed):
                batch.append(row)
                record_ids.append(row[1].record_id)
                if len(batch) == args.batch:
                    inserted += _insert(history, batch, server, spent)
                    batch = []
                    if time.monotonic() - last_report > 10:
                        print(f"  {inserted:,} inserted, {inserted / spent[0]:,.0f}/s",
                              file=sys.stderr)
                        last_report = time.monotonic()
            if batch:
                inserted += _insert(history, batch, server, spent)
            assert inserted == args.decisions, f"{inserted} new of {args.decisions}"
            rate = inserted / spent[0]
            # What one client and its server would sustain with a core each and nothing else
            # running: the slower of the two sides bounds the pipeline.
            cpu_rate = inserted / max(spent[1], spent[2])

            total, sizes = _history_bytes(server, "history_bench")
            per_decision = total / inserted

            rng = random.Random(args.seed + 1)
            lookups = []
            for record_id in rng.sample(record_ids, min(args.lookups, len(record_ids))):
                began = time.perf_counter()
                found = history.decisions(record_id=record_id)
                lookups.append(time.perf_counter() - began)
                assert found and found[0].record_id == record_id
            lookups.sort()
            p50 = _ms(lookups[len(lookups) // 2])
            p99 = _ms(lookups[min(len(lookups) - 1, int(len(lookups) * 0.99))])

            midnight = NOW.replace(hour=0, minute=0, second=0, microsecond=0)
            windows = {"today": (midnight, 24), "7d": (NOW - timedelta(days=7), 28),
                       "30d": (NOW - timedelta(days=30), 30)}
            queries: list[tuple[str, float, float, float]] = []
            for label, (since, buckets) in windows.items():
                calls: dict[str, Callable[[], object]] = {
                    "outcome_counts": lambda s=since: history.outcome_counts(s, NOW),
                    "rule_hits": lambda s=since: history.rule_hits(s, NOW),
                    "speed_to_lead": lambda s=since, b=buckets: history.speed_to_lead(s, NOW, b),
                    "load": lambda s=since: history.load(s, NOW),
                }
                for name, call in calls.items():
                    first, median, cpu = _timed(call, 3, server)
                    queries.append((f"{name} {label}", first, median, cpu))
    load_after = os.getloadavg()[0]

    print(f"PostgreSQL history, {inserted:,} decisions (seed {args.seed}, batches of "
          f"{args.batch:,}, fsync on; {os.cpu_count()} cores, load average "
          f"{load_before:.1f} before, {load_after:.1f} after):")
    for table, size in sizes.items():
        print(f"  {table}: {size / 1e6:,.1f} MB")
    print(f"  bytes per decision: {per_decision:,.0f} (target <= {TARGETS['bytes']:.0f})")
    print(f"  insert rate: {rate:,.0f} decisions/s wall (target >= {TARGETS['rate']:,.0f}); "
          f"CPU per decision: client {spent[1] / inserted * 1e6:.1f} µs, server "
          f"{spent[2] / inserted * 1e6:.1f} µs, so {cpu_rate:,.0f}/s with a core each")
    print(f"  lookup by record id ({len(lookups):,} random): p50 {p50:.2f} ms, p99 {p99:.2f} ms "
          f"(target p99 <= {TARGETS['p99_ms']:.0f})")
    for name, first, median, cpu in queries:
        print(f"  {name}: {median:,.1f} ms wall, {cpu:,.0f} ms server CPU "
              f"(first run {first:,.1f} ms)")
    worst_name, _, worst, _ = max(queries, key=lambda q: q[2])
    worst_cpu_name, _, _, worst_cpu = max(queries, key=lambda q: q[3])
    ok = (per_decision <= TARGETS["bytes"] and rate >= TARGETS["rate"]
          and p99 <= TARGETS["p99_ms"] and worst <= TARGETS["query_ms"])
    print(f"history: {per_decision:,.0f} B/decision, {rate:,.0f} inserts/s "
          f"({cpu_rate:,.0f}/s by CPU), lookup p99 {p99:.1f} ms, slowest dashboard query "
          f"{worst:,.0f} ms wall ({worst_name}), {worst_cpu:,.0f} ms server CPU "
          f"({worst_cpu_name}); {'all targets met' if ok else 'TARGET MISSED'} at load "
          f"{load_after:.1f}")


if __name__ == "__main__":
    main()
