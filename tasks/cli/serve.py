"""The `serve` command: the HTTP app (webhooks, ops API, health, metrics) under uvicorn."""

from __future__ import annotations

import gc
import importlib
from typing import TYPE_CHECKING, Annotated

import typer

from tasks.cli.common import fail, open_state, serve_history

if TYPE_CHECKING:
    from tasks.http import Enqueue


def _enqueue() -> Enqueue:
    """The worker queue's enqueue (`tasks.queue.enqueue_route`), imported only when serving so
    the CLI works without a broker; a clear usage error when it is missing."""
    try:
        queue = importlib.import_module("tasks.queue")
    except ModuleNotFoundError as exc:
        if exc.name != "tasks.queue":
            raise
        fail("cannot serve: tasks.queue is not available (no worker queue to hand webhooks to)")
    enqueue = getattr(queue, "enqueue_route", None)
    if not callable(enqueue):
        fail("cannot serve: tasks.queue has no enqueue_route")
    return enqueue


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8000,
    state: Annotated[str | None, typer.Option("--state", help="State URL.",
                     show_default=False)] = None,
) -> None:
    """Serve the HTTP app: CRM webhooks, the ops API, /healthz and /metrics."""
    # Imported here: every other command starts without loading the web stack.
    from connectors.settings import Settings
    from tasks.http import create_app
    from tasks.http.server import run as run_server
    from tasks.logging import configure_logging

    enqueue = _enqueue()
    settings = Settings()
    store = open_state(state)
    try:
        # Refuses an out-of-date schema (exit 2 naming `account-router db upgrade`).
        history = serve_history(state)
    except BaseException:
        store.close()
        raise
    try:
        # Before the app is built: what it logs while assembling (the Salesforce endpoint off)
        # is a JSON line through the redaction like everything after.
        configure_logging()
        app = create_app(settings, store, enqueue, history=history)
        app.state.ctx.routing()  # read (and compiled) now, before the freeze below
        # Everything loaded so far (the web stack, SQLAlchemy, the compiled rules) lives as long
        # as the process: kept out of the garbage collector's full passes, which otherwise walk
        # it all and stopped every request for over 100 ms every few thousand requests.
        gc.collect()
        gc.freeze()
        run_server(app, host=host, port=port)
    finally:
        if history is not None:
            history.close()
        store.close()
