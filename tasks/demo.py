"""`account-router demo`: the local CRM simulator, both CRMs routed end to end, one summary."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from config.routing import Pool
from connectors import registry
from connectors.registry import load_routing
from connectors.settings import Settings
from connectors.simulator import Simulator, serve
from sync.pipeline import Pipeline, RunReport
from sync.state.base import LoadRow
from sync.state.sqlite import SqliteStateStore
from tasks.followers import followers_for
from tasks.metrics import LocalMetrics

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "examples" / "routing.yaml"
OBJECTS = {"hubspot": ("companies", "contacts"), "salesforce": ("Account", "Lead")}
# The demo's reps are made up: a Slack token or SMTP relay configured in this shell must not
# message real people about simulated records (blank settings read as unset).
NOTIFY_OFF = {"ACCOUNT_ROUTER_SLACK_TOKEN": "", "ACCOUNT_ROUTER_SMTP_URL": ""}


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    # The connectors read the standard settings (and requests reads REQUESTS_CA_BUNDLE) from the
    # environment; set them for the demo only and restore whatever was there.
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_demo(console: Console, *, companies: int = 1000, leads: int = 300, seed: int = 42,
             config: Path = EXAMPLE, then: Callable[[str], None] | None = None) -> bool:
    """Seed both CRMs, route every object in this process, print the summary; True if clean.

    `then(state_url)` runs after the summary, while the simulator and the demo's state (a
    temporary directory, removed once it returns) are still there: `demo --dashboard` serves
    the dashboard over them until Ctrl-C."""
    routing = load_routing(config)
    sim = Simulator(seed=seed)
    # Created "now", so speed-to-lead measures this run, not the seeded history.
    sim.seed(companies=companies, contacts=leads, accounts=companies, leads=leads, days=0)
    reports: list[RunReport] = []
    started = time.perf_counter()
    with serve(sim) as running, tempfile.TemporaryDirectory() as tmp, \
            _environment(running.env() | NOTIFY_OFF):
        console.print(f"simulator: HubSpot {running.hubspot_url}, Salesforce "
                      f"{running.salesforce_url}; seeded {companies} companies/accounts and "
                      f"{leads} contacts/leads in each", highlight=False)
        settings = Settings()
        store = SqliteStateStore(Path(tmp) / "state.db")
        # The demo's own counters: never the shared (Redis) series of a real deployment.
        metrics = LocalMetrics()
        try:
            for crm, objects in OBJECTS.items():
                connector = registry.create_for(crm, routing, settings)
                try:
                    pipeline = Pipeline(connector, routing, store, metrics=metrics,
                                        followers=followers_for(settings, store, routing, crm))
                    for obj in objects:
                        reports.append(pipeline.sweep(obj, full=True))
                finally:
                    connector.close()
            loads = store.load()
        finally:
            store.close()
        calls = {crm: sim.stats(crm)["total"] for crm in OBJECTS}
        elapsed = time.perf_counter() - started
        _print(console, routing.pools, reports, loads, calls, elapsed)
        if then is not None:
            then(f"sqlite:///{Path(tmp) / 'state.db'}")
    return not any(r.failed or r.stopped for r in reports)


def _print(console: Console, pools: Mapping[str, Pool], reports: list[RunReport],
           loads: list[LoadRow], calls: dict[str, int], elapsed: float) -> None:
    outcomes = Table(title="outcomes")
    outcomes.add_column("")
    for r in reports:
        outcomes.add_column(f"{'HubSpot' if r.crm == 'hubspot' else 'Salesforce'}\n{r.object}",
                            justify="right")
    for name in ("assigned", "fallback", "kept_existing", "unassigned", "skipped",
                 "pending_review"):
        outcomes.add_row(name, *(str(r.outcomes.get(name, 0)) for r in reports))
    outcomes.add_row("owners written", *(str(r.written) for r in reports))
    outcomes.add_row("write failures", *(str(r.write_failed) for r in reports))
    console.print(outcomes)

    rules: Counter[str] = Counter()
    reps: Counter[str] = Counter()
    for r in reports:
        rules.update(r.rules)
        reps.update(r.reps)
    by_rule = Table(title="by rule (new owners)")
    by_rule.add_column("rule")
    by_rule.add_column("records", justify="right")
    for rule, n in rules.most_common():
        by_rule.add_row(rule, str(n))
    by_rep = Table(title="by rep (new owners)")
    by_rep.add_column("rep")
    by_rep.add_column("records", justify="right")
    for rep, n in reps.most_common():
        by_rep.add_row(rep, str(n))
    console.print(by_rule)
    console.print(by_rep)

    per_pool: dict[str, Counter[str]] = {}
    for row in loads:
        if row.pool is not None and row.outcome == "assigned":
            per_pool.setdefault(row.pool, Counter())[row.rep] += row.count
    for name, pool in pools.items():
        counts = per_pool.get(name, Counter())
        values = [counts.get(m, 0) for m in pool.members]
        members = ", ".join(f"{m} {counts.get(m, 0)}" for m in pool.members)
        console.print(f"pool {name} ({pool.strategy}): {members}; spread "
                      f"{max(values) - min(values)}", highlight=False)

    routed = sum(sum(r.outcomes.values()) for r in reports)
    console.print("API calls: " + ", ".join(f"{crm} {n}" for crm, n in calls.items())
                  + f" for {routed} records", highlight=False)
    speeds = [s for r in reports for s in r.speed]
    if speeds:
        q = statistics.quantiles(speeds, n=100) if len(speeds) > 1 else [speeds[0]] * 99
        console.print(f"speed to lead (record created -> owner written): p50 {q[49]:.2f} s, "
                      f"p95 {q[94]:.2f} s, max {max(speeds):.2f} s over {len(speeds)} writes",
                      highlight=False)
    console.print(f"done in {elapsed:.1f} s", highlight=False)
