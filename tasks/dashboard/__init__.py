"""The operations dashboard: server-rendered pages over the decision history and the state store.

`mount` adds it to the `serve` app (sign-in with ACCOUNT_ROUTER_API_TOKEN); `local_app` is the
`account-router dashboard` app (loopback only, no sign-in). docs/operations.md#the-dashboard.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fastapi import FastAPI

from connectors import registry
from connectors.settings import Settings
from sync.compiler import CompiledRouting
from sync.state.base import StateStore
from tasks.dashboard.auth import Signer, derive_key
from tasks.dashboard.data import HistoryReader
from tasks.dashboard.pages import Dashboard, PageError, Retry, ReviewAct, mount

if TYPE_CHECKING:
    from sync.review import Reviewed

__all__ = ["Dashboard", "HistoryReader", "PageError", "Retry", "for_serve", "local_app", "mount"]


def reviewer(settings: Settings, store: StateStore,
             routing: Callable[[], CompiledRouting | None]) -> ReviewAct:
    """The dashboard's approve/reassign: the same action as the API and the CLI, through a
    pipeline built like the workers' (tasks/review.py)."""
    def act(item_id: str, rep: str | None, by: str) -> Reviewed:
        from sync.review import ReviewError
        from tasks.review import act

        compiled = routing()
        if compiled is None:
            raise ReviewError("unavailable", "no usable routing file (ACCOUNT_ROUTER_CONFIG) "
                              "to review with")
        return act(store, compiled, settings, item_id, rep=rep, by=by,
                   now=datetime.now(UTC))

    return act


def for_serve(settings: Settings, store: StateStore, history: Callable[[], HistoryReader],
              routing: Callable[[], CompiledRouting | None], retry: Retry,
              clock: Callable[[], float] = time.time) -> Dashboard:
    """The dashboard of `serve`: sign-in with the API token; off without one."""
    token = settings.api_token.get_secret_value() if settings.api_token is not None else None
    return Dashboard(
        store=store, history=history, routing=routing, retry=retry,
        review=reviewer(settings, store, routing),
        objects=registry.known_crms(), clock=clock,
        signer=Signer(derive_key(token)) if token else None, token=token or None,
        hubspot_portal_id=settings.hubspot_portal_id,
        salesforce_instance_url=settings.salesforce_instance_url)


def local_app(settings: Settings, store: StateStore, history: HistoryReader,
              routing: Callable[[], CompiledRouting | None], retry: Retry,
              clock: Callable[[], float] = time.time) -> FastAPI:
    """`account-router dashboard`: the same pages, no sign-in, answering loopback names only.
    Its sessions (for the CSRF token: another site's page can still post to 127.0.0.1) are
    signed by a key that lives as long as the process."""
    app = FastAPI(title="account-router dashboard", redirect_slashes=False, docs_url=None,
                  redoc_url=None, openapi_url=None)
    mount(app, Dashboard(
        store=store, history=lambda: history, routing=routing, retry=retry,
        review=reviewer(settings, store, routing),
        objects=registry.known_crms(), clock=clock, signer=Signer(secrets.token_bytes(32)),
        local=True, hubspot_portal_id=settings.hubspot_portal_id,
        salesforce_instance_url=settings.salesforce_instance_url))
    return app
