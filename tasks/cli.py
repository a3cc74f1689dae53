"""The `account-router` command line (DESIGN.md §5): exit 0 done, 1 records failed, 2 bad input."""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from config.routing import ConfigError
from config.settings import Settings
from connectors.csv.file import InputError, OutputError, count_rows
from sync.compiler import CompiledRouting, load_routing
from sync.decide import RoutingContext, decide
from sync.models import Decision, Record
from sync.normalize import build_record
from sync.state import open_store
from sync.state.base import StateStore

app = typer.Typer(
    name="account-router",
    help="Route CRM accounts and leads to the right sales rep, fairly and explainably.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Routing file (YAML); "
                      "default: $ACCOUNT_ROUTER_CONFIG.", show_default=False)]
StateOpt = Annotated[str | None, typer.Option("--state", help="State URL: sqlite:///file.db, "
                     "sqlite:////abs.db or redis://host:port/db.", show_default=False)]
NowOpt = Annotated[str | None, typer.Option("--now", help="Routing instant, ISO 8601 (no offset "
                   "means UTC); default: now.", show_default=False)]


def fail(message: str, code: int = 2) -> NoReturn:
    # The message is data (it may quote a regex such as `[abc](`): never parse it as markup.
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def parse_instant(text: str | None, option: str = "--now") -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"{option}: expected an ISO 8601 instant such as 2026-11-25T09:00:00Z, found {text!r}")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _routing(path: Path | None) -> CompiledRouting:
    if path is None:
        configured = Settings().config
        if not configured:
            fail("no routing file: pass --config or set ACCOUNT_ROUTER_CONFIG")
        path = Path(configured)
    try:
        return load_routing(path, list_roots=Settings().list_roots)
    except ConfigError as exc:
        fail(str(exc))


def _store(url: str | None) -> StateStore:
    resolved = Settings().resolved_state_url(url)
    try:
        store = open_store(resolved)
    except Exception as exc:  # noqa: BLE001 - any failure to open state is a usage error here
        fail(f"cannot open state {resolved!r}: {exc}")
    try:
        # Redis connects lazily: probe now, so an unreachable server is a clear usage error
        # before anything is routed rather than a traceback halfway through.
        store.pauses(datetime.now(UTC))
    except Exception as exc:  # noqa: BLE001
        store.close()
        fail(f"cannot open state {resolved!r}: {exc}")
    return store


def _print_json(value: object) -> None:
    # Plain text, never styled: scripts parse this.
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@app.command()
def validate(config: Annotated[Path, typer.Argument(help="Routing file to check.")]) -> None:
    """Check a routing file: one-line summary and exit 0, or the error and exit 2."""
    routing = _routing(config)
    for warning in routing.warnings:
        err.print(f"warning: {config}: {warning}", highlight=False, markup=False,
                  soft_wrap=True)
    out.print(f"{config}: OK: {routing.summary()}", highlight=False, markup=False,
              soft_wrap=True)


@app.command("route-file")
def route_file_cmd(
    input: Annotated[Path, typer.Option("--input", "-i", help="CSV export to route.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the result.")],
    config: ConfigOpt = None,
    now: NowOpt = None,
    state: StateOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary table.")] = False,
) -> None:
    """Route a CSV export offline: id,previous_owner,owner,outcome,rule,reason per input row."""
    from tasks.route_file import route_file

    routing = _routing(config)
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
    store = _store(state)
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
        err.print(f"warning: {input}: {message}: routed as skipped", highlight=False,
                  markup=False, soft_wrap=True)
    if not quiet:
        _print_summary(summary, routing)
    if summary.outcomes.get("skipped"):
        raise typer.Exit(1)


def _print_summary(summary: object, routing: CompiledRouting) -> None:
    from tasks.route_file import FileSummary

    assert isinstance(summary, FileSummary)
    table = Table(title=f"{summary.rows} records routed", show_lines=False)
    table.add_column("outcome")
    table.add_column("records", justify="right")
    for outcome in ("assigned", "fallback", "kept_existing", "unassigned", "skipped"):
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
        out.print(f"pool {name} ({pool.strategy}): {row}; spread {spread}", highlight=False)


@app.command()
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
    routing = _routing(config)
    instant = parse_instant(now)
    if record is not None:
        rec = _record_from_json(record)
        store = _store(state)
        try:
            snapshots = store.load_pools(RoutingContext.pool_windows(routing, instant))
            ctx = RoutingContext(routing=routing, now=instant, paused=store.pauses(instant),
                                 pools=snapshots)
        finally:
            store.close()
        decision = decide(rec, ctx, trigger="explain")
    else:
        from tasks.crm_cli import explain_crm

        if object is None or record_id is None:
            fail("explain --crm: also give --object OBJ and the record ID")
        rec, decision = explain_crm(routing, crm, object, record_id, state, instant)  # type: ignore[arg-type]
    if as_json:
        _print_json(decision.to_dict())
        return
    out.print(f"record {decision.record_id} ({decision.object}) at {instant.isoformat()}",
              highlight=False)
    out.print(f"outcome: {decision.outcome}  owner: {decision.owner or '-'}  "
              f"rule: {decision.rule or '-'}", highlight=False)
    out.print(f"reason: {decision.reason}", highlight=False, markup=False)
    by_name = {r.name: r for r in routing.rules}
    for step in decision.trace:
        if step.result == "no_match" and rec is not None:
            failed = [c.text for c in by_name[step.rule].clauses if not c.test(rec)]
            detail = f"not met: {'; '.join(failed)}"
        else:
            detail = step.detail
        out.print(f"  {step.rule}: {step.result} ({detail})", highlight=False, markup=False,
                  soft_wrap=True)


def _record_from_json(record: str) -> Record:
    try:
        values = json.loads(record)
    except json.JSONDecodeError as exc:
        fail(f"--record: expected a JSON object, found invalid JSON ({exc})")
    if not isinstance(values, dict):
        fail("--record: expected a JSON object such as {\"id\": \"1\", \"domain\": \"acme.com\"}")
    nested = [k for k, v in values.items() if isinstance(v, dict | list)]
    if nested:
        fail(f"--record: field {nested[0]!r} must be a string, number or null, not "
             f"{type(values[nested[0]]).__name__}")
    try:
        return build_record({k: v for k, v in values.items() if v is not None})
    except ValueError as exc:
        fail(f"--record: {exc}")


@app.command()
def audit(
    record_id: Annotated[str, typer.Argument(help="CRM or file record id.")],
    state: StateOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The audit trail of one record, newest first."""
    store = _store(state)
    try:
        decisions = store.decisions(record_id=record_id)
    finally:
        store.close()
    if as_json:
        _print_json([d.to_dict() for d in decisions])
    if not decisions:
        fail(f"no decisions recorded for {record_id!r}", code=1)
    if as_json:
        return
    for d in decisions:
        _print_decision(d)


def _print_decision(d: Decision) -> None:
    when = d.decided_at.isoformat() if d.decided_at else "?"
    out.print(f"{when}  {d.crm}/{d.object} {d.record_id}: {d.outcome} "
              f"{d.previous_owner or '-'} -> {d.owner or '-'} (rule {d.rule or '-'}, "
              f"trigger {d.trigger})", highlight=False, markup=False, soft_wrap=True)
    out.print(f"    {d.reason}", highlight=False, markup=False, soft_wrap=True)
    for step in d.trace:
        out.print(f"    - {step.rule}: {step.result} {step.detail}", highlight=False,
                  markup=False, soft_wrap=True)


@app.command()
def pause(
    rep: Annotated[str, typer.Argument(help="Rep id from the routing file.")],
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601; default: until "
                     "resumed.", show_default=False)] = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
) -> None:
    """Stop routing to a rep (until `resume`, or until a time)."""
    _check_rep(rep, config)
    until_at = parse_instant(until, "--until") if until is not None else None
    if until_at is not None and until_at <= datetime.now(UTC):
        err.print(f"warning: --until {until_at.isoformat()} is in the past: the pause has no "
                  "effect (it holds only for replays with an earlier --now)", highlight=False,
                  markup=False, soft_wrap=True)
    store = _store(state)
    try:
        store.pause(rep, until_at)
    finally:
        store.close()
    out.print(f"paused {rep}" + (f" until {until_at.isoformat()}" if until_at else ""),
              highlight=False)


@app.command()
def resume(
    rep: Annotated[str, typer.Argument(help="Rep id from the routing file.")],
    config: ConfigOpt = None,
    state: StateOpt = None,
) -> None:
    """Route to a paused rep again."""
    _check_rep(rep, config)
    store = _store(state)
    try:
        was = store.resume(rep)
    finally:
        store.close()
    out.print(f"resumed {rep}" if was else f"{rep} was not paused", highlight=False)


def _check_rep(rep: str, config: Path | None) -> None:
    # The routing file is optional here; when one is known, a typo'd rep id is an error.
    if config is None and not Settings().config:
        return
    routing = _routing(config)
    if rep not in routing.reps:
        fail(f"unknown rep {rep!r} (reps: {', '.join(routing.reps)})")


@app.command()
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
    routing = _routing(config) if (config is not None or Settings().config) else None
    store = _store(state)
    try:
        rows = store.load(since=start, until=end)
    finally:
        store.close()
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
    report = {
        "since": start.isoformat(), "until": end.isoformat(),
        "reps": dict(sorted(per_rep.items())),
        "pools": {
            name: {
                "members": {m: per_pool.get(name, Counter()).get(m, 0) for m in members},
                "spread": _spread([per_pool.get(name, Counter()).get(m, 0) for m in members]),
            }
            for name, members in sorted(pools.items())
        },
    }
    if as_json:
        _print_json(report)
        return
    out.print(f"assignments from {start.astimezone(UTC):%Y-%m-%d %H:%M} to "
              f"{end.astimezone(UTC):%Y-%m-%d %H:%M} UTC", highlight=False)
    table = Table()
    table.add_column("rep")
    table.add_column("assignments", justify="right")
    for rep_id, count in report["reps"].items():  # type: ignore[union-attr]
        table.add_row(rep_id, str(count))
    out.print(table)
    for name, info in report["pools"].items():  # type: ignore[union-attr]
        members = ", ".join(f"{m} {c}" for m, c in info["members"].items())
        out.print(f"pool {name}: {members}; spread {info['spread']}", highlight=False)


def _spread(values: list[int]) -> int:
    return max(values) - min(values) if values else 0


def _register_crm_commands() -> None:
    # CRM commands live in their own module (connectors, pipeline); registered here so there
    # is one app and one `--help`.
    from tasks import crm_cli, serve_cli, simulate_cli

    crm_cli.register(app)
    simulate_cli.register(app)
    serve_cli.register(app)


_register_crm_commands()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
