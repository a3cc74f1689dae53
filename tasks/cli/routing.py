"""Routing-file commands: validate, route-file, explain, audit, stats (no CRM needed)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from connectors.csv.file import InputError, OutputError, count_rows
from connectors.settings import Settings
from sync.compiler import CompiledRouting
from sync.decide import RoutingContext, decide
from sync.enrich import EnrichData
from sync.models import Decision, Record, TraceStep
from sync.normalize import build_record
from tasks.cli.common import (
    ConfigOpt,
    NowOpt,
    StateOpt,
    err,
    fail,
    load_routing_file,
    open_history,
    open_state,
    out,
    parse_instant,
    print_json,
)
from tasks.cli.crm import explain_crm
from tasks.route_file import FileSummary, route_file

if TYPE_CHECKING:  # imported by audit and stats only: other commands never load SQLAlchemy
    from sync.history import History

T = TypeVar("T")


def validate(config: Annotated[Path, typer.Argument(help="Routing file to check.")]) -> None:
    """Check a routing file: one-line summary and exit 0, or the error and exit 2."""
    routing = load_routing_file(config)
    for warning in routing.warnings:
        err.print(f"warning: {config}: {warning}",
                  soft_wrap=True)
    out.print(f"{config}: OK: {routing.summary()}",
              soft_wrap=True)


def route_file_cmd(
    input: Annotated[Path, typer.Option("--input", "-i", help="CSV export to route.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the result.")],
    config: ConfigOpt = None,
    now: NowOpt = None,
    state: StateOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary table.")] = False,
) -> None:
    """Route a CSV export offline: id,previous_owner,owner,outcome,rule,reason per input row."""
    routing = load_routing_file(config)
    instant = parse_instant(now)
    try:
        # Reads the whole file once: a bad header, encoding or CSV syntax is a usage error
        # found before anything is routed or written.
        total = count_rows(input)
    except InputError as exc:
        fail(str(exc))
    if output.is_dir():
        fail(f"{output}: cannot write output: it is a directory")
    if not output.parent.is_dir():
        fail(f"{output}: cannot write output: no such directory {str(output.parent)!r}")
    store = open_state(state)
    progress = Progress("[progress.description]{task.description}", BarColumn(),
                        MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                        transient=True, disable=not err.is_terminal)
    try:
        with progress:
            task = progress.add_task("routing", total=total)
            summary = route_file(routing, store, input, output, instant,
                                 progress=lambda n: progress.advance(task, n))
    except InputError as exc:
        fail(str(exc))
    except OutputError as exc:
        # Before routing began this is a usage error; later, pool turns were already taken.
        fail(str(exc) + ("; no output written, but the routed rows' decisions are in the state"
                         if exc.started else ""), code=1 if exc.started else 2)
    finally:
        store.close()
    for message in summary.malformed:
        err.print(f"warning: {input}: {message}: routed as skipped", soft_wrap=True)
    if not quiet:
        _print_summary(summary, routing)
    if summary.outcomes.get("skipped"):
        raise typer.Exit(1)


def _print_summary(summary: FileSummary, routing: CompiledRouting) -> None:
    table = Table(title=f"{summary.rows} records routed", show_lines=False)
    table.add_column("outcome")
    table.add_column("records", justify="right")
    for outcome in ("assigned", "fallback", "kept_existing", "unassigned", "skipped",
                    "pending_review"):
        table.add_row(outcome, str(summary.outcomes.get(outcome, 0)))
    out.print(table)
    rules = Table(title="by rule")
    rules.add_column("rule")
    rules.add_column("records", justify="right")
    for rule in routing.rules:
        rules.add_row(rule.name, str(summary.rules.get(rule.name, 0)))
    for extra in ("(top-level fallback)", "(kept existing owner)", "(unassigned)"):
        if summary.rules.get(extra):
            rules.add_row(extra, str(summary.rules[extra]))
    out.print(rules)
    reps = Table(title="by rep (new assignments)")
    reps.add_column("rep")
    reps.add_column("records", justify="right")
    for rep_id, count in sorted(summary.reps.items(), key=lambda kv: (-kv[1], kv[0])):
        reps.add_row(rep_id, str(count))
    out.print(reps)
    for name, pool in routing.pools.items():
        counts = summary.pools.get(name, Counter())
        loads = [counts.get(m, 0) for m in pool.members]
        spread = max(loads) - min(loads) if loads else 0
        row = ", ".join(f"{m} {counts.get(m, 0)}" for m in pool.members)
        out.print(f"pool {name} ({pool.strategy}): {row}; spread {spread}")


def explain(
    record_id: Annotated[str | None, typer.Argument(help="CRM record id (with --crm and "
                         "--object).", show_default=False)] = None,
    record: Annotated[str | None, typer.Option("--record", help="The record as a JSON object.",
                      show_default=False)] = None,
    crm: Annotated[str | None, typer.Option("--crm", help="Read the record from this CRM.",
                   show_default=False)] = None,
    object: Annotated[str | None, typer.Option("--object", help="CRM object, e.g. companies, "
                      "Lead.", show_default=False)] = None,
    config: ConfigOpt = None,
    now: NowOpt = None,
    state: StateOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
) -> None:
    """Show how a record would be routed and why; nothing is written or counted."""
    if (record is None) == (crm is None):
        fail("explain: give either --record JSON or --crm NAME --object OBJ ID")
    routing = load_routing_file(config)
    instant = parse_instant(now)
    rec: Record | None
    if record is not None:
        rec = _record_from_json(record)
        notes: tuple[TraceStep, ...] = ()
        if routing.enrichment is not None:
            # No CRM here, so no accounts: company_match leaves a JSON record as it is.
            rec, notes = routing.enrichment.run(rec, EnrichData())
        store = open_state(state, if_missing="empty")
        try:
            snapshots = store.load_pools(RoutingContext.pool_windows(routing, instant))
            ctx = RoutingContext(routing=routing, now=instant, paused=store.pauses(instant),
                                 pools=snapshots, enriched={rec.id: notes} if notes else {})
        finally:
            store.close()
        decision = decide(rec, ctx, trigger="explain")
    else:
        if crm is None or object is None or record_id is None:
            fail("explain --crm: also give --object OBJ and the record ID")
        rec, decision = explain_crm(routing, crm, object, record_id, state, instant)
    if as_json:
        print_json(decision.to_dict())
        return
    out.print(f"record {decision.record_id} ({decision.object}) at {instant.isoformat()}")
    out.print(f"outcome: {decision.outcome}  owner: {decision.owner or '-'}  "
              f"rule: {decision.rule or '-'}")
    out.print(f"reason: {decision.reason}")
    by_name = {r.name: r for r in routing.rules}
    for step in decision.trace:
        if step.result == "no_match" and rec is not None:
            failed = [c.text for c in by_name[step.rule].clauses if not c.test(rec)]
            detail = f"not met: {'; '.join(failed)}"
        else:
            detail = step.detail
        out.print(f"  {step.rule}: {step.result} ({detail})",
                  soft_wrap=True)


def _record_from_json(record: str) -> Record:
    try:
        values = json.loads(record)
    except json.JSONDecodeError as exc:
        fail(f"--record: expected a JSON object, found invalid JSON ({exc})")
    except (ValueError, RecursionError):  # an integer past 4,300 digits; arrays nested deeply
        fail("--record: expected a JSON object of fields, found numbers or nesting too large "
             "to read")
    if not isinstance(values, dict):
        fail("--record: expected a JSON object such as {\"id\": \"1\", \"domain\": \"acme.com\"}")
    # "\ud800" is valid JSON but no text: it could be neither printed nor stored.
    if any(_lone_surrogate(k) or (isinstance(v, str) and _lone_surrogate(v))
           for k, v in values.items()):
        fail("--record: a field name or value holds a lone surrogate (\\ud800-\\udfff)")
    nested = [k for k, v in values.items() if isinstance(v, dict | list)]
    if nested:
        fail(f"--record: field {nested[0]!r} must be a string, number or null, not "
             f"{type(values[nested[0]]).__name__}")
    try:
        return build_record({k: v for k, v in values.items() if v is not None})
    except ValueError as exc:
        fail(f"--record: {exc}")


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def audit(
    record_id: Annotated[str, typer.Argument(help="CRM or file record id.")],
    state: StateOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The audit trail of one record, newest first."""
    with open_history(state) as history:
        decisions = _read(lambda: history.decisions(record_id=record_id), history)
    if as_json:
        print_json([d.to_dict() for d in decisions])
    if not decisions:
        fail(f"no decisions recorded for {record_id!r}", code=1)
    if as_json:
        return
    for d in decisions:
        _print_decision(d)


def _read(query: Callable[[], T], history: History) -> T:
    """Run a history query; a database failure is exit 2 naming the database (redacted)."""
    from sqlalchemy.exc import SQLAlchemyError

    from sync.history.store import describe_error

    try:
        return query()
    except SQLAlchemyError as exc:
        fail(f"cannot read the history database {history.shown_url!r}: {describe_error(exc)}")


def _print_decision(d: Decision) -> None:
    when = d.decided_at.isoformat() if d.decided_at else "?"
    out.print(f"{when}  {d.crm}/{d.object} {d.record_id}: {d.outcome} "
              f"{d.previous_owner or '-'} -> {d.owner or '-'} (rule {d.rule or '-'}, "
              f"trigger {d.trigger})", soft_wrap=True)
    out.print(f"    {d.reason}", soft_wrap=True)
    for step in d.trace:
        out.print(f"    - {step.rule}: {step.result} {step.detail}", soft_wrap=True)


def stats(
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601; default: 7 days "
                     "ago.", show_default=False)] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601; default: now.",
                     show_default=False)] = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Assignments per rep and per pool over a window, with each pool's spread."""
    end = parse_instant(until, "--until")
    start = parse_instant(since, "--since") if since else end - timedelta(days=7)
    if start >= end:
        fail(f"--since {start.isoformat()} must be before --until {end.isoformat()}")
    routing = load_routing_file(config) if (config is not None or Settings().config) else None
    with open_history(state) as history:
        rows = _read(lambda: history.load(since=start, until=end), history)
    per_rep: Counter[str] = Counter()
    per_pool: dict[str, Counter[str]] = {}
    for row in rows:
        per_rep[row.rep] += row.count
        # Pool turns only: an overflow (outcome `fallback`) names the pool but is no member's
        # turn and must not count in the pool's spread.
        if row.pool is not None and row.outcome == "assigned":
            per_pool.setdefault(row.pool, Counter())[row.rep] += row.count
    pools: dict[str, list[str]] = {name: sorted(c) for name, c in per_pool.items()}
    if routing is not None:
        pools.update({name: list(p.members) for name, p in routing.pools.items()})
    reps = dict(sorted(per_rep.items()))
    loads = {name: {m: per_pool.get(name, Counter()).get(m, 0) for m in members}
             for name, members in sorted(pools.items())}
    if as_json:
        print_json({
            "since": start.isoformat(), "until": end.isoformat(), "reps": reps,
            "pools": {name: {"members": members, "spread": _spread(list(members.values()))}
                      for name, members in loads.items()},
        })
        return
    out.print(f"assignments from {start.astimezone(UTC):%Y-%m-%d %H:%M} to "
              f"{end.astimezone(UTC):%Y-%m-%d %H:%M} UTC")
    table = Table()
    table.add_column("rep")
    table.add_column("assignments", justify="right")
    for rep_id, count in reps.items():
        table.add_row(rep_id, str(count))
    out.print(table)
    for name, members in loads.items():
        shares = ", ".join(f"{m} {c}" for m, c in members.items())
        out.print(f"pool {name}: {shares}; spread {_spread(list(members.values()))}")


def _spread(values: list[int]) -> int:
    return max(values) - min(values) if values else 0
