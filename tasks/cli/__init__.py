"""The `account-router` command line (docs/operations.md#command-line): exit 0 done, 1 records
failed, 2 bad input.

One typer app; each command lives in the module of its concern and is registered here, so there
is one `--help`. Shared consoles, options and error handling are in `tasks.cli.common`.
"""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError

from config.urls import redact_urls
from tasks.cli import (
    crm,
    dashboard,
    db,
    overlaps,
    overrides,
    reps,
    review,
    routing,
    serve,
    simulate,
    sla,
    suggest,
)
from tasks.cli.common import err, settings_problem

app = typer.Typer(
    name="account-router",
    help="Route CRM accounts and leads to the right sales rep, fairly and explainably.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Registration order is the order of `--help`.
app.command()(routing.validate)
app.command("route-file")(routing.route_file_cmd)
app.command()(routing.explain)
app.command()(routing.audit)
app.command()(reps.pause)
app.command()(reps.resume)
app.command()(routing.stats)
app.command()(overrides.overrides)
app.command()(crm.sweep)
app.command()(crm.reprocess)
app.command()(crm.demo)
app.command()(crm.simulator)
app.command()(simulate.simulate)
app.command()(overlaps.overlaps)
app.command()(suggest.suggest)
app.command("sla-check")(sla.sla_check)
app.command()(serve.serve)
app.command()(dashboard.dashboard)
app.add_typer(db.app, name="db")
app.add_typer(review.app, name="review")

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        # Settings are read inside commands, after typer's own error handling: a bad variable
        # is bad usage (exit 2), never a traceback.
        err.print(f"error: {redact_urls(settings_problem(exc))}", soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
