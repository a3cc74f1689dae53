"""The connector port: what the pipeline needs from a CRM, declared by the core.

See docs/connectors.md#the-connector-protocol.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from config.fieldmaps import MAPPABLE, FieldMaps, merged_field_map

# the record field `object` (docs/operations.md#command-line)
from sync.models import OBJECTS as RECORD_KINDS
from sync.models import Decision, Record


@dataclass(frozen=True, slots=True)
class CrmSpec:
    """What a connector declares about its CRM, as data: its registry name, its objects with
    the record kind of each, and each object's default field map. The core routes any CRM
    through these, so a new CRM is a new declaration, never an edit here (issue 8, point 15).
    Declaring one needs no credentials and creates no connector."""

    name: str  # the registry name, the `crm_ids` key and the `field_maps` key
    objects: Mapping[str, str]  # the CRM's own object name -> `account`, `lead` or `contact`
    field_maps: Mapping[str, Mapping[str, str]]  # object -> normalized field -> CRM field
    # Where the registry finds the factory, `module:attr`, taking (settings, **options) and
    # returning a Connector; empty for a mode with no connector behind it (file routing).
    factory: str = ""
    # The CRM answers a read naming a field it lacks by leaving it out (no error), so every
    # raw `fields.<x>` a rule names can be requested on every object.
    unknown_fields_ignored: bool = False
    # The field whose change means a rep touched the record, per object: the first-touch SLA
    # watches it (docs/routing-file.md#touch-fields). An object without one has no SLA unless
    # the routing file's `touch_fields` names one.
    touch_fields: Mapping[str, str] = field(default_factory=dict)
    # The record field naming who changed the record last (a user id), read with every record:
    # an override's `by` when a sweep sees a person's owner change (docs/operations.md#overrides).
    # Empty: the CRM's records do not say.
    modified_by: str = ""

    def __post_init__(self) -> None:
        for obj, kind in self.objects.items():
            if kind not in RECORD_KINDS:
                raise ValueError(f"{self.name}: object {obj!r} has kind {kind!r} "
                                 f"(expected one of: {', '.join(RECORD_KINDS)})")
        for obj, mapping in self.field_maps.items():
            if obj not in self.objects:
                raise ValueError(f"{self.name}: field map for unknown object {obj!r}")
            for normalized in mapping:
                if normalized not in MAPPABLE:
                    raise ValueError(f"{self.name}: field map {obj}.{normalized}: "
                                     "not a normalized record field")

    def canonical_object(self, name: str) -> str:
        """The CRM's own spelling of an object name given in any case; ValueError if unknown."""
        for known in self.objects:
            if known.lower() == name.strip().lower():
                return known
        choices = ", ".join(self.objects) or "none"
        raise ValueError(f"unknown {self.name} object {name!r} (expected one of: {choices})")

    def kind(self, obj: str) -> str:
        """The record kind (`account`, `lead`, `contact`) of one of this CRM's objects."""
        return self.objects[self.canonical_object(obj)]

    def touch_field(self, obj: str,
                    overrides: Mapping[str, Mapping[str, str]] | None = None) -> str | None:
        """The object's touch field: the routing file's `touch_fields` entry for this CRM and
        object (object named in any case) when it has one, else the declared default."""
        obj = self.canonical_object(obj)
        for named, value in ((overrides or {}).get(self.name) or {}).items():
            if named.strip().lower() == obj.lower():
                return value
        return self.touch_fields.get(obj)

    def field_map(self, obj: str, overrides: FieldMaps | None = None) -> dict[str, str]:
        """The object's default field map with a routing file's `field_maps` applied."""
        obj = self.canonical_object(obj)
        return merged_field_map(self.name, obj, self.field_maps.get(obj, {}), overrides)


@dataclass(frozen=True, slots=True)
class CrmRecord:
    """A record as the CRM returned it: raw CRM properties, not yet normalized."""

    id: str
    object: str  # the CRM's object name, e.g. `companies`, `Lead`
    properties: Mapping[str, builtins.object]  # builtins.: `object` is the field above here
    created_at: datetime | None = None
    modified_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; `cursor` continues it (None: the listing is done)."""

    records: list[CrmRecord]
    cursor: str | None = None
    # How many records the query behind this page matched in all, when the CRM says so
    # (HubSpot search `total`, Salesforce SOQL `totalSize`); None when it does not.
    total: int | None = None


@dataclass(frozen=True, slots=True)
class CrmUser:
    """An owner the CRM knows: active and a person (not a queue) are what validity needs."""

    id: str
    active: bool
    person: bool = True
    email: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of one record's owner write; `retryable` failures may succeed later."""

    id: str
    ok: bool
    error: str | None = None
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class Written:
    """An owner write that landed: its decision (`written_at` set) and the record it routed."""

    decision: Decision
    record: Record


@runtime_checkable
class AfterWrite(Protocol):
    """What follows a landed owner write (notify the rep, watch first touch, remember our own
    write so a person's change shows as an override). The pipeline calls each follower once per
    batch of writes, after their audit rows are committed; a follower that raises is logged and
    never fails routing (docs/operations.md#the-pipeline)."""

    def written(self, crm: str, obj: str, items: Sequence[Written]) -> None: ...


@dataclass(frozen=True, slots=True)
class CallStats:
    """Calls made by a connector, by endpoint and outcome, and how often it retried."""

    calls: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (endpoint, status)
    retries: int = 0

    @property
    def total(self) -> int:
        return sum(self.calls.values())


class CrmError(Exception):
    """Base of what a connector raises after its one retry layer has given up."""

    def __init__(self, crm: str, message: str) -> None:
        self.crm = crm
        super().__init__(f"{crm}: {message}")


class CredentialsError(CrmError):
    """401/403 on authentication: wrong or expired credentials. Retrying cannot help."""

    def __init__(self, crm: str, setting: str, detail: str) -> None:
        self.setting = setting
        super().__init__(crm, f"credentials rejected ({detail}); check {setting}")


class QuotaExhausted(CrmError):
    """A daily quota is spent (Salesforce REQUEST_LIMIT_EXCEEDED, HubSpot policy DAILY):
    checkpoint and stop; sleeping for a day inside a task is never right."""

    def __init__(self, crm: str, detail: str, resume_after: datetime | None = None) -> None:
        self.resume_after = resume_after
        # A write of several batches stopped part way: the results of the records whose
        # writes had already landed, so they are audited as written, not retried as lost.
        self.landed: list[WriteResult] = []
        super().__init__(crm, f"daily API quota exhausted ({detail})")


class CrmUnavailable(CrmError):
    """Retries exhausted on 429/5xx/timeouts, or a request error that is not per-record."""


@runtime_checkable
class Connector(Protocol):
    """A CRM behind the pipeline. Implementations retry in exactly one layer (their transport)."""

    name: str  # the registry name, as its CrmSpec declares it
    spec: CrmSpec  # what the CRM's objects are and how their fields map (declared as data)

    def list_records(self, object: str, *, since: datetime | None, cursor: str | None
                     ) -> Page:
        """Records modified at or after `since` (all records when None), oldest first, one
        page per call; pass the returned cursor back for the next page."""

    def read_records(self, object: str, ids: Sequence[str]) -> list[CrmRecord]:
        """Records by id, batched; ids that no longer exist are absent from the result."""

    def read_owners(self, object: str, ids: Sequence[str]) -> dict[str, str | None]:
        """Current owner id of each record (None: no owner); absent ids no longer exist."""

    def write_owners(self, object: str, owners: Mapping[str, str]) -> list[WriteResult]:
        """Set owners in batches; one result per id; a partial failure never fails the rest."""

    def users(self) -> list[CrmUser]:
        """Every owner id the CRM knows, with active status and type."""

    def accounts_by_domain(self, domains: Sequence[str]) -> dict[str, str]:
        """Owner id of the account whose domain is each of `domains` (for lead matching)."""

    def stats(self) -> CallStats:
        """Calls made so far."""

    def close(self) -> None: ...


@runtime_checkable
class AccountNames(Protocol):
    """Optional beside `Connector`: accounts found by company name, for the `company_match`
    enrichment step (docs/routing-file.md#enrichment). A connector without it leaves leads
    unmatched by name."""

    def accounts_by_name(self, names: Sequence[str]) -> list[tuple[str, str]]:
        """(company name, domain) of the accounts whose name has a word starting with the
        first three letters of a word of one of `names` (more is allowed: the matcher
        narrows), batched. A word start shared by more accounts than the matcher considers
        (sync.enrich.MAX_TOKEN_ACCOUNTS) may be left out if the accounts whose name has all
        of a name's words are returned (HubSpot does so: its search budget is small)."""


@runtime_checkable
class Conversions(Protocol):
    """Optional beside `Connector`: which records converted, the outcome `suggest` tests
    rules against (docs/operations.md#rule-suggestions). A connector without it cannot
    back suggestions."""

    def converted(self, object: str, ids: Sequence[str]) -> set[str]:
        """The ids among `ids` whose record converted (HubSpot: lifecycle stage customer or
        later; Salesforce: a won Opportunity on the Account, a converted Lead), read in
        batches; ids that do not exist are simply not in the answer."""
