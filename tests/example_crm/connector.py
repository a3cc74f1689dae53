"""memcrm: an in-memory CRM behind the Connector port, created by the registry by name."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from config.settings import Settings
from sync.ports import CallStats, CrmRecord, CrmUser, Page, WriteResult
from tests.example_crm.settings import CRM, SPEC


@dataclass
class MemCrmData:
    """The CRM's side: records by object and id, its users, and every owner write it took."""

    records: dict[str, dict[str, dict[str, object]]] = field(default_factory=dict)
    users: list[CrmUser] = field(default_factory=list)
    writes: list[tuple[str, str, str]] = field(default_factory=list)  # (object, id, owner)


# The "server" every connector created in this process talks to; a test seeds and resets it,
# as it would a local CRM simulator.
DATA = MemCrmData()


class MemCrmConnector:
    """Reads and writes `DATA`; one page holds every record (it is a test CRM)."""

    name = CRM
    spec = SPEC

    def __init__(self, data: MemCrmData, extra_fields: Mapping[str, Sequence[str]] | None
                 ) -> None:
        self.data = data
        self.extra_fields = dict(extra_fields or {})  # what create_for asked it to read
        self.calls: Counter[tuple[str, str]] = Counter()

    def _records(self, obj: str, ids: Sequence[str] | None = None) -> list[CrmRecord]:
        table = self.data.records.get(obj, {})
        wanted = list(table) if ids is None else [i for i in ids if i in table]
        return [CrmRecord(i, obj, dict(table[i])) for i in wanted]

    def list_records(self, object: str, *, since: datetime | None, cursor: str | None
                     ) -> Page:
        self.calls[("list", "ok")] += 1
        return Page(self._records(SPEC.canonical_object(object)))

    def read_records(self, object: str, ids: Sequence[str]) -> list[CrmRecord]:
        self.calls[("read", "ok")] += 1
        return self._records(SPEC.canonical_object(object), ids)

    def read_owners(self, object: str, ids: Sequence[str]) -> dict[str, str | None]:
        obj = SPEC.canonical_object(object)
        return {r.id: str(r.properties["owner_ref"]) if r.properties.get("owner_ref") else None
                for r in self._records(obj, ids)}

    def write_owners(self, object: str, owners: Mapping[str, str]) -> list[WriteResult]:
        obj = SPEC.canonical_object(object)
        self.calls[("write", "ok")] += 1
        results = []
        for record_id, owner in owners.items():
            row = self.data.records.get(obj, {}).get(record_id)
            if row is None:
                results.append(WriteResult(record_id, False, "no such record"))
                continue
            row["owner_ref"] = owner
            self.data.writes.append((obj, record_id, owner))
            results.append(WriteResult(record_id, True))
        return results

    def users(self) -> list[CrmUser]:
        return list(self.data.users)

    def accounts_by_domain(self, domains: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for row in self.data.records.get("Org", {}).values():
            if row.get("web") in domains and row.get("owner_ref"):
                found[str(row["web"])] = str(row["owner_ref"])
        return found

    def stats(self) -> CallStats:
        return CallStats(calls=dict(self.calls))

    def close(self) -> None:
        pass


def from_settings(settings: Settings, *, extra_fields: Mapping[str, Sequence[str]] | None = None,
                  **_: Any) -> MemCrmConnector:
    """The registry's factory: what a pip-installed connector's entry point leads to."""
    return MemCrmConnector(DATA, extra_fields)
