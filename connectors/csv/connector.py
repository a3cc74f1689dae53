"""The CSV file behind the Connector port: a file stands in for a CRM (sweep/reprocess/explain)."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from connectors.csv.file import CsvReader, InputError
from connectors.csv.settings import SPEC
from connectors.settings import Settings
from sync.normalize import build_record
from sync.ports import CallStats, CrmRecord, CrmUser, Page, WriteResult

CRM = SPEC.name
PAGE_SIZE = 1000


class CsvConnector:
    """Rows of one CSV export; owners written back into a copy of it.

    A file has no user directory and no modification times: `directory` is False, so owners are
    judged as `route-file` judges them (docs/routing-file.md#edge-cases-owners), and every sweep
    reads every row. Malformed rows are not records here; `route-file` is the command that reports
    them.
    """

    name = CRM
    spec = SPEC
    directory = False

    def __init__(self, input_path: str | Path, output_path: str | Path) -> None:
        self.input_path = Path(input_path)
        self.output_path = Path(output_path)
        reader = CsvReader(self.input_path)  # InputError: unreadable, empty, no `id` column
        self._columns = list(reader.columns)
        if "owner" not in self._columns:
            self._columns.append("owner")
        self._rows: dict[str, dict[str, str]] = {}
        for row in reader:
            if row.error is None:
                self._rows.setdefault(row.id, dict(row.values))
        self._calls: Counter[tuple[str, str]] = Counter()

    def _of(self, obj: str) -> list[str]:
        return [i for i, row in self._rows.items()
                if (row.get("object") or "account").strip().lower() == obj]

    def _record(self, obj: str, record_id: str) -> CrmRecord:
        row = self._rows[record_id]
        return CrmRecord(record_id, obj, {k: v for k, v in row.items() if v != ""})

    def list_records(self, object: str, *, since: Any, cursor: str | None) -> Page:
        obj = SPEC.canonical_object(object)
        self._calls[("list", "ok")] += 1
        ids = self._of(obj)
        start = int(cursor or 0)
        end = start + PAGE_SIZE
        return Page([self._record(obj, i) for i in ids[start:end]],
                    str(end) if end < len(ids) else None)

    def read_records(self, object: str, ids: Sequence[str]) -> list[CrmRecord]:
        obj = SPEC.canonical_object(object)
        self._calls[("read", "ok")] += 1
        mine = set(self._of(obj))
        return [self._record(obj, i) for i in ids if i in mine]

    def read_owners(self, object: str, ids: Sequence[str]) -> dict[str, str | None]:
        return {r.id: str(r.properties.get("owner")) if r.properties.get("owner") else None
                for r in self.read_records(object, ids)}

    def write_owners(self, object: str, owners: Mapping[str, str]) -> list[WriteResult]:
        obj = SPEC.canonical_object(object)
        self._calls[("write", "ok")] += 1
        mine = set(self._of(obj))
        results = []
        for record_id, owner in owners.items():
            if record_id in mine:
                self._rows[record_id]["owner"] = owner
                results.append(WriteResult(record_id, True))
            else:
                results.append(WriteResult(record_id, False, "no such row in the file"))
        self._save()
        return results

    def _save(self) -> None:
        # Rewrite the whole copy (a temp file renamed over it): never half a file on disk.
        tmp = self.output_path.with_name(self.output_path.name + ".partial")
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self._columns, lineterminator="\n",
                                    extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self._rows.values())
        tmp.replace(self.output_path)

    def users(self) -> list[CrmUser]:
        return []

    def accounts_by_domain(self, domains: Sequence[str]) -> dict[str, str]:
        wanted = set(domains)
        found: dict[str, str] = {}
        for record_id in self._of("account"):
            row = self._rows[record_id]
            try:
                record = build_record(row)
            except ValueError:
                continue
            if record.owner and record.domain in wanted:
                found.setdefault(record.domain, record.owner)
        return found

    def accounts_by_name(self, names: Sequence[str]) -> list[tuple[str, str]]:
        """(company name, domain) of the file's accounts that `company_match` may match
        leads named `names` to: all of them (the file is at hand; the matcher narrows)."""
        found: list[tuple[str, str]] = []
        for record_id in self._of("account"):
            try:
                record = build_record(self._rows[record_id])
            except ValueError:
                continue
            name = record.raw.get("name")
            if name and record.domain:
                found.append((name, record.domain))
        return found

    def stats(self) -> CallStats:
        return CallStats(calls=dict(self._calls))

    def close(self) -> None:
        return None


def from_settings(settings: Settings, **_: object) -> CsvConnector:
    """`ACCOUNT_ROUTER_CSV_INPUT` is the file; owners go to `ACCOUNT_ROUTER_CSV_OUTPUT`
    (default: `<input>.routed.csv` beside it). The input is never modified."""
    if not settings.csv_input:
        raise ValueError("the csv connector needs ACCOUNT_ROUTER_CSV_INPUT (the file to route)")
    source = Path(settings.csv_input)
    target = Path(settings.csv_output) if settings.csv_output else \
        source.with_name(source.stem + ".routed.csv")
    try:
        return CsvConnector(source, target)
    except InputError as exc:
        raise ValueError(str(exc)) from None
