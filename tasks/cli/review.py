"""`account-router review list | approve ID | reassign ID REP | expire`: held decisions."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tasks.cli.common import (
    ConfigOpt,
    NowOpt,
    StateOpt,
    fail,
    load_routing_file,
    open_pipeline,
    open_state,
    out,
    parse_instant,
    print_json,
)

app = typer.Typer(
    name="review",
    help="Decisions held for review (`review: true`, `review_when`): list, approve, reassign.",
    no_args_is_help=True,
    add_completion=False,
)

ItemArg = Annotated[str, typer.Argument(help="Review item id (from `review list`).")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who decides, for the record "
                  "(default: the login name).", show_default=False)]
# A reviewer refused by the item's state is not bad usage: exit 1 (like a failed write), so a
# script can tell "already decided" from a typo'd id (exit 2).
CONFLICT = 1


@app.command("list")
def list_items(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (the GET /review "
                        "shape).")] = False,
    state: StateOpt = None,
) -> None:
    """Open review items, oldest first."""
    from sync.review import listed

    store = open_state(state, if_missing="empty")
    try:
        items = store.reviews()
    finally:
        store.close()
    if json_out:
        print_json({"items": [listed(i) for i in items]})
        return
    table = Table(title=f"{len(items)} awaiting review")
    table.add_column("id", no_wrap=True)  # copied into `approve ID`: never split
    for column in ("record", "proposed owner", "rule", "waiting since", "deadline", "reason"):
        table.add_column(column)
    for i in items:
        table.add_row(i.id, f"{i.crm} {i.object} {i.record_id}", i.proposed_owner,
                      i.rule or "(fallback)", i.created_at.isoformat(timespec="seconds"),
                      i.deadline.isoformat(timespec="seconds")
                      + (" (escalated)" if i.escalated else ""), i.reason)
    out.print(table)


@app.command()
def approve(item: ItemArg, by: ByOpt = None, config: ConfigOpt = None,
            state: StateOpt = None) -> None:
    """Write the proposed owner (unless someone set an owner meanwhile)."""
    _act(item, None, by, config, state)


@app.command()
def reassign(
    item: ItemArg,
    rep: Annotated[str, typer.Argument(help="Rep id from the routing file to write instead.")],
    by: ByOpt = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
) -> None:
    """Write another rep instead of the proposal (counted as an override of it)."""
    _act(item, rep, by, config, state)


@app.command()
def expire(now: NowOpt = None, config: ConfigOpt = None, state: StateOpt = None) -> None:
    """One pass of `review.expire` (beat runs it every minute in service mode): items past
    review_timeout are approved or escalated once, as on_review_timeout says."""
    from connectors.settings import Settings
    from tasks.review import escalation
    from tasks.review import expire as expire_items

    routing = load_routing_file(config)
    instant = parse_instant(now) if now else datetime.now(UTC)
    store = open_state(state, if_missing="empty")
    try:
        settings = Settings()
        report = expire_items(store, routing, settings, instant,
                              escalate=escalation(settings, store, routing))
    finally:
        store.close()
    for action in ("approved", "superseded", "escalated", "failed"):
        ids = getattr(report, action)
        if ids:
            out.print(f"{action}: {', '.join(ids)}")
    if report.failed:
        fail("some items past their deadline could not be approved now; they stay open",
             code=1)
    if not (report.approved or report.superseded or report.escalated):
        out.print("nothing past its deadline")


def _act(item_id: str, rep: str | None, by: str | None, config: Path | None,
         state: str | None) -> None:
    from sync import review

    routing = load_routing_file(config)
    store = open_state(state, if_missing="fail")
    try:
        item = store.review(item_id)
    finally:
        store.close()
    if item is None:
        fail(f"no review item {item_id!r} (see `account-router review list`)")
    reviewer = by or _login()
    if len(reviewer) > 64 or any(not c.isprintable() for c in reviewer):
        fail("--by takes a name of at most 64 printable characters")
    now = datetime.now(UTC)
    with open_pipeline(routing, item.crm, item.object, state, False) as (pipeline, _):
        try:
            if rep is None:
                done = review.approve(pipeline, item_id, by=reviewer, now=now)
            else:
                done = review.reassign(pipeline, item_id, rep, by=reviewer, now=now)
        except review.ReviewError as exc:
            fail(str(exc), code=2 if exc.status in ("unknown", "ineligible") else CONFLICT)
    closed = done.item
    if closed.status == "superseded":
        out.print(f"{closed.id}: not written: the owner of {closed.crm} {closed.object} "
                  f"{closed.record_id} is now {closed.final_owner or 'nobody'} (set "
                  "meanwhile); the item is closed as superseded")
        return
    out.print(f"{closed.id}: {closed.status}; wrote {closed.final_owner} as owner of "
              f"{closed.crm} {closed.object} {closed.record_id}")


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a container): still say who, generically
        return "cli"
