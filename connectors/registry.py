"""The explicit connector registry: built-ins by name, third parties by entry point."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from importlib.metadata import entry_points

from config.settings import Settings
from sync.ports import Connector

ENTRY_POINT_GROUP = "account_router.connectors"

# name -> "module:factory"; a factory takes (settings, limiter=None) and returns a Connector.
BUILTIN: dict[str, str] = {
    "hubspot": "connectors.hubspot.connector:from_settings",
    "salesforce": "connectors.salesforce.connector:from_settings",
}

Factory = Callable[..., Connector]


def names() -> list[str]:
    """Every connector that can be created: built-ins, then installed third-party ones."""
    found = list(BUILTIN)
    found += [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in BUILTIN]
    return found


def factory(name: str) -> Factory:
    """The factory registered under `name`; ValueError naming the known ones otherwise."""
    target = BUILTIN.get(name)
    if target is not None:
        module, _, attr = target.partition(":")
        return getattr(import_module(module), attr)  # type: ignore[no-any-return]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()  # type: ignore[no-any-return]
    raise ValueError(f"unknown CRM {name!r} (known: {', '.join(names())})")


def create(name: str, settings: Settings | None = None, **kwargs: object) -> Connector:
    return factory(name)(settings or Settings(), **kwargs)
