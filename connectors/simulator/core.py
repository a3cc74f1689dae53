"""The simulator's in-memory state for both CRMs: records, owners, limits, faults and call stats."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connectors.simulator.data import SALESFORCE_INTEGRATION_USER
from connectors.simulator.data import seed as seed_data
from connectors.simulator.schema import (
    HUBSPOT_EVENT_PREFIX,
    HUBSPOT_MODIFIED,
    HUBSPOT_OBJECTS,
    HUBSPOT_PROPERTIES,
    SF_OBJECTS,
    hubspot_time,
    normalize_sf_id,
    sf_id,
    sf_object,
)

HUBSPOT_TOKEN = "sim-hubspot-token"
SALESFORCE_SESSION = "sim-salesforce-session"
SALESFORCE_ORG_ID = "00D000000000001AAA"
# Open query cursors kept; older ones expire, as Salesforce's do (INVALID_QUERY_LOCATOR).
_MAX_CURSORS = 64


# Lead statuses a rep moves a lead to once it is worked (`Simulator.touch`).
LEAD_WORKED_STATUSES = ("Working - Contacted", "Qualified")


@dataclass(slots=True)
class Faults:
    """Injected trouble. Rates are per call (per record for `lock_error_rate`), from 0 to 1."""

    error_rate: float = 0.0  # HubSpot: 429/500/503; Salesforce: 500/503
    latency_ms: float = 0.0  # added to every call
    lock_error_rate: float = 0.0  # Salesforce writes: UNABLE_TO_LOCK_ROW per record
    timeout_rate: float = 0.0  # the server stalls for `timeout_sleep_s`, then answers
    timeout_sleep_s: float = 5.0


@dataclass(slots=True)
class HubSpotRecord:
    id: int
    properties: dict[str, str | None]
    created_ms: int
    updated_ms: int
    archived: bool = False


@dataclass(slots=True)
class HubSpotOwner:
    id: str
    email: str | None
    first_name: str | None
    last_name: str | None
    user_id: int | None
    type: str  # PERSON | QUEUE
    archived: bool
    created_ms: int
    updated_ms: int
    teams: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class SalesforceCredentials:
    """The one test user the OAuth token endpoint accepts."""

    username: str = "router@example.com.sim"
    password: str = "sim-password"
    security_token: str = "sim-security-token"
    consumer_key: str = "sim-consumer-key"
    consumer_secret: str = "sim-consumer-secret"
    user_id: str = "005000000000100AAA"
    jwt_public_key_pem: bytes | None = None  # when set, JWT bearer assertions must verify (RS256)


class Simulator:
    """HubSpot and Salesforce state behind the two simulator apps. Thread-safe: the apps and the
    Python API take `lock` around every read-modify-write."""

    def __init__(self, seed: int = 0, *, clock: Callable[[], float] = time.time,
                 hubspot_burst: int = 100, hubspot_burst_window_s: float = 10.0,
                 hubspot_daily: int = 250_000, hubspot_search_per_second: int = 5,
                 salesforce_daily: int = 15_000, query_page_size: int = 2000) -> None:
        self.seed_value = seed
        self.rng = random.Random(seed)
        # A separate stream so fault rolls do not shift the seeded data, and vice versa.
        self._fault_rng = random.Random(f"faults:{seed}")
        self.clock = clock
        self.lock = threading.RLock()
        self.hubspot_tokens: set[str] = {HUBSPOT_TOKEN}
        self.salesforce_sessions: set[str] = {SALESFORCE_SESSION}
        self.salesforce_credentials = SalesforceCredentials()
        self.hubspot_portal_id = 24_000_001
        # Who writes through the APIs: HubSpot names the app in an event's `sourceId`
        # (changeSource INTEGRATION), Salesforce the API user in `LastModifiedById`.
        self.hubspot_app_id = 3_100_001
        self.salesforce_api_user = SALESFORCE_INTEGRATION_USER
        # Every owner change, as the HubSpot webhook event it would deliver (a
        # `hubspot_owner_id` propertyChange), oldest first; see `owner_events`.
        self.hubspot_owner_events: list[dict[str, Any]] = []
        self._next_event_id = 1
        self._writer = threading.local()  # who is writing on this thread (`api_writes`)
        self.hubspot_burst = hubspot_burst
        self.hubspot_burst_window_s = hubspot_burst_window_s
        self.hubspot_daily = hubspot_daily
        self.hubspot_search_per_second = hubspot_search_per_second
        self.salesforce_daily = salesforce_daily
        self.query_page_size = query_page_size

        self.hubspot_records: dict[str, dict[int, HubSpotRecord]] = {o: {} for o in HUBSPOT_OBJECTS}
        # Ids in ascending order (they are handed out ascending), so list pages can bisect.
        self.hubspot_order: dict[str, list[int]] = {o: [] for o in HUBSPOT_OBJECTS}
        self.hubspot_properties: dict[str, dict[str, str]] = {
            o: dict(props) for o, props in HUBSPOT_PROPERTIES.items()}
        self.hubspot_owners: dict[str, HubSpotOwner] = {}
        # Deals (id -> properties) and which deals each company or contact is associated with
        # ((object, record id) -> deal ids): the outcomes `suggest` reads (`plant_outcomes`).
        self.hubspot_deals: dict[int, dict[str, str]] = {}
        self.hubspot_deal_links: dict[tuple[str, str], list[int]] = {}
        self.salesforce_records: dict[str, dict[str, dict[str, Any]]] = {o: {} for o in SF_OBJECTS}
        self._next_hubspot_id = {"companies": 1001, "contacts": 1001}
        self._next_sf_number = {o: 1 for o in SF_OBJECTS}
        self.cursors: OrderedDict[str, tuple[list[dict[str, Any]], int]] = OrderedDict()
        self._next_cursor = 1

        self._faults = Faults()
        self._hs_burst: dict[str, deque[float]] = {}
        self._hs_search: dict[str, deque[float]] = {}
        self._daily_used = {"hubspot": 0, "salesforce": 0}
        self._calls: dict[str, Counter[tuple[str, int]]] = {"hubspot": Counter(),
                                                             "salesforce": Counter()}
        self._records_updated = {"hubspot": 0, "salesforce": 0}
        self._sf_writes = {"total": 0, "without_auto_assign_false": 0}

    # --- time -------------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # --- seeding -----------------------------------------------------------------------------

    def seed(self, companies: int = 1000, contacts: int = 0, accounts: int = 1000,
             leads: int = 300, owners: int = 10, *, sf_contacts: int = 0, days: float = 30.0,
             salesforce_default_owner: str | None = None) -> dict[str, int]:
        """Seed owners, users and records (see `connectors.simulator.data`); returns the counts.
        `salesforce_default_owner` owns the otherwise unowned Salesforce records (e.g. an
        integration user); by default they have a null OwnerId."""
        return seed_data(self, companies=companies, contacts=contacts, accounts=accounts,
                         leads=leads, owners=owners, sf_contacts=sf_contacts, days=days,
                         salesforce_default_owner=salesforce_default_owner)

    # --- HubSpot records (Python API: no validation, so tests can plant any state) -----------

    def _hubspot_table(self, obj: str) -> dict[int, HubSpotRecord]:
        if obj not in self.hubspot_records:
            raise KeyError(f"unknown HubSpot object {obj!r} (expected one of {HUBSPOT_OBJECTS})")
        return self.hubspot_records[obj]

    def hubspot_create(self, obj: str, props: Mapping[str, object], *,
                       created_ms: int | None = None, updated_ms: int | None = None) -> str:
        """Create a record; returns its id. Unknown properties are defined as strings."""
        with self.lock:
            table = self._hubspot_table(obj)
            now = self.now_ms()
            created = now if created_ms is None else created_ms
            updated = max(created, now if updated_ms is None else updated_ms)
            record_id = self._next_hubspot_id[obj]
            self._next_hubspot_id[obj] += 1
            record = HubSpotRecord(record_id, {}, created, updated)
            record.properties["hs_object_id"] = str(record_id)
            record.properties["createdate"] = hubspot_time(created)
            self._set_hubspot_props(obj, record, props)
            self._stamp_hubspot(obj, record, updated)
            table[record_id] = record
            self.hubspot_order[obj].append(record_id)
            return str(record_id)

    @contextmanager
    def api_writes(self) -> Iterator[None]:
        """Changes made inside are the API's (the router's writes): HubSpot logs their owner
        changes with changeSource INTEGRATION and the app id as sourceId. The REST handlers
        wrap their updates in it (this thread only), so `hubspot_update` keeps its signature
        for tests that wrap it."""
        previous = getattr(self._writer, "source", None)
        self._writer.source = ("INTEGRATION", str(self.hubspot_app_id))
        try:
            yield
        finally:
            self._writer.source = previous

    def hubspot_update(self, obj: str, record_id: str | int, props: Mapping[str, object], *,
                       change_source: str | None = None, source_id: str | None = None) -> None:
        """Set properties and bump the modification time (KeyError if the record is absent).
        An owner change is logged as its webhook event, with `change_source` and `source_id`
        (default: the API's inside `api_writes`, else a person in the CRM UI, CRM_UI)."""
        if change_source is None:
            change_source, source_id = getattr(self._writer, "source", None) or \
                ("CRM_UI", source_id)
        with self.lock:
            record = self._hubspot_table(obj)[int(record_id)]
            before = record.properties.get("hubspot_owner_id")
            self._set_hubspot_props(obj, record, props)
            self.touch_hubspot(obj, record)
            after = record.properties.get("hubspot_owner_id")
            if "hubspot_owner_id" in props and after != before:
                event: dict[str, Any] = {
                    "eventId": self._next_event_id, "subscriptionId": 1,
                    "portalId": self.hubspot_portal_id, "appId": self.hubspot_app_id,
                    "occurredAt": record.updated_ms, "attemptNumber": 0,
                    "subscriptionType": f"{HUBSPOT_EVENT_PREFIX[obj]}.propertyChange",
                    "objectId": record.id, "propertyName": "hubspot_owner_id",
                    "propertyValue": after or "", "changeSource": change_source}
                if source_id is not None:
                    event["sourceId"] = source_id
                self._next_event_id += 1
                self.hubspot_owner_events.append(event)

    def owner_events(self, after: int = 0) -> list[dict[str, Any]]:
        """The HubSpot owner-change webhook events with an eventId above `after`, oldest
        first: post them (signed) to the router as HubSpot would."""
        with self.lock:
            return [dict(e) for e in self.hubspot_owner_events if e["eventId"] > after]

    def reassign(self, crm: str, obj: str, record_id: str, owner_id: str | None, *,
                 by: str) -> None:
        """A person reassigns a record in the CRM UI: HubSpot logs an owner-change event with
        changeSource CRM_UI and sourceId `userId:{by}`; Salesforce sets LastModifiedById to
        `by` (a user id) and bumps SystemModstamp, which the next sweep reads."""
        if crm == "hubspot":
            self.hubspot_update(obj, record_id, {"hubspot_owner_id": owner_id},
                                change_source="CRM_UI", source_id=f"userId:{by}")
        elif crm == "salesforce":
            self.salesforce_update(obj, record_id, {"OwnerId": owner_id}, by=by)
        else:
            raise ValueError(f"unknown crm {crm!r}")

    def hubspot_archive(self, obj: str, record_id: str | int) -> None:
        """Archive (HubSpot's delete): gone from reads, listed with `archived=true`."""
        with self.lock:
            record = self._hubspot_table(obj)[int(record_id)]
            record.archived = True
            self.touch_hubspot(obj, record)

    def hubspot_record(self, obj: str, record_id: str | int) -> dict[str, str | None] | None:
        """A copy of a record's properties; None when it does not exist or is archived."""
        with self.lock:
            record = self._hubspot_table(obj).get(int(record_id))
            return None if record is None or record.archived else dict(record.properties)

    def _set_hubspot_props(self, obj: str, record: HubSpotRecord,
                           props: Mapping[str, object]) -> None:
        for name, value in props.items():
            self.hubspot_properties[obj].setdefault(name, "string")
            # HubSpot stores every value as a string and an empty string clears the property.
            if isinstance(value, bool):
                value = "true" if value else "false"
            text = None if value is None else str(value)
            record.properties[name] = text if text != "" else None

    def touch_hubspot(self, obj: str, record: HubSpotRecord) -> None:
        """Bump a record's modification time to now (callers hold the lock)."""
        self._stamp_hubspot(obj, record, max(record.created_ms, self.now_ms()))

    @staticmethod
    def _stamp_hubspot(obj: str, record: HubSpotRecord, ms: int) -> None:
        record.updated_ms = ms
        for name in HUBSPOT_MODIFIED[obj]:
            record.properties[name] = hubspot_time(ms)

    # --- HubSpot owners ----------------------------------------------------------------------

    def add_hubspot_owner(self, owner_id: str, email: str | None, first_name: str | None,
                          last_name: str | None, *, type: str = "PERSON",
                          archived: bool = False, user_id: int | None = None,
                          teams: Iterable[Mapping[str, Any]] = ()) -> None:
        with self.lock:
            now = self.now_ms()
            self.hubspot_owners[str(owner_id)] = HubSpotOwner(
                str(owner_id), email, first_name, last_name, user_id, type, archived, now, now,
                [dict(t) for t in teams])

    def set_hubspot_owner_archived(self, owner_id: str, archived: bool = True) -> None:
        with self.lock:
            owner = self.hubspot_owners[str(owner_id)]
            owner.archived = archived
            owner.updated_ms = self.now_ms()

    def hubspot_owner_assignable(self, owner_id: str) -> bool:
        """HubSpot accepts `hubspot_owner_id` values naming an existing, unarchived owner."""
        owner = self.hubspot_owners.get(owner_id.strip())
        return owner is not None and not owner.archived

    # --- Salesforce records ------------------------------------------------------------------

    def _sf_table(self, obj: str) -> tuple[str, dict[str, dict[str, Any]]]:
        meta = sf_object(obj)
        if meta is None:
            raise KeyError(f"unknown Salesforce object {obj!r}")
        return meta.name, self.salesforce_records[meta.name]

    def salesforce_create(self, obj: str, fields: Mapping[str, Any], *,
                          created_ms: int | None = None, updated_ms: int | None = None,
                          record_id: str | None = None) -> str:
        """Create a record (fields by API name, datetimes as epoch ms); returns its 18-char Id."""
        with self.lock:
            name, table = self._sf_table(obj)
            meta = SF_OBJECTS[name]
            now = self.now_ms()
            created = now if created_ms is None else created_ms
            updated = max(created, now if updated_ms is None else updated_ms)
            if record_id is None:
                record_id = sf_id(meta.prefix, self._next_sf_number[name])
                self._next_sf_number[name] += 1
            record: dict[str, Any] = {f.name: None for f in meta.fields.values()}
            record.update(Id=record_id, IsDeleted=False, CreatedDate=created)
            self._set_sf_fields(name, record, fields)
            record["LastModifiedDate"] = record["SystemModstamp"] = updated
            table[record_id] = record
            return record_id

    def salesforce_update(self, obj: str, record_id: str, fields: Mapping[str, Any], *,
                          by: str | None = None) -> None:
        """Set fields and bump SystemModstamp (KeyError if the record is absent); `by` is the
        user making the change (LastModifiedById; None: left as it was)."""
        with self.lock:
            name, table = self._sf_table(obj)
            record = table[self._sf_key(record_id)]
            self._set_sf_fields(name, record, fields)
            if by is not None:
                record["LastModifiedById"] = normalize_sf_id(by) or by
            self.touch_salesforce(record)

    def salesforce_delete(self, obj: str, record_id: str) -> None:
        """Move a record to the recycle bin: gone from `query`, still seen by `queryAll`."""
        with self.lock:
            _, table = self._sf_table(obj)
            record = table[self._sf_key(record_id)]
            record["IsDeleted"] = True
            self.touch_salesforce(record)

    def salesforce_record(self, obj: str, record_id: str) -> dict[str, Any] | None:
        """A copy of a live record's fields (datetimes as epoch ms); None when absent/deleted."""
        with self.lock:
            _, table = self._sf_table(obj)
            record = table.get(self._sf_key(record_id))
            return None if record is None or record["IsDeleted"] else dict(record)

    @staticmethod
    def _sf_key(record_id: str) -> str:
        return normalize_sf_id(record_id) or record_id

    @staticmethod
    def _set_sf_fields(name: str, record: dict[str, Any], fields: Mapping[str, Any]) -> None:
        meta = SF_OBJECTS[name]
        for key, value in fields.items():
            spec = meta.field(key)
            if spec is None:
                raise KeyError(f"no field {key!r} on {name}")
            if spec.type in ("id", "reference") and isinstance(value, str):
                value = normalize_sf_id(value) or value
            record[spec.name] = value

    def touch_salesforce(self, record: dict[str, Any]) -> None:
        """Bump SystemModstamp/LastModifiedDate to now (callers hold the lock)."""
        record["LastModifiedDate"] = record["SystemModstamp"] = max(record["CreatedDate"],
                                                                    self.now_ms())

    def add_salesforce_user(self, user_id: str, first_name: str, last_name: str, email: str, *,
                            active: bool = True, user_type: str = "Standard") -> str:
        return self.salesforce_create("User", {
            "FirstName": first_name, "LastName": last_name, "Name": f"{first_name} {last_name}",
            "Email": email, "Username": f"{email}.sim", "IsActive": active,
            "UserType": user_type}, record_id=normalize_sf_id(user_id) or user_id)

    def set_salesforce_user_active(self, user_id: str, active: bool) -> None:
        self.salesforce_update("User", user_id, {"IsActive": active})

    def add_salesforce_group(self, group_id: str, name: str, *, type: str = "Queue") -> str:
        return self.salesforce_create("Group", {
            "Name": name, "DeveloperName": name.replace(" ", "_"), "Type": type},
            record_id=normalize_sf_id(group_id) or group_id)

    def salesforce_owner_error(self, obj: str, owner_id: object) -> tuple[str, str] | None:
        """(statusCode, message) when Salesforce would refuse `owner_id` as the OwnerId of an
        `obj` record; None when it is an active user, or a queue and the object is a Lead."""
        if owner_id is None or owner_id == "":
            return "REQUIRED_FIELD_MISSING", "Required fields are missing: [OwnerId]"
        key = normalize_sf_id(owner_id) if isinstance(owner_id, str) else None
        user = self.salesforce_records["User"].get(key or "")
        if user is not None:
            if user["IsActive"]:
                return None
            return ("INACTIVE_OWNER_OR_USER",
                    f"operation performed with inactive user [{key}] as owner of [{obj.lower()}]")
        group = self.salesforce_records["Group"].get(key or "")
        # Only leads (and cases) may be owned by a queue in this org.
        if group is not None and group["Type"] == "Queue" and obj == "Lead":
            return None
        return "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"

    # --- both CRMs -----------------------------------------------------------------------------

    def set_owner(self, crm: str, obj: str, record_id: str, owner_id: str | None) -> None:
        """Set (or clear, with None) a record's owner without validation, bumping its
        modification time, as a human editing the record in the CRM would."""
        if crm == "hubspot":
            self.hubspot_update(obj, record_id, {"hubspot_owner_id": owner_id})
        elif crm == "salesforce":
            self.salesforce_update(obj, record_id, {"OwnerId": owner_id})
        else:
            raise ValueError(f"unknown crm {crm!r}")

    def touch(self, crm: str, obj: str, record_id: str, *, at_ms: int | None = None,
              value: str | None = None) -> str:
        """A rep works the record (logs a call, moves a lead's status): sets the object's
        first-touch field as the CRM would and bumps the modification time; returns the new
        value. HubSpot: `hs_last_sales_activity_timestamp` (at `at_ms`, default now);
        Salesforce Account/Contact: `LastActivityDate` (that instant's date); Lead: `Status`
        (`value`, default the next status that differs from the current one). KeyError if the
        record is absent."""
        at = self.now_ms() if at_ms is None else at_ms
        if crm == "hubspot":
            if self.hubspot_record(obj, record_id) is None:
                raise KeyError(record_id)
            text = value or hubspot_time(at)
            self.hubspot_update(obj, record_id, {"hs_last_sales_activity_timestamp": text})
            return text
        if crm != "salesforce":
            raise ValueError(f"unknown crm {crm!r}")
        with self.lock:
            name, _ = self._sf_table(obj)
            current = self.salesforce_record(name, record_id)
            if current is None:
                raise KeyError(record_id)
            if name == "Lead":
                text = value or next(s for s in LEAD_WORKED_STATUSES if s != current["Status"])
                self.salesforce_update(name, record_id, {"Status": text})
            else:
                text = value or datetime.fromtimestamp(at / 1000, tz=UTC).date().isoformat()
                self.salesforce_update(name, record_id, {"LastActivityDate": text})
            return text

    def plant_outcomes(self, crm: str, obj: str,
                       rate: Callable[[Mapping[str, Any]], float], *, seed: int = 0) -> int:
        """Decide, seeded and in id order, which records of `obj` converted: each with
        probability `rate(fields)` (the record's current properties or fields, owner
        included), so an effect can be planted (healthcare converts at 40% with one rep, 10%
        with the rest). HubSpot: `lifecyclestage` customer, or a closed-won deal (half the
        wins each way), else lead. Salesforce Lead:
        `IsConverted`; Account: a won Opportunity (else, sometimes, a lost one). Returns
        how many converted."""
        rng = random.Random(f"outcomes:{self.seed_value}:{seed}:{crm}:{obj}")
        converted = 0
        sf_name = self._sf_table(obj)[0] if crm != "hubspot" else ""
        with self.lock:
            for record_id in self.ids(crm, obj):
                if crm == "hubspot":
                    fields: Mapping[str, Any] = self.hubspot_record(obj, record_id) or {}
                else:
                    fields = self.salesforce_record(obj, record_id) or {}
                won = rng.random() < rate(fields)
                converted += won
                if crm == "hubspot":
                    # Half the wins show as the lifecycle stage, half only as a closed-won
                    # deal (the stage left at `opportunity`); some losses have a lost deal.
                    by_deal = rng.random() < 0.5
                    stage = "customer" if won and not by_deal else \
                        "opportunity" if won else "lead"
                    record = self._hubspot_table(obj)[int(record_id)]
                    self._set_hubspot_props(obj, record, {"lifecyclestage": stage})
                    if (won and by_deal) or (not won and rng.random() < 0.3):
                        self.add_hubspot_deal(obj, record_id, won=won)
                elif sf_name == "Lead":
                    self._sf_table(obj)[1][self._sf_key(record_id)]["IsConverted"] = won
                elif won or rng.random() < 0.3:
                    self.salesforce_create("Opportunity", {
                        "Name": f"Deal {record_id}", "AccountId": record_id,
                        "StageName": "Closed Won" if won else "Closed Lost", "IsWon": won,
                        "IsClosed": True, "OwnerId": fields.get("OwnerId")})
        return converted

    def add_hubspot_deal(self, obj: str, record_id: str, *, won: bool) -> int:
        """A closed deal associated with a company or contact; returns its id."""
        with self.lock:
            deal_id = 9_000_001 + len(self.hubspot_deals)
            self.hubspot_deals[deal_id] = {
                "dealname": f"Deal {record_id}", "dealstage": "closedwon" if won else "closedlost",
                "hs_is_closed_won": "true" if won else "false"}
            self.hubspot_deal_links.setdefault((obj, str(record_id)), []).append(deal_id)
            return deal_id

    def owner_of(self, crm: str, obj: str, record_id: str) -> str | None:
        """A record's current owner id (None: no owner); KeyError if the record is absent."""
        if crm == "hubspot":
            props = self.hubspot_record(obj, record_id)
            if props is None:
                raise KeyError(record_id)
            return props.get("hubspot_owner_id")
        fields = self.salesforce_record(obj, record_id)
        if fields is None:
            raise KeyError(record_id)
        return fields.get("OwnerId")

    def ids(self, crm: str, obj: str) -> list[str]:
        """Ids of the live records of an object, oldest first."""
        with self.lock:
            if crm == "hubspot":
                return [str(r.id) for r in sorted(self._hubspot_table(obj).values(),
                                                  key=lambda r: r.id) if not r.archived]
            _, table = self._sf_table(obj)
            return [i for i, r in table.items() if not r["IsDeleted"]]

    # --- query cursors (Salesforce nextRecordsUrl) ---------------------------------------------

    def open_cursor(self, records: list[dict[str, Any]], batch: int) -> str:
        """Keep a query's results for paging (a snapshot, as Salesforce's cursors are)."""
        with self.lock:
            locator = f"01g{self._next_cursor:012d}"
            self._next_cursor += 1
            self.cursors[locator] = (records, batch)
            while len(self.cursors) > _MAX_CURSORS:
                self.cursors.popitem(last=False)
            return locator

    # --- faults ----------------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        with self.lock:
            return dataclasses.replace(self._faults)

    def configure_faults(self, **changes: float) -> Faults:
        """Change the named fault settings (others keep their values); returns the new set.
        ValueError on an unknown name or a rate outside 0..1."""
        known = {f.name for f in dataclasses.fields(Faults)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        for name, value in changes.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative number")
            if name.endswith("_rate") and value > 1:
                raise ValueError(f"{name} must be between 0 and 1")
        with self.lock:
            self._faults = dataclasses.replace(self._faults, **changes)
            return dataclasses.replace(self._faults)

    def clear_faults(self) -> None:
        with self.lock:
            self._faults = Faults()

    def roll_fault(self) -> str | None:
        """`timeout`, `error` or None for one call, by the seeded fault stream."""
        with self.lock:
            f = self._faults
            if f.timeout_rate and self._fault_rng.random() < f.timeout_rate:
                return "timeout"
            if f.error_rate and self._fault_rng.random() < f.error_rate:
                return "error"
            return None

    def roll_error_status(self, choices: tuple[int, ...]) -> int:
        with self.lock:
            return self._fault_rng.choice(choices)

    def roll_lock_error(self) -> bool:
        with self.lock:
            rate = self._faults.lock_error_rate
            return bool(rate) and self._fault_rng.random() < rate

    # --- limits ----------------------------------------------------------------------------------

    _LIMIT_SETTINGS = ("hubspot_burst", "hubspot_burst_window_s", "hubspot_daily",
                       "hubspot_search_per_second", "salesforce_daily", "query_page_size")

    def configure_limits(self, **changes: float) -> dict[str, float]:
        """Change limit settings by name (those of the constructor); returns all of them."""
        unknown = set(changes) - set(self._LIMIT_SETTINGS)
        if unknown:
            raise ValueError(f"unknown limit setting(s): {', '.join(sorted(unknown))}")
        for name, value in changes.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive number")
        with self.lock:
            for name, value in changes.items():
                setattr(self, name, value)
            return {name: getattr(self, name) for name in self._LIMIT_SETTINGS}

    def hubspot_admit(self, token: str, *, search: bool) -> tuple[str | None, dict[str, str]]:
        """Count one HubSpot call against its limits. Returns the policy that refused it
        (`DAILY`, `TEN_SECONDLY_ROLLING`, `SECONDLY`) or None, and the rate-limit headers."""
        with self.lock:
            now = self.clock()
            burst = self._hs_burst.setdefault(token, deque())
            while burst and burst[0] <= now - self.hubspot_burst_window_s:
                burst.popleft()
            policy: str | None = None
            if self._daily_used["hubspot"] >= self.hubspot_daily:
                policy = "DAILY"
            elif search:
                # Search has its own per-second limit and does not spend the burst window.
                recent = self._hs_search.setdefault(token, deque())
                while recent and recent[0] <= now - 1.0:
                    recent.popleft()
                if len(recent) >= self.hubspot_search_per_second:
                    policy = "SECONDLY"
                else:
                    recent.append(now)
            elif len(burst) >= self.hubspot_burst:
                policy = "TEN_SECONDLY_ROLLING"
            else:
                burst.append(now)
            if policy is None:
                self._daily_used["hubspot"] += 1
            headers = {
                "X-HubSpot-RateLimit-Max": str(int(self.hubspot_burst)),
                "X-HubSpot-RateLimit-Remaining": str(max(0, int(self.hubspot_burst) - len(burst))),
                "X-HubSpot-RateLimit-Interval-Milliseconds":
                    str(int(self.hubspot_burst_window_s * 1000)),
                "X-HubSpot-RateLimit-Daily": str(int(self.hubspot_daily)),
                "X-HubSpot-RateLimit-Daily-Remaining":
                    str(max(0, int(self.hubspot_daily) - self._daily_used["hubspot"])),
            }
            return policy, headers

    def salesforce_admit(self) -> bool:
        """Count one Salesforce call against the daily quota; False once it is spent."""
        with self.lock:
            if self._daily_used["salesforce"] >= self.salesforce_daily:
                return False
            self._daily_used["salesforce"] += 1
            return True

    def salesforce_usage(self) -> tuple[int, int]:
        """(calls used today, daily maximum), as `Sforce-Limit-Info: api-usage=N/MAX` says."""
        with self.lock:
            return self._daily_used["salesforce"], int(self.salesforce_daily)

    def reset_daily(self) -> None:
        """The daily window rolled over: both daily counters start again from zero."""
        with self.lock:
            self._daily_used = {"hubspot": 0, "salesforce": 0}

    # --- stats -----------------------------------------------------------------------------------

    def record_call(self, vendor: str, endpoint: str, status: int) -> None:
        with self.lock:
            self._calls[vendor][(endpoint, status)] += 1

    def record_updates(self, vendor: str, count: int) -> None:
        """Records the vendor's API updated (writes through the Python API are not counted)."""
        with self.lock:
            self._records_updated[vendor] += count

    def record_salesforce_write(self, auto_assign_false: bool) -> None:
        """One write call; Salesforce re-runs assignment rules unless told
        `Sforce-Auto-Assign: FALSE`, so tests assert the connector always sends it."""
        with self.lock:
            self._sf_writes["total"] += 1
            if not auto_assign_false:
                self._sf_writes["without_auto_assign_false"] += 1

    def stats(self, vendor: str | None = None) -> dict[str, Any]:
        """Call counters by endpoint and status. With `vendor` ("hubspot" or "salesforce"):
        `{"calls": {"GET /crm/v3/objects/companies": {"200": 3}}, "total": 3, ...}`;
        without: `{"hubspot": {...}, "salesforce": {...}}`."""
        if vendor is None:
            return {v: self.stats(v) for v in ("hubspot", "salesforce")}
        with self.lock:
            calls: dict[str, dict[str, int]] = {}
            for (endpoint, status), n in sorted(self._calls[vendor].items()):
                calls.setdefault(endpoint, {})[str(status)] = n
            out: dict[str, Any] = {
                "calls": calls, "total": sum(self._calls[vendor].values()),
                "records_updated": self._records_updated[vendor],
                "daily_used": self._daily_used[vendor],
            }
            if vendor == "salesforce":
                out["writes"] = dict(self._sf_writes)
            return out

    def reset_stats(self) -> None:
        with self.lock:
            for counter in self._calls.values():
                counter.clear()
            self._records_updated = {"hubspot": 0, "salesforce": 0}
            self._sf_writes = {"total": 0, "without_auto_assign_false": 0}
