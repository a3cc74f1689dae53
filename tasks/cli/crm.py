"""CLI commands that talk to a CRM: sweep, reprocess, explain --crm, demo, simulator."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from connectors.registry import canonical_object
from sync.compiler import CompiledRouting
from sync.models import Decision, Record
from sync.pipeline import Pipeline, RunReport
from tasks.cli.common import (
    ConfigOpt,
    CrmOpt,
    DryRunOpt,
    NowOpt,
    ObjectOpt,
    StateOpt,
    err,
    fail,
    load_routing_file,
    open_pipeline,
    out,
    parse_instant,
)


def sweep(
    crm: CrmOpt,
    object: ObjectOpt,
    full: Annotated[bool, typer.Option("--full", help="Every record, not only changes since "
                    "the last sweep.")] = False,
    since: Annotated[str | None, typer.Option("--since", help="Records changed since this "
                     "instant (ISO 8601).", show_default=False)] = None,
    now: NowOpt = None,
    dry_run: DryRunOpt = False,
    config: ConfigOpt = None,
    state: StateOpt = None,
    enqueue: Annotated[bool, typer.Option("--enqueue", help="Start the sweep on the workers "
                       "(a sweep_page chain) instead of in this process.")] = False,
) -> None:
    """Route a CRM's records in this process: incremental from the stored watermark."""
    routing = load_routing_file(config)
    if enqueue:
        if dry_run or now or since or full:
            fail("--enqueue starts the workers' incremental sweep; it takes no --dry-run, "
                 "--now, --since or --full")
        # Deferred: the queue builds the Celery app and reads the broker settings, which only
        # --enqueue needs.
        from tasks import queue

        try:
            obj = canonical_object(crm, object)
            queue.enqueue_sweep(crm, obj)
        except ValueError as exc:
            fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - a broker that is down is reported, not raised
            fail(f"could not enqueue: {exc}", code=1)
        out.print(f"enqueued a sweep of {crm} {obj}")
        return
    instant = parse_instant(now) if now else None
    since_at = parse_instant(since, "--since") if since else None
    with open_pipeline(routing, crm, object, state, dry_run) as (pipeline, obj):
        with SweepProgress(err) as progress:
            report = pipeline.sweep(obj, full=full, since=since_at, now=instant,
                                    on_page=progress)
        _finish(report, pipeline)


class SweepProgress:
    """A sweep's progress on `console`: a bar with the total and an ETA on a terminal once the
    CRM has counted the listing (HubSpot search, Salesforce SOQL), else one line per page."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.clock = clock
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.last_at = clock()
        self.last_listed = 0

    def __enter__(self) -> SweepProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        # Before the summary table (or an error) is printed: a live bar would redraw over it.
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, report: RunReport) -> None:
        now = self.clock()
        if self.bar is None and report.total is not None and self.console.is_terminal:
            self.bar = Progress(TextColumn("sweeping"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=self.console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("sweep", total=report.total)
        if self.bar is not None and self.task is not None:
            # Records changed during the sweep may be listed again: never past 100 %.
            total = max(report.total or 0, report.listed)
            self.bar.update(self.task, completed=report.listed, total=total)
            return
        rate = (report.listed - self.last_listed) / max(now - self.last_at, 1e-6)
        of = f" of {report.total}" if report.total is not None else ""
        self.console.print(f"page {report.pages}: {report.listed}{of} records listed, "
                           f"{report.written} written ({rate:.0f} records/s)")
        self.last_at, self.last_listed = now, report.listed


def reprocess(
    ids: Annotated[list[str], typer.Argument(help="Record ids to route again.")],
    crm: CrmOpt,
    object: ObjectOpt,
    now: NowOpt = None,
    dry_run: DryRunOpt = False,
    config: ConfigOpt = None,
    state: StateOpt = None,
    enqueue: Annotated[bool, typer.Option("--enqueue", help="Hand the ids to the workers' "
                       "queue instead of routing them in this process.")] = False,
) -> None:
    """Route chosen records again (trigger `reprocess`), here or on the workers (--enqueue).

    --dry-run writes nothing and prints what would change."""
    if enqueue:
        _enqueue_reprocess(crm, object, ids, dry_run=dry_run, now=now)
        return
    routing = load_routing_file(config)
    instant = parse_instant(now) if now else None
    with open_pipeline(routing, crm, object, state, dry_run) as (pipeline, obj):
        report = pipeline.route_ids(obj, ids, trigger="reprocess", now=instant)
        _finish(report, pipeline)


def _enqueue_reprocess(crm: str, object: str, ids: list[str], *, dry_run: bool,
                       now: str | None) -> None:
    # Deferred: the queue builds the Celery app and reads the broker settings (see `sweep`).
    from tasks import queue

    if dry_run:
        fail("--enqueue and --dry-run cannot be combined: a dry run routes in this process")
    if now is not None:
        fail("--enqueue and --now cannot be combined: the workers route at their own now")
    try:
        obj = canonical_object(crm, object)
    except ValueError as exc:
        fail(str(exc))
    unique = list(dict.fromkeys(i.strip() for i in ids if i.strip()))
    if not unique:
        fail("no record ids to enqueue")
    try:
        queue.enqueue_route(crm, obj, unique, "reprocess")
        queue.flush()
    except Exception as exc:  # noqa: BLE001 - a broker failure is reported, not a traceback
        fail(f"could not enqueue: {exc}", code=1)
    out.print(f"enqueued {len(unique)} {crm} {obj} record(s) for reprocessing: "
              f"{', '.join(unique)}", soft_wrap=True)


def explain_crm(routing: CompiledRouting, crm: str, obj: str, record_id: str,
                state: str | None, instant: datetime) -> tuple[Record | None, Decision]:
    """`explain --crm`: read one record from the CRM and decide it; nothing written."""
    with open_pipeline(routing, crm, obj, state, dry_run=True, if_missing="empty"
                       ) as (pipeline, obj):
        return pipeline.explain_record(obj, record_id, now=instant)


def _finish(report: RunReport, pipeline: Pipeline) -> None:
    table = Table(title=f"{report.crm} {report.object}: {sum(report.outcomes.values())} "
                  f"records" + (" (dry run)" if pipeline.dry_run else ""))
    table.add_column("outcome")
    table.add_column("records", justify="right")
    for outcome in ("assigned", "fallback", "kept_existing", "unassigned", "skipped",
                    "pending_review"):
        table.add_row(outcome, str(report.outcomes.get(outcome, 0)))
    out.print(table)
    if pipeline.dry_run:
        changes = Table(title="would change")
        for column in ("record", "from", "to", "rule"):
            changes.add_column(column)
        for d in report.changes:
            changes.add_row(d.record_id, d.previous_owner or "-", d.owner or "-", d.rule or "-")
        out.print(changes)
    calls = pipeline.connector.stats()
    out.print(f"written {report.written}, write failures {report.write_failed}, locked by "
              f"another worker {report.locked_elsewhere}, pages {report.pages}, API calls "
              f"{calls.total} (retries {calls.retries})")
    # Which records were skipped or left unwritten, and why: the exit status says only that
    # some were. The audit keeps every one (`account-router audit ID`).
    for d in report.problems:
        why = f"not written: {d.write_error}" if d.write_error else f"skipped: {d.reason}"
        err.print(f"warning: {report.crm} {report.object} {d.record_id}: {why}",
                  soft_wrap=True)
    unnamed = report.outcomes.get("skipped", 0) + report.write_failed - len(report.problems)
    if unnamed > 0:
        err.print(f"warning: and {unnamed} more; `account-router audit ID` shows each record's "
                  "decisions", soft_wrap=True)
    if report.stopped:
        err.print(f"stopped early: {report.stopped}; the next run resumes from the checkpoint")
        raise typer.Exit(1)
    if report.failed:
        raise typer.Exit(1)


def demo(
    companies: Annotated[int, typer.Option(help="Companies/accounts seeded in each CRM.")] = 1000,
    leads: Annotated[int, typer.Option(help="Contacts/leads seeded in each CRM.")] = 300,
    seed: Annotated[int, typer.Option(help="Seed for the simulator's data.")] = 42,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Routing file; "
                      "default: the bundled example.", show_default=False)] = None,
    dashboard: Annotated[bool, typer.Option("--dashboard", help="Then serve the dashboard "
                         "over the demo's history on 127.0.0.1 until Ctrl-C.")] = False,
    port: Annotated[int, typer.Option(help="The dashboard's port (0 picks a free one).",
                                      min=0, max=65535)] = 8080,
) -> None:
    """Start the local CRM simulator, route both CRMs end to end, print a summary."""
    # Deferred: the simulator and its HTTP servers (about half a second to import) are needed
    # by this command only.
    from tasks.demo import EXAMPLE, run_demo

    path = config or EXAMPLE
    routing = load_routing_file(path)  # a broken file fails here with exit 2, before anything
    then = None
    if dashboard:
        from tasks.dashboard.serving import bind

        try:  # the port first: a taken one fails before the demo runs, not after
            sock = bind("127.0.0.1", port)
        except OSError as exc:
            fail(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}")

        def then(state_url: str) -> None:
            from connectors.settings import Settings
            from sync.state import open_store
            from tasks.cli.common import open_history
            from tasks.cli.dashboard import build_app, serve_dashboard

            # Embedded: the history lives in the demo's own state file.
            store = open_store(state_url)
            history = open_history(state_url)
            try:
                serve_dashboard(build_app(Settings(), store, history, routing), sock)
            finally:
                history.close()
                store.close()

    if not run_demo(out, companies=companies, leads=leads, seed=seed, config=path, then=then):
        raise typer.Exit(1)


def simulator(
    seed: Annotated[int, typer.Option(help="Seed for the data.")] = 42,
    hubspot_port: Annotated[int, typer.Option(help="0 picks a free port.")] = 0,
    salesforce_port: Annotated[int, typer.Option(help="0 picks a free port.")] = 0,
    companies: Annotated[int, typer.Option(help="Companies/accounts per CRM.")] = 1000,
    leads: Annotated[int, typer.Option(help="Contacts/leads per CRM.")] = 300,
) -> None:
    """Serve the local CRM simulator (HubSpot and Salesforce APIs) until Ctrl-C."""
    # Deferred: the simulator's servers are needed by this command only.
    from connectors.simulator.__main__ import main as simulator_main

    raise typer.Exit(simulator_main([
        "--seed", str(seed), "--hubspot-port", str(hubspot_port), "--salesforce-port",
        str(salesforce_port), "--companies", str(companies), "--accounts", str(companies),
        "--contacts", str(leads), "--leads", str(leads)]))
