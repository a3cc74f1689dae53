"""`account-router overlaps`: which rules match the same records, which win, which never do."""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sync.overlaps import OverlapCounter, Overlaps, heat_map, rule_matches
from tasks.cli.common import (
    ConfigOpt,
    NowOpt,
    err,
    fail,
    load_routing_file,
    open_pipeline,
    out,
    parse_instant,
    print_json,
)


def overlaps(
    config: ConfigOpt = None,
    input: Annotated[Path | None, typer.Option("--input", "-i", help="CSV export, as for "
                     "route-file.", show_default=False)] = None,
    crm: Annotated[str | None, typer.Option("--crm", help="Read the records from this CRM "
                   "instead (with --object).", show_default=False)] = None,
    object: Annotated[str | None, typer.Option("--object", help="CRM object, e.g. companies, "
                      "Lead.", show_default=False)] = None,
    now: NowOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
    svg: Annotated[Path | None, typer.Option("--svg", help="Also write the overlap matrix as "
                   "an SVG heat map to this file.", show_default=False)] = None,
) -> None:
    """Territory overlap: per rule, records won, matched but lost (to whom), and never-winners.

    Also how many records each pair of rules both match. Writes nothing but the optional SVG."""
    if (input is None) == (crm is None):
        fail("give exactly one of --input CSV or --crm NAME --object OBJ")
    if crm is not None and object is None:
        fail("--crm needs --object (e.g. --object companies)")
    if input is not None and object is not None:
        fail("--object goes with --crm, not with --input")
    instant = parse_instant(now)
    routing = load_routing_file(config)
    counter = OverlapCounter(routing)
    if input is not None:
        _from_file(counter, input, instant)
    else:
        assert crm is not None and object is not None  # checked above
        with open_pipeline(routing, crm, object, None, dry_run=True, if_missing="empty"
                           ) as (pipeline, obj):
            records, unreadable, decisions = pipeline.decide_all(obj, now=instant)
        for record_id in unreadable:
            err.print(f"warning: {crm} {obj} {record_id}: cannot be normalized; left out",
                      soft_wrap=True)
        counter.add_many((rule_matches(routing, r), d)
                         for r, d in zip(records, decisions, strict=True))
    result = counter.result()
    if svg is not None:
        try:
            svg.write_text(heat_map(result), encoding="utf-8")
        except OSError as exc:
            fail(f"{svg}: cannot write the heat map: {exc.strerror or exc}")
    if as_json:
        print_json(result.to_dict())
    else:
        _print(result)


def _from_file(counter: OverlapCounter, input: Path, instant: datetime) -> None:
    """Route the file exactly as `route-file` would on a first run (a fresh state in a
    temporary folder, so no pool turn of yours is taken), counting as it goes."""
    from connectors.csv.file import InputError, OutputError
    from sync.state.sqlite import SqliteStateStore
    from tasks.route_file import route_file

    with tempfile.TemporaryDirectory(prefix="account-router-overlaps-") as tmp:
        store = SqliteStateStore(Path(tmp) / "state.db")
        try:
            route_file(counter.routing, store, input, Path(tmp) / "out.csv",
                       instant, observe=counter.add_many)
        except (InputError, OutputError) as exc:
            fail(str(exc))
        finally:
            store.close()


def _print(result: Overlaps) -> None:
    table = Table(title=f"{result.records} records: rules, wins and losses")
    for column, justify in (("rule", "left"), ("matches", "right"), ("wins", "right"),
                            ("lost to", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for rule in result.rules:
        lost = ", ".join(f"{who} {n}" for who, n in rule.lost_to.items()) or "-"
        name = f"{rule.rule} (never wins)" if rule.dead else rule.rule
        table.add_row(name, str(rule.matches), str(rule.wins), lost)
    out.print(table)
    if result.pairs:
        pairs = Table(title="records both rules match")
        for column in ("rule", "and rule", "both"):
            pairs.add_column(column, justify="right" if column == "both" else "left")
        for a, b, n in sorted(result.pairs, key=lambda p: (-p[2], p[0], p[1])):
            pairs.add_row(a, b, str(n))
        out.print(pairs)
    else:
        out.print("no two rules match the same record")
