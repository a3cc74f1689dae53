"""`account-router overrides`: owners people changed after the router wrote them, and the
override rate per rule and per rep (docs/operations.md#overrides)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.table import Table

from tasks.cli.common import StateOpt, fail, open_history, out, parse_instant, print_json

if TYPE_CHECKING:
    from sync.history import History
    from sync.history.overrides import OverrideRate

SHOWN = 50  # overrides the table lists (newest first); --json prints every one
T = TypeVar("T")


def overrides(
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601; default: 7 days "
                     "ago.", show_default=False)] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601; default: now.",
                     show_default=False)] = None,
    state: StateOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Owners a person changed after the router wrote them, with the rate per rule and rep."""
    # Imported here: it loads SQLAlchemy, which every other command (route-file above all,
    # whose start-up and memory are measured) would otherwise load for nothing.
    from sync.history.overrides import NO_RULE, list_overrides, override_rates

    end = parse_instant(until, "--until")
    start = parse_instant(since, "--since") if since else end - timedelta(days=7)
    if start >= end:
        fail(f"--since {start.isoformat()} must be before --until {end.isoformat()}")
    with open_history(state) as history:
        found = _read(lambda: list_overrides(history, start, end), history)
        if as_json:
            print_json({"overrides": [o.to_dict() for o in found]})
            return
        by_rule, by_rep = _read(lambda: override_rates(history, start, end), history)
    out.print(f"overrides from {start.astimezone(UTC):%Y-%m-%d %H:%M} to "
              f"{end.astimezone(UTC):%Y-%m-%d %H:%M} UTC: {len(found)}")
    out.print(_rates("rule", by_rule))
    out.print(_rates("rep", by_rep))
    if not found:
        return
    table = Table(title="overrides, newest first")
    for column in ("at (UTC)", "record", "from", "to", "by", "after", "rule"):
        table.add_column(column)
    for o in found[:SHOWN]:
        table.add_row(f"{o.at.astimezone(UTC):%Y-%m-%d %H:%M}", o.record_id, o.from_, o.to,
                      o.by or "-", _duration(o.after_seconds), o.rule or NO_RULE)
    out.print(table)
    if len(found) > SHOWN:
        out.print(f"... and {len(found) - SHOWN} more (--json lists every one)")


def _rates(what: str, rates: list[OverrideRate]) -> Table:
    table = Table(title=f"override rate per {what}")
    table.add_column(what)
    table.add_column("overrides", justify="right")
    table.add_column("assignments", justify="right")
    table.add_column("rate", justify="right")
    for r in rates:
        table.add_row(r.name, str(r.overrides), str(r.assignments),
                      "-" if r.rate is None else f"{r.rate:.1%}")
    return table


def _duration(seconds: float) -> str:
    """`45s`, `12m`, `3.5h`, `2.0d`: how long after our write a person changed it."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _read(query: Callable[[], T], history: History) -> T:
    """Run a history query; a database failure is exit 2 naming the database (redacted)."""
    from sqlalchemy.exc import SQLAlchemyError

    from sync.history.store import describe_error

    try:
        return query()
    except SQLAlchemyError as exc:
        fail(f"cannot read the history database {history.shown_url!r}: {describe_error(exc)}")
