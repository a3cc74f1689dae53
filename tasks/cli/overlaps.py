"""`account-router overlaps`: which rules match the same records, which win, which never do."""

from __future__ import annotations

import tempfile
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sync.overlaps import OverlapCounter, Overlaps, rule_matches
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

# Heat-map geometry: a cell per rule pair, the rule names down the left and along the top.
CELL, LABEL, MAX_LABEL = 28, 200, 28


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


def heat_map(result: Overlaps) -> str:
    """The overlap matrix as a standalone SVG: a cell per pair of rules, darker for more
    records both match; the diagonal is each rule's own matches. Names are escaped (a rule
    name is the routing file's text)."""
    names = [r.rule for r in result.rules]
    n = len(names)
    counts: dict[tuple[int, int], int] = {}
    for i, rule in enumerate(result.rules):
        counts[(i, i)] = rule.matches
    index = {name: i for i, name in enumerate(names)}
    for a, b, both in result.pairs:
        counts[(index[a], index[b])] = counts[(index[b], index[a])] = both
    top = max(counts.values(), default=0) or 1
    size = LABEL + CELL * max(n, 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
             f'viewBox="0 0 {size} {size}" font-family="sans-serif" font-size="11">',
             "<title>Rule overlap: records both rules match</title>"]
    for i, name in enumerate(names):
        label = escape(name if len(name) <= MAX_LABEL else name[:MAX_LABEL - 1] + "…")
        y = LABEL + CELL * i + CELL / 2 + 4
        parts.append(f'<text x="{LABEL - 6}" y="{y:.1f}" text-anchor="end">{label}</text>')
        x = LABEL + CELL * i + CELL / 2 + 4
        parts.append(f'<text x="{x:.1f}" y="{LABEL - 6}" text-anchor="start" '
                     f'transform="rotate(-60 {x:.1f} {LABEL - 6})">{label}</text>')
    for i, j in ((i, j) for i in range(n) for j in range(n)):
        value = counts.get((i, j), 0)
        shade = value / top
        fill = f"rgb({int(255 - 200 * shade)},{int(255 - 120 * shade)},255)"
        x, y = LABEL + CELL * j, LABEL + CELL * i
        tip = escape(f"{names[i]} ∩ {names[j]}: {value}" if i != j
                     else f"{names[i]}: {value} matches")
        parts.append(f'<rect x="{x}" y="{y}" width="{CELL - 1}" height="{CELL - 1}" '
                     f'fill="{fill}"><title>{tip}</title></rect>')
        if value:
            parts.append(f'<text x="{x + CELL / 2:.1f}" y="{y + CELL / 2 + 4:.1f}" '
                         f'text-anchor="middle">{value}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
