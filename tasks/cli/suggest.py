"""`account-router suggest`: rules the outcomes argue for, with their evidence; nothing applied."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from config.routing import ConfigError
from connectors.settings import Settings
from sync.suggest import ALPHA, MIN_SAMPLE, Report
from tasks.cli.common import (
    ConfigOpt,
    CrmOpt,
    NowOpt,
    StateOpt,
    fail,
    load_routing_file,
    open_history,
    open_pipeline,
    out,
    parse_instant,
    print_json,
)


def suggest(
    crm: CrmOpt,
    object: Annotated[str, typer.Option("--object", help="CRM object, e.g. companies, Lead.")],
    since: Annotated[str | None, typer.Option("--since", help="Only decisions made at or after "
                     "this instant, ISO 8601 (default: the whole history).",
                     show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
    config: ConfigOpt = None,
    state: StateOpt = None,
    now: NowOpt = None,
    min_sample: Annotated[int, typer.Option("--min-sample", min=1, help="Records per cell "
                          "(candidate and current owner) before a segment is tested.")
                          ] = MIN_SAMPLE,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="False-discovery "
                     "rate (Benjamini–Hochberg q) a suggestion must meet.")] = ALPHA,
) -> None:
    """Suggest rules where a segment converts significantly better with another rep or pool.

    Joins the decision history with outcomes read from the CRM (HubSpot lifecycle stage
    customer or a closed-won deal; Salesforce won Opportunities, converted Leads). Prints
    the evidence, a rule to paste and how many records it would move. Nothing is changed."""
    from sqlalchemy.exc import SQLAlchemyError

    from sync.history.store import describe_error
    from tasks.suggest import Inputs, NoOutcomes
    from tasks.suggest import suggest as run

    instant = parse_instant(now)
    start = parse_instant(since, "--since") if since is not None else None
    routing = load_routing_file(config)
    path = config if config is not None else Path(Settings().config or "")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:  # read once already: a race
        fail(f"{path}: cannot read the routing file again: {exc}")
    inputs = Inputs(routing, document, path, tuple(Settings().list_roots))
    history = open_history(state)
    try:
        with open_pipeline(routing, crm, object, state, dry_run=True) as (pipeline, obj):
            try:
                report = run(pipeline.connector, history, inputs, obj,
                             since=start, now=instant, min_sample=min_sample, alpha=alpha)
            except NoOutcomes as exc:
                fail(str(exc))
            except ConfigError as exc:  # a suggested rule the loader refuses: say which
                fail(f"a suggested rule does not load: {exc}", code=1)
            except SQLAlchemyError as exc:
                fail(f"cannot read the history database {history.shown_url!r}: "
                     f"{describe_error(exc)}")
    finally:
        history.close()
    if as_json:
        print_json(to_json(report))
    else:
        _print(report, crm, obj)


def to_json(report: Report) -> dict[str, Any]:
    """The JSON of `suggest --json` (DESIGN §9) and the test settings behind it."""
    return report.to_dict()


def _print(report: Report, crm: str, obj: str) -> None:
    out.print(f"{report.observations} routed {crm} {obj} records with outcomes; "
              f"{report.tested} segment tests (minimum {report.min_sample} records a cell, "
              f"Benjamini–Hochberg q ≤ {report.alpha}); {len(report.suggestions)} "
              "suggestion(s). Nothing was changed.", highlight=False, soft_wrap=True)
    if not report.suggestions:
        out.print("no segment converts significantly better with another rep or pool")
        return
    table = Table(title="suggestions (best evidence first)")
    for column in ("segment", "now", "suggested", "n", "rate now", "rate suggested", "p", "q",
                   "moves"):
        table.add_column(column, justify="left" if column in ("segment", "now", "suggested")
                         else "right")
    for s in report.suggestions:
        (dim, value), = s.segment.items()
        table.add_row(f"{dim} = {value}", s.from_, s.to, str(s.n),
                      f"{s.rate_now:.1%} of {s.n_now}", f"{s.rate_to:.1%} of {s.n_to}",
                      f"{s.p:.2g}", f"{s.q:.2g}", "-" if s.moves is None else str(s.moves))
    out.print(table)
    for s in report.suggestions:
        out.print(f"\n# rule to paste under `rules:` (the segment's records to {s.to})",
                  highlight=False)
        out.print(s.rule_yaml.rstrip(), highlight=False, markup=False)
