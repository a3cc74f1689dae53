"""`account-router db upgrade | prune`: the decision history's schema and retention."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from tasks.cli.common import fail, out, parse_instant

if TYPE_CHECKING:  # imported when a command runs: the rest of the CLI never loads SQLAlchemy
    from sync.history import History

app = typer.Typer(
    name="db",
    help="The decision history's database: migrate its schema, prune old decisions.",
    no_args_is_help=True,
    add_completion=False,
)

DatabaseOpt = Annotated[str | None, typer.Option(
    "--database", help="History database URL (default: ACCOUNT_ROUTER_DATABASE_URL, else the "
    "embedded SQLite state file).", show_default=False)]


def _database_url(database: str | None) -> str:
    from connectors.settings import Settings

    if database is not None:
        return database
    try:
        return Settings().resolved_database_url()
    except ValueError as exc:
        fail(str(exc))


def _open(database: str | None) -> History:
    from sync.history import History

    try:
        return History(_database_url(database))
    except ValueError as exc:
        fail(str(exc))


def _unreachable(history: History, exc: Exception) -> None:
    from sync.history.store import describe_error

    history.close()
    fail(f"cannot reach the history database {history.shown_url!r}: {describe_error(exc)}")


@app.command()
def upgrade(database: DatabaseOpt = None) -> None:
    """Apply the history's schema migrations (safe to run twice, and from several machines at
    once); prints the revision before and after."""
    from sqlalchemy.exc import SQLAlchemyError

    history = _open(database)
    try:
        before = history.current_revision()
        history.upgrade()
        after = history.current_revision()
    except SQLAlchemyError as exc:
        _unreachable(history, exc)
    history.close()
    if before == after:
        out.print(f"history database {history.shown_url} already at revision {after}",
                  soft_wrap=True)
    else:
        out.print(f"history database {history.shown_url} upgraded from revision "
                  f"{before or 'none'} to {after}", soft_wrap=True)


@app.command()
def prune(
    older_than: Annotated[int | None, typer.Option(
        "--older-than", min=1, help="Days of history to keep (default: "
        "ACCOUNT_ROUTER_HISTORY_RETENTION_DAYS, 90).", show_default=False)] = None,
    database: DatabaseOpt = None,
    now: Annotated[str | None, typer.Option(
        "--now", help="ISO 8601 instant to count the days back from (default: now).",
        show_default=False)] = None,
) -> None:
    """Delete decisions (and their events) decided more than --older-than days ago."""
    from sqlalchemy.exc import SQLAlchemyError

    from connectors.settings import Settings
    from sync.history import SchemaOutOfDate

    days = older_than if older_than is not None else Settings().history_retention_days
    before = parse_instant(now) - timedelta(days=days)
    history = _open(database)
    try:
        history.require_current()
        removed = history.prune(before)
    except SchemaOutOfDate as exc:
        history.close()
        fail(str(exc))
    except SQLAlchemyError as exc:
        _unreachable(history, exc)
    history.close()
    out.print(f"pruned {removed:,} decisions decided before {before.isoformat()} "
              f"(kept {days} days) from {history.shown_url}", soft_wrap=True)
