"""`account-router simulate`: what a new routing file would do to a CRM, writing nothing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from config.settings import Settings
from connectors import registry
from sync.engine import route_batch
from sync.models import Outcome
from sync.normalize import id_key
from sync.pipeline import Pipeline
from sync.ports import CredentialsError, CrmError, canonical_object
from tasks.cli.common import fail, load_routing_file, open_state, out, parse_instant

MOVES_SHOWN = 50


def simulate(
    config: Annotated[Path, typer.Option("--config", "-c", help="The NEW routing file to try.")],
    crm: Annotated[str, typer.Option("--crm", help="hubspot, salesforce or csv.")],
    object: Annotated[str, typer.Option("--object", help="CRM object, e.g. companies, Lead.")],
    state: Annotated[str | None, typer.Option("--state", help="State URL (pool cursors and "
                     "pauses are read, never written).", show_default=False)] = None,
) -> None:
    """What-if: which records a routing file would move, and each rep's load before/after."""
    routing = load_routing_file(config)
    try:
        obj = canonical_object(crm, object)
        connector = registry.create_for(crm, routing, Settings())
    except (ValueError, CredentialsError) as exc:
        fail(str(exc))
    store = open_state(state)
    try:
        pipeline = Pipeline(connector, routing, store, dry_run=True)
        crm_records = []
        cursor: str | None = None
        while True:  # every record: a what-if is about the whole book, not what changed
            page = connector.list_records(obj, since=None, cursor=cursor)
            crm_records += page.records
            cursor = page.cursor
            if cursor is None:
                break
        records = [pipeline.to_record(obj, r) for r in crm_records]
        now = parse_instant(None)
        # One batch, so pool rotation runs on across all records as it would for real.
        decisions = route_batch(records, routing, store, now, trigger="simulate",
                                users=pipeline.users(), dry_run=True, crm=pipeline.crm,
                                account_owners=pipeline._account_owners(records))
    except CredentialsError as exc:
        fail(str(exc))
    except CrmError as exc:
        fail(str(exc), code=1)
    finally:
        store.close()
        connector.close()

    def who(owner: str | None) -> str:
        if not owner:
            return "(none)"
        return routing.owner_to_rep.get(id_key(owner)) or owner

    before: Counter[str] = Counter(who(r.owner) for r in records)
    after: Counter[str] = Counter()
    moves = []
    for record, decision in zip(records, decisions, strict=True):
        new = decision.owner if decision.outcome in (Outcome.ASSIGNED, Outcome.FALLBACK) \
            else who(record.owner)
        after[new or "(none)"] += 1
        if new and new != who(record.owner):
            moves.append((record.id, who(record.owner), new, decision.rule or "(fallback)"))
    out.print(f"{len(records)} {crm} {obj} records; {len(moves)} would move")
    table = Table(title=f"would move (first {min(len(moves), MOVES_SHOWN)})")
    for column in ("record", "from", "to", "rule"):
        table.add_column(column)
    for move in moves[:MOVES_SHOWN]:
        table.add_row(*move)
    out.print(table)
    load = Table(title="records per owner")
    load.add_column("owner")
    load.add_column("before", justify="right")
    load.add_column("after", justify="right")
    for owner in sorted(set(before) | set(after), key=lambda o: (-after[o], o)):
        load.add_row(owner, str(before[owner]), str(after[owner]))
    out.print(load)
