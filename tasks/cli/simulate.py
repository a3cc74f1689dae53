"""`account-router simulate`: what a new routing file would do to a CRM, writing nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sync.pipeline import Simulation
from tasks.cli.common import CrmOpt, err, load_routing_file, open_pipeline, out

MOVES_SHOWN = 50


def simulate(
    config: Annotated[Path, typer.Option("--config", "-c", help="The NEW routing file to try.")],
    crm: CrmOpt,
    object: Annotated[str, typer.Option("--object", help="CRM object, e.g. companies, Lead.")],
    state: Annotated[str | None, typer.Option("--state", help="State URL (pool cursors and "
                     "pauses are read, never written).", show_default=False)] = None,
) -> None:
    """What-if: which records a routing file would move, and each rep's load before/after."""
    routing = load_routing_file(config)
    with open_pipeline(routing, crm, object, state, dry_run=True, if_missing="empty"
                       ) as (pipeline, obj):
        result = pipeline.simulate(obj)
    _print(result)


def _print(result: Simulation) -> None:
    for record_id in result.unreadable:
        err.print(f"warning: {result.crm} {result.object} {record_id}: cannot be normalized; "
                  "left out", soft_wrap=True)
    out.print(f"{result.records} {result.crm} {result.object} records; {len(result.moves)} "
              "would move")
    table = Table(title=f"would move (first {min(len(result.moves), MOVES_SHOWN)})")
    for column in ("record", "from", "to", "rule"):
        table.add_column(column)
    for move in result.moves[:MOVES_SHOWN]:
        table.add_row(move.record_id, move.before, move.after, move.rule)
    out.print(table)
    load = Table(title="records per owner")
    load.add_column("owner")
    load.add_column("before", justify="right")
    load.add_column("after", justify="right")
    for row in result.loads:
        load.add_row(row.owner, str(row.before), str(row.after))
    out.print(load)
