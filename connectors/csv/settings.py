"""CSV declarations: the `csv` connector and the `file` mode of `route-file`, as data."""

from __future__ import annotations

from collections.abc import Mapping

from config.fieldmaps import MAPPABLE
from sync.ports import CrmSpec

CRM = "csv"
FILE = "file"  # `route-file`: records carry crm `file`; reps may give `crm_ids: {file: ...}`

# An optional `object` column names the record kind itself (docs/routing-file.md#edge-case-rules).
OBJECT_KINDS: Mapping[str, str] = {"account": "account", "lead": "lead", "contact": "contact"}

# A CSV export's columns already carry the normalized names (docs/routing-file.md#field-maps).
FIELD_MAPS: Mapping[str, Mapping[str, str]] = {
    obj: {f: f for f in sorted(MAPPABLE)} for obj in OBJECT_KINDS}

SPEC = CrmSpec(name=CRM, objects=OBJECT_KINDS, field_maps=FIELD_MAPS,
               factory="connectors.csv.connector:from_settings")

# `route-file` routes rows without a connector; declared so routing files may name it.
FILE_SPEC = CrmSpec(name=FILE, objects=OBJECT_KINDS, field_maps=FIELD_MAPS)
