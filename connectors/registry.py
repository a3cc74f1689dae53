"""The explicit connector registry: built-ins by name, third parties by entry point."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib import import_module
from importlib.metadata import entry_points

from config.fieldmaps import field_map
from config.settings import Settings
from sync.compiler import CompiledRouting
from sync.ports import OBJECT_KINDS, Connector

ENTRY_POINT_GROUP = "account_router.connectors"

# name -> "module:factory"; a factory takes (settings, limiter=None) and returns a Connector.
BUILTIN: dict[str, str] = {
    "hubspot": "connectors.hubspot.connector:from_settings",
    "salesforce": "connectors.salesforce.connector:from_settings",
    "csv": "connectors.csv.connector:from_settings",
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
        return getattr(import_module(module), attr)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    raise ValueError(f"unknown CRM {name!r} (known: {', '.join(names())})")


def create(name: str, settings: Settings | None = None, **kwargs: object) -> Connector:
    return factory(name)(settings or Settings(), **kwargs)


def create_for(name: str, routing: CompiledRouting, settings: Settings | None = None,
               **kwargs: object) -> Connector:
    """A connector that also reads the CRM fields this routing file needs: the field-map
    overrides of each object and, for HubSpot (which ignores unknown properties), every
    `fields.<x>` a rule names. Salesforce rejects a query naming a field an object lacks, so
    there a raw field must be mapped per object under `field_maps` to be read."""
    create_factory = factory(name)
    if "extra_fields" not in inspect.signature(create_factory).parameters:
        return create_factory(settings or Settings(), **kwargs)
    extra: dict[str, list[str]] = {}
    for obj in OBJECT_KINDS.get(name, {}):
        fields = set(field_map(name, obj, routing.file.field_maps).values())
        if name == "hubspot":
            fields |= routing.raw_fields
        extra[obj] = sorted(fields)
    return create_factory(settings or Settings(), extra_fields=extra, **kwargs)
