"""An in-memory CRM behind the Connector port, for pipeline tests (no network, time passed in)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from connectors import registry
from sync.ports import (
    CallStats,
    CrmRecord,
    CrmSpec,
    CrmUnavailable,
    CrmUser,
    Page,
    QuotaExhausted,
    WriteResult,
)

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


@dataclass
class FakeCrm:
    """A HubSpot-shaped CRM: `companies` with `hubspot_owner_id`, owners "100".."109"."""

    name: str = "hubspot"
    page_size: int = 10
    records: dict[str, dict[str, dict[str, object]]] = field(default_factory=dict)
    modified: dict[tuple[str, str], datetime] = field(default_factory=dict)
    owners: list[CrmUser] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    writes: list[tuple[str, str]] = field(default_factory=list)  # (record id, owner) written
    reject: dict[str, str] = field(default_factory=dict)  # record id -> per-record error
    quota_after: int | None = None  # calls allowed before the daily quota is spent
    unavailable_writes: int = 0  # next N write calls fail as if retries were exhausted
    write_batch_size: int = 0  # owners per write call a sweep packs; 0: each page writes its own
    tick: timedelta = timedelta(seconds=1)
    totals: bool = False  # pages carry the query's count, as Salesforce's `totalSize` does
    clock: datetime = T0

    @property
    def spec(self) -> CrmSpec:
        """The declaration of the CRM this fake stands in for (its objects and field maps)."""
        return registry.spec(self.name)

    def _call(self, endpoint: str) -> None:
        if self.quota_after is not None and sum(self.calls.values()) >= self.quota_after:
            raise QuotaExhausted(self.name, "DAILY")
        self.calls[endpoint] += 1

    def add(self, obj: str, record_id: str, **props: object) -> None:
        self.clock += self.tick
        self.records.setdefault(obj, {})[record_id] = dict(props)
        self.modified[(obj, record_id)] = self.clock

    def set_owner(self, obj: str, record_id: str, owner: str | None) -> None:
        self.clock += self.tick
        self.records[obj][record_id]["hubspot_owner_id"] = owner
        self.modified[(obj, record_id)] = self.clock

    def _record(self, obj: str, record_id: str) -> CrmRecord:
        return CrmRecord(record_id, obj, dict(self.records[obj][record_id]),
                         created_at=T0, modified_at=self.modified[(obj, record_id)])

    def list_records(self, object: str, *, since: datetime | None, cursor: str | None
                     ) -> Page:
        obj = self.spec.canonical_object(object)
        self._call("list")
        # Keyset paging under an upper bound fixed at the first page, as the real connectors
        # do: records modified while the sweep runs (our own writes) can't shift the pages.
        if cursor:
            bound_text, last_text, last_id = json.loads(cursor)
            bound = datetime.fromisoformat(bound_text)
            after: tuple[datetime, str] | None = (datetime.fromisoformat(last_text), last_id)
        else:
            bound, after = self.clock, None
        keys = sorted((self.modified[(obj, i)], i) for i in self.records.get(obj, {}))
        keys = [k for k in keys if k[0] <= bound and (since is None or k[0] >= since)]
        total = len(keys) if self.totals else None
        keys = [k for k in keys if after is None or k > after]
        chunk = keys[:self.page_size]
        nxt = None
        if len(keys) > self.page_size:
            nxt = json.dumps([bound.isoformat(), chunk[-1][0].isoformat(), chunk[-1][1]])
        return Page([self._record(obj, i) for _, i in chunk], nxt, total)

    def read_records(self, object: str, ids: Sequence[str]) -> list[CrmRecord]:
        obj = self.spec.canonical_object(object)
        self._call("read")
        return [self._record(obj, i) for i in ids if i in self.records.get(obj, {})]

    def read_owners(self, object: str, ids: Sequence[str]) -> dict[str, str | None]:
        obj = self.spec.canonical_object(object)
        self._call("read_owners")
        table = self.records.get(obj, {})
        return {i: table[i].get("hubspot_owner_id") for i in ids if i in table}  # type: ignore

    def write_owners(self, object: str, owners: Mapping[str, str]) -> list[WriteResult]:
        obj = self.spec.canonical_object(object)
        self._call("write")
        if self.unavailable_writes:
            self.unavailable_writes -= 1
            raise CrmUnavailable(self.name, "write: gave up after 6 attempts: 503")
        results = []
        for record_id, owner in owners.items():
            if record_id in self.reject:
                results.append(WriteResult(record_id, False, self.reject[record_id]))
                continue
            self.set_owner(obj, record_id, owner)
            self.writes.append((record_id, owner))
            results.append(WriteResult(record_id, True))
        return results

    def users(self) -> list[CrmUser]:
        self._call("users")
        return list(self.owners)

    def accounts_by_domain(self, domains: Sequence[str]) -> dict[str, str]:
        self._call("accounts")
        out = {}
        for props in self.records.get("companies", {}).values():
            if props.get("domain") in domains and props.get("hubspot_owner_id"):
                out[str(props["domain"])] = str(props["hubspot_owner_id"])
        return out

    def stats(self) -> CallStats:
        return CallStats(calls={(k, "200"): v for k, v in self.calls.items()})

    def close(self) -> None:
        return None


def hubspot_owners() -> list[CrmUser]:
    """Owners matching tests' routing files: 100..108 active people, 109 archived, 900 a queue."""
    people = [CrmUser(str(i), active=True) for i in range(100, 109)]
    return [*people, CrmUser("109", active=False), CrmUser("900", active=True, person=False)]
