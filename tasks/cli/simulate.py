"""`account-router simulate`: what a new routing file would do to a CRM, writing nothing."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sync.pipeline import ROUTED_WINDOW, Move, Simulation
from tasks.cli.common import (
    CrmOpt,
    NowOpt,
    err,
    load_routing_file,
    open_pipeline,
    out,
    parse_instant,
    try_history,
)

MOVES_SHOWN = 50
NO_HISTORY = "no decision history: rule before unknown"
ROUTED_COLUMN = f"routed ({ROUTED_WINDOW.days} d)"


def simulate(
    config: Annotated[Path, typer.Option("--config", "-c", help="The NEW routing file to try.")],
    crm: CrmOpt,
    object: Annotated[str, typer.Option("--object", help="CRM object, e.g. companies, Lead.")],
    state: Annotated[str | None, typer.Option("--state", help="State URL (pool cursors and "
                     "pauses are read, never written; the decision history recorded with it is "
                     "read for the rule before).", show_default=False)] = None,
    now: NowOpt = None,
) -> None:
    """What-if: which records a routing file would move, and each rep's load before/after."""
    from sqlalchemy.exc import SQLAlchemyError

    from sync.history.store import describe_error

    instant = parse_instant(now)
    routing = load_routing_file(config)
    with open_pipeline(routing, crm, object, state, dry_run=True, if_missing="empty"
                       ) as (pipeline, obj):
        # After the state's open: embedded, that brings the file's history tables up to date.
        history, why_not = try_history(state)
        try:
            result = pipeline.simulate(obj, now=instant)
            if history is not None:
                # Apart from the CRM's listing: a history failing now costs only its columns.
                try:
                    result = pipeline.with_history(result, history, now=instant)
                except SQLAlchemyError as exc:
                    why_not = f"cannot read the history database {history.shown_url!r}: " \
                              f"{describe_error(exc)}"
        finally:
            if history is not None:
                history.close()
    _print(result, why_not)


def _rule_before(move: Move) -> str:
    if move.rule_before is not None:
        when = move.decided_before
        return move.rule_before if when is None else \
            f"{move.rule_before} ({when.astimezone(UTC):%Y-%m-%d})"
    if move.decided_before is None:
        return "(never routed)"
    # Decided, but that decision did not give the record the owner it has now (a person did,
    # or the router kept theirs).
    return "(not by the router)"


def _print(result: Simulation, why_not: str = "") -> None:
    for record_id in result.unreadable:
        err.print(f"warning: {result.crm} {result.object} {record_id}: cannot be normalized; "
                  "left out", soft_wrap=True)
    out.print(f"{result.records} {result.crm} {result.object} records; {len(result.moves)} "
              "would move")
    if not result.history:
        out.print(f"{NO_HISTORY} ({why_not})" if why_not else NO_HISTORY, soft_wrap=True)
    table = Table(title=f"would move (first {min(len(result.moves), MOVES_SHOWN)})")
    columns = ["record", "from", "to", "rule"] + (["rule before"] if result.history else [])
    for column in columns:
        table.add_column(column)
    for move in result.moves[:MOVES_SHOWN]:
        cells = [move.record_id, move.before, move.after, move.rule]
        table.add_row(*cells, *([_rule_before(move)] if result.history else []))
    out.print(table)
    load = Table(title="records per owner")
    load.add_column("owner")
    load.add_column("before", justify="right")
    load.add_column("after", justify="right")
    if result.history:
        load.add_column(ROUTED_COLUMN, justify="right")
    for row in result.loads:
        routed = [] if not result.history else [str(row.routed_before or 0)]
        load.add_row(row.owner, str(row.before), str(row.after), *routed)
    out.print(load)
