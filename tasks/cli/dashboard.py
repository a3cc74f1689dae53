"""The `dashboard` command: the operations dashboard over embedded state, on this machine only
(docs/operations.md#the-dashboard)."""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from tasks.cli.common import (
    ConfigOpt,
    StateOpt,
    fail,
    load_routing_file,
    open_history,
    open_state,
    out,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from connectors.settings import Settings
    from sync.compiler import CompiledRouting
    from sync.history import History
    from sync.state.base import StateStore

DEFAULT_PORT = 8080


def dashboard(
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).", min=0,
                                      max=65535)] = DEFAULT_PORT,
    host: Annotated[str, typer.Option(help="A loopback address: this dashboard has no "
                                      "sign-in.")] = "127.0.0.1",
    state: StateOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Serve the dashboard over embedded state on 127.0.0.1, without sign-in, until Ctrl-C."""
    from connectors.settings import Settings
    from tasks.dashboard.serving import bind, is_loopback

    if not is_loopback(host):
        fail(f"--host {host!r} is not a loopback address: this dashboard has no sign-in, so it "
             "listens on 127.0.0.1, ::1 or localhost only (serve it elsewhere with `serve` and "
             "ACCOUNT_ROUTER_API_TOKEN)")
    settings = Settings()
    routing = load_routing_file(config) if (config is not None or settings.config) else None
    store = open_state(state, if_missing="fail")
    try:
        # Embedded: the state file's own history; over Redis, ACCOUNT_ROUTER_DATABASE_URL.
        history = open_history(state)
        try:
            try:
                sock = bind(host, port)
            except OSError as exc:
                fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
            serve_dashboard(build_app(settings, store, history, routing), sock)
        finally:
            history.close()
    finally:
        store.close()


def build_app(settings: Settings, store: StateStore, history: History,
              routing: CompiledRouting | None) -> FastAPI:
    """The local dashboard app; its retry runs the pipeline's reprocess in this process."""
    from tasks.dashboard import local_app

    def retry(crm: str, obj: str, ids: list[str]) -> None:
        from connectors import registry
        from sync.pipeline import Pipeline
        from tasks.followers import followers_for

        if routing is None:
            raise ValueError("no routing file (--config or ACCOUNT_ROUTER_CONFIG) to route with")
        connector = registry.create_for(crm, routing, settings)
        try:
            Pipeline(connector, routing, store, recheck_after=settings.recheck_after_seconds,
                     followers=followers_for(settings, store, routing, crm),
                     mark_ttl=timedelta(days=settings.history_retention_days),
                     ).route_ids(obj, ids, trigger="reprocess")
        finally:
            connector.close()

    return local_app(settings, store, history, lambda: routing, retry)


def serve_dashboard(app: FastAPI, sock: socket.socket) -> None:
    from tasks.dashboard.serving import run_local

    def announce(url: str) -> None:
        out.print(f"dashboard: {url} (this machine only, no sign-in; Ctrl-C to stop)",
                  highlight=False, soft_wrap=True)

    run_local(app, sock, announce)
