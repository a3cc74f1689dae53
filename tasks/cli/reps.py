"""Runtime rep availability: pause and resume (paused reps get nothing).

See docs/routing-file.md#routing-semantics.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from tasks.cli.common import (
    ConfigOpt,
    StateOpt,
    err,
    fail,
    load_routing_file,
    open_state,
    out,
    parse_instant,
)


def pause(
    rep: Annotated[str, typer.Argument(help="Rep id from the routing file.")],
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601; default: until "
                     "resumed.", show_default=False)] = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
) -> None:
    """Stop routing to a rep (until `resume`, or until a time)."""
    _check_rep(rep, config)
    until_at = parse_instant(until, "--until") if until is not None else None
    if until_at is not None and until_at <= datetime.now(UTC):
        err.print(f"warning: --until {until_at.isoformat()} is in the past: the pause has no "
                  "effect (it holds only for replays with an earlier --now)", soft_wrap=True)
    store = open_state(state)
    try:
        store.pause(rep, until_at)
    finally:
        store.close()
    out.print(f"paused {rep}" + (f" until {until_at.isoformat()}" if until_at else ""))


def resume(
    rep: Annotated[str, typer.Argument(help="Rep id from the routing file.")],
    config: ConfigOpt = None,
    state: StateOpt = None,
) -> None:
    """Route to a paused rep again."""
    routing = load_routing_file(config)
    # No state file means nobody is paused: nothing to create.
    store = open_state(state, if_missing="empty")
    try:
        # A rep removed from the routing file since its pause may still be resumed (as over
        # HTTP): its pause would otherwise outlive it. Any other unknown id is a typo.
        if rep not in routing.reps and rep not in store.pauses(datetime.now(UTC)):
            fail(f"unknown rep {rep!r} (reps: {', '.join(routing.reps)})")
        was = store.resume(rep)
    finally:
        store.close()
    out.print(f"resumed {rep}" if was else f"{rep} was not paused")


def _check_rep(rep: str, config: Path | None) -> None:
    # The routing file is required: without it a typo'd rep id would be paused (or "resumed")
    # silently, and nobody would notice that the real rep still gets records.
    routing = load_routing_file(config)
    if rep not in routing.reps:
        fail(f"unknown rep {rep!r} (reps: {', '.join(routing.reps)})")
