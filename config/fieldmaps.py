"""Field maps: normalized record field -> a CRM's field, and their overrides.

See docs/routing-file.md#field-maps.

The defaults are not here: each connector declares its own (its `CrmSpec`), so a new CRM adds
its maps without an edit to the core. This module only knows how a routing file's `field_maps:`
overrides apply to whichever defaults a CRM declared.
"""

from __future__ import annotations

from collections.abc import Mapping

FieldMap = Mapping[str, str]  # normalized record field -> the CRM's field
FieldMaps = Mapping[str, Mapping[str, FieldMap]]  # CRM name -> the CRM's object -> map

# The normalized record fields a field map may name (docs/routing-file.md).
MAPPABLE = frozenset({
    "name", "domain", "email", "industry", "employees", "annual_revenue", "country", "state",
    "city", "postal_code", "lead_source", "website", "owner", "phone",
})


def merged_field_map(crm: str, obj: str, defaults: FieldMap,
                     overrides: FieldMaps | None = None) -> dict[str, str]:
    """`defaults` for one CRM object with the routing file's `field_maps` for it applied
    (object names compare case-insensitively, as on the command line)."""
    base = dict(defaults)
    if overrides:
        for name, mapping in overrides.get(crm, {}).items():
            if name.lower() == obj.lower():
                base.update(mapping)
    return base
