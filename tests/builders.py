"""Tiny builders shared by the tests: a compiled routing file from YAML text, a record."""

from __future__ import annotations

import textwrap

from config.routing import parse
from sync.compiler import CompiledRouting, compile_routing
from sync.models import Record
from sync.normalize import build_record


def routing(yaml_text: str) -> CompiledRouting:
    return compile_routing(parse(textwrap.dedent(yaml_text)))


def rec(**fields: object) -> Record:
    fields.setdefault("id", "r1")
    obj = str(fields.pop("object", "account"))
    crm = str(fields.pop("crm", "file"))
    created_at = fields.pop("created_at", None)
    return build_record(fields, object=obj, crm=crm, created_at=created_at)  # type: ignore[arg-type]
