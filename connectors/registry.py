"""The explicit connector registry: built-ins by name, third parties by entry point.

Every CRM is known by its declaration, a `CrmSpec` (sync/ports.py): its name, its objects with
their record kinds, its default field maps and where its factory lives. Built-ins declare theirs
in their data-only `settings.py`; a pip-installed connector names its `CrmSpec` in the
`account_router.connectors` entry-point group, e.g. in its pyproject.toml:

    [project.entry-points."account_router.connectors"]
    pipedrive = "account_router_pipedrive.settings:SPEC"

Reading declarations imports no connector and needs no credentials, so the routing-file loader,
the HTTP app and the CLI can ask which CRMs exist without being able to reach any of them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from importlib import import_module
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from config.fieldmaps import FieldMaps
from config.routing import KnownCrms
from connectors.settings import Settings
from sync.compiler import CompiledRouting
from sync.compiler import load_routing as _load_routing
from sync.ports import Connector, CrmSpec

ENTRY_POINT_GROUP = "account_router.connectors"

# name -> "module:attr" of its CrmSpec; built-ins win over an entry point of the same name.
BUILTIN: dict[str, str] = {
    "hubspot": "connectors.hubspot.settings:SPEC",
    "salesforce": "connectors.salesforce.settings:SPEC",
    "csv": "connectors.csv.settings:SPEC",
    "file": "connectors.csv.settings:FILE_SPEC",  # `route-file`: a declaration, no connector
}

Factory = Callable[..., Connector]


def _resolve(target: str) -> object:
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)


def _checked(name: str, found: object, where: str) -> CrmSpec:
    # A third-party package is outside our tests: say which one is wrong, not just that
    # something is.
    if not isinstance(found, CrmSpec):
        raise ValueError(f"CRM {name!r} ({where}) must name a CrmSpec, found "
                         f"{type(found).__name__}")
    if found.name != name:
        raise ValueError(f"CRM {name!r} ({where}) declares the name {found.name!r}")
    return found


def _plugins() -> list[EntryPoint]:
    return [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in BUILTIN]


def spec(name: str) -> CrmSpec:
    """The declaration of CRM `name`; ValueError naming the known ones otherwise."""
    target = BUILTIN.get(name)
    if target is not None:
        return _checked(name, _resolve(target), target)
    for ep in _plugins():
        if ep.name == name:
            return _checked(name, ep.load(), f"entry point {ep.value}")
    raise ValueError(f"unknown CRM {name!r} (known: {', '.join(names())})")


def specs() -> dict[str, CrmSpec]:
    """Every declared CRM by name: built-ins, then installed third-party ones."""
    found = {name: spec(name) for name in BUILTIN}
    for ep in _plugins():
        found.setdefault(ep.name, _checked(ep.name, ep.load(), f"entry point {ep.value}"))
    return found


def names() -> list[str]:
    """Every connector that can be created: built-ins, then installed third-party ones."""
    return [name for name, declared in specs().items() if declared.factory]


def known_crms() -> KnownCrms:
    """What a routing file may name under `crm_ids` and `field_maps`: CRM -> its objects."""
    return {name: tuple(declared.objects) for name, declared in specs().items()}


def canonical_object(crm: str, name: str) -> str:
    """The CRM's own spelling of an object name given in any case; ValueError for an
    unknown CRM or object."""
    return spec(crm).canonical_object(name)


def load_routing(path: str | Path, *, list_roots: Sequence[str | Path] = ()) -> CompiledRouting:
    """Load, validate and compile a routing file, its CRM names checked against this
    registry; every problem raises ConfigError. `list_roots`: folders besides the routing
    file's own where its list files may live (`Settings().list_roots`)."""
    return _load_routing(path, list_roots=list_roots, crms=known_crms())


def factory(name: str) -> Factory:
    """The factory registered under `name`; ValueError naming the known ones otherwise."""
    declared = spec(name)
    if not declared.factory:
        raise ValueError(f"CRM {name!r} has no connector (known: {', '.join(names())})")
    return _resolve(declared.factory)  # type: ignore[return-value]


def create(name: str, settings: Settings | None = None, **kwargs: object) -> Connector:
    return factory(name)(settings or Settings(), **kwargs)


def routed_fields(name: str, field_maps: FieldMaps | None = None,
                  raw_fields: frozenset[str] = frozenset()) -> dict[str, frozenset[str]]:
    """The CRM fields a routing decision reads, per object of CRM `name`: each object's field
    map (the routing file's `field_maps` applied, owner included) plus `raw_fields`, the
    `fields.<x>` its rules name. A change to any other field cannot change a decision, so a
    webhook filter may drop it."""
    declared = spec(name)
    return {obj: frozenset(declared.field_map(obj, field_maps).values()) | raw_fields
            for obj in declared.objects}


def create_for(name: str, routing: CompiledRouting, settings: Settings | None = None,
               **kwargs: object) -> Connector:
    """A connector that also reads the CRM fields this routing file needs: the field-map
    overrides of each object and, for a CRM that ignores unknown field names on read
    (`CrmSpec.unknown_fields_ignored`), every `fields.<x>` a rule names. Salesforce rejects a
    query naming a field an object lacks, so there a raw field must be mapped per object under
    `field_maps` to be read."""
    create_factory = factory(name)
    if "extra_fields" not in inspect.signature(create_factory).parameters:
        return create_factory(settings or Settings(), **kwargs)
    fields = read_fields(name, routing)
    for obj, touch in touch_fields(name, routing).items():
        # Read with the record, so its value at assignment is known to the SLA watch.
        if touch not in fields[obj]:
            fields[obj].append(touch)
    return create_factory(settings or Settings(), extra_fields=fields, **kwargs)


def touch_fields(name: str, routing: CompiledRouting | None) -> dict[str, str]:
    """Per object of CRM `name`, the field the first-touch SLA watches: the routing file's
    `touch_fields` override, else the connector's declared default; objects with neither are
    absent."""
    declared = spec(name)
    overrides = routing.file.touch_fields if routing is not None else None
    out: dict[str, str] = {}
    for obj in declared.objects:
        touch = declared.touch_field(obj, overrides)
        if touch:
            out[obj] = touch
    return out


def read_fields(name: str, routing: CompiledRouting | None) -> dict[str, list[str]]:
    """Per object of CRM `name`, the CRM fields a connector reads for `routing` (the default
    field maps when None): see `create_for`. The HTTP app's webhook filter uses the same."""
    raw = (routing.raw_fields if routing is not None and spec(name).unknown_fields_ignored
           else frozenset())
    maps = routing.file.field_maps if routing is not None else None
    return {obj: sorted(fields) for obj, fields in routed_fields(name, maps, raw).items()}
