"""memcrm's declaration: the registry reads this without creating a connector."""

from __future__ import annotations

from collections.abc import Mapping

from sync.ports import CrmSpec

CRM = "memcrm"

# Its own object names, deliberately unlike any built-in CRM's.
OBJECT_KINDS: Mapping[str, str] = {"Org": "account", "Person": "lead"}

FIELD_MAPS: Mapping[str, Mapping[str, str]] = {
    "Org": {"name": "title", "domain": "web", "country": "nation", "employees": "headcount",
            "owner": "owner_ref"},
    "Person": {"name": "org_title", "email": "mail", "country": "nation", "owner": "owner_ref"},
}

SPEC = CrmSpec(name=CRM, objects=OBJECT_KINDS, field_maps=FIELD_MAPS,
               factory="tests.example_crm.connector:from_settings")
