"""`account-router demo`: the local CRM simulator, both CRMs routed end to end, one summary."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from config.routing import Pool
from connectors import registry
from connectors.registry import load_routing
from connectors.settings import Settings
from connectors.simulator import Simulator, serve
from sync.compiler import CompiledRouting
from sync.pipeline import Pipeline, RunReport
from sync.state.base import LoadRow
from sync.state.sqlite import SqliteStateStore
from sync.suggest import Report
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
             config: Path = EXAMPLE, then: Callable[[str], None] | None = None,
             suggest: bool = True) -> bool:
    """Seed both CRMs, route every object in this process, print the summary; True if clean.

    `then(state_url)` runs after the summary, while the simulator and the demo's state (a
    temporary directory, removed once it returns) are still there: `demo --dashboard` serves
    the dashboard over them until Ctrl-C. `suggest`: then plant an effect in the outcomes
    and print the rule suggestion it yields (`plant_and_suggest`)."""
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
        if suggest:
            report = plant_and_suggest(sim, routing, config, settings,
                                       f"sqlite:///{Path(tmp) / 'state.db'}")
            print_suggestions(console, report)
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


# The effect the demo plants (docs/operations.md#rule-suggestions): HubSpot companies under 50
# employees convert at 45% with Dev, 10% with everyone else. The smb pool round-robins them,
# so `suggest` sees Dev's share beside Cara's and Eli's.
PLANTED_REP, PLANTED_OWNER, PLANTED_RATE, BASE_RATE = "dev", "107", 0.45, 0.10


def planted_rate(fields: Mapping[str, object]) -> float:
    """The conversion probability of a HubSpot company with these properties."""
    try:
        small = float(str(fields.get("numberofemployees") or "")) < 50
    except ValueError:
        small = False
    mine = fields.get("hubspot_owner_id") == PLANTED_OWNER
    return PLANTED_RATE if small and mine else BASE_RATE


def plant_and_suggest(sim: Simulator, routing: CompiledRouting, config: Path,
                      settings: Settings, state_url: str) -> Report:
    """Plant the effect in the routed HubSpot companies' outcomes, then run `suggest` over
    the demo's history (the simulator must be serving, its settings in the environment)."""
    import yaml

    from sync.history import History
    from tasks.suggest import Inputs, suggest

    sim.plant_outcomes("hubspot", "companies", planted_rate, seed=1)
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    connector = registry.create_for("hubspot", routing, settings)
    history = History(state_url)
    try:
        return suggest(connector, history, Inputs(routing, document, config),
                       "companies", since=None, now=datetime.now(UTC))
    finally:
        history.close()
        connector.close()


def print_suggestions(console: Console, report: Report) -> None:
    console.print(f"\nrule suggestions (planted: HubSpot companies under 50 employees convert "
                  f"at {PLANTED_RATE:.0%} with {PLANTED_REP}, {BASE_RATE:.0%} otherwise): "
                  f"{report.tested} segment tests, {len(report.suggestions)} suggestion(s); "
                  "nothing applied", highlight=False)
    for s in report.suggestions[:3]:
        (dim, value), = s.segment.items()
        console.print(f"  {dim} = {value}: {s.from_} -> {s.to}: {s.rate_to:.0%} of {s.n_to} "
                      f"vs {s.rate_now:.0%} of {s.n_now}, p {s.p:.2g}, q {s.q:.2g}, "
                      f"moves {s.moves}", highlight=False)
    if report.suggestions:
        console.print("  rule to paste:", highlight=False)
        console.print("    " + report.suggestions[0].rule_yaml.rstrip().replace("\n", "\n    "),
                      highlight=False, markup=False)
