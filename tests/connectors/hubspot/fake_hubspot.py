"""A tiny HubSpot on a loopback port: canned JSON in HubSpot's recorded shapes, every request kept.

hubspot-api-client talks urllib3 (not requests), so it is mocked at the socket, not patched:
the connector runs its real client against this server through `base_url`.
"""

from __future__ import annotations

import fnmatch
import json
import operator
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from connectors.settings import Settings
from tests.connectors.hubspot.spec import problems

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
FIXTURES = Path(__file__).parent / "fixtures"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
SEARCH_CAP = 10_000
NUMBER_PROPS = {"hs_object_id"}
DATETIME_PROPS = {"hs_lastmodifieddate", "lastmodifieddate", "createdate"}


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms(at: datetime) -> int:
    return (at - EPOCH) // timedelta(milliseconds=1)


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class Canned:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def company(cid: int | str, modified: datetime | None = None, *, stamps: bool = True,
            **props: str) -> dict[str, Any]:
    """A company as HubSpot stores it: string properties, ISO datetimes. `stamps=False` leaves
    out the top-level createdAt/updatedAt (optional in the schema) for bulk tests: parsing
    them is most of the client's time."""
    modified = modified or BASE_TIME + timedelta(minutes=int(cid))
    created = BASE_TIME - timedelta(days=30)
    base = {"hs_object_id": str(cid), "createdate": iso(created),
            "hs_lastmodifieddate": iso(modified), "name": f"Company {cid}"}
    base.update(props)
    record = {"id": str(cid), "properties": base, "archived": False}
    if stamps:
        record.update(createdAt=iso(created), updatedAt=iso(modified))
    return record


def contact(cid: int | str, modified: datetime | None = None, **props: str) -> dict[str, Any]:
    modified = modified or BASE_TIME + timedelta(minutes=int(cid))
    created = BASE_TIME - timedelta(days=30)
    base = {"hs_object_id": str(cid), "createdate": iso(created),
            "lastmodifieddate": iso(modified), "hs_lastmodifieddate": iso(modified)}
    base.update(props)
    return {"id": str(cid), "properties": base, "createdAt": iso(created),
            "updatedAt": iso(modified), "archived": False}


class FakeHubSpot:
    """Objects by id, owners, a script of canned answers, and the log of requests."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {"companies": {}, "contacts": {}}
        self.owners: list[dict[str, Any]] = []
        self.requests: list[Seen] = []
        self.rate_headers: dict[str, str] = {
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            "X-HubSpot-RateLimit-Max": "100",
            "X-HubSpot-RateLimit-Remaining": "99",
        }
        # HubSpot rejects a whole batch update when one input is invalid: "400". Set "207" to
        # answer per record instead (as for objects that no longer exist).
        self.invalid_owner_answer = "400"
        self._script: deque[tuple[str, Canned]] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    # --- setup ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, obj: str, *records: dict[str, Any]) -> None:
        for r in records:
            self.objects[obj][r["id"]] = r

    def then(self, path_prefix: str, status: int, body: Any = None,
             headers: dict[str, str] | None = None, times: int = 1, delay: float = 0.0) -> None:
        """The next `times` requests whose path starts with `path_prefix` get this answer."""
        for _ in range(times):
            self._script.append((path_prefix, Canned(status, body, headers or {}, delay)))

    def paths(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests]

    def start(self) -> FakeHubSpot:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- routing ----------------------------------------------------------------------------

    def _scripted(self, path: str) -> Canned | None:
        with self._lock:
            for i, (prefix, canned) in enumerate(self._script):
                if path.startswith(prefix):
                    del self._script[i]
                    return canned
        return None

    def answer(self, seen: Seen) -> Canned:
        with self._lock:
            self.requests.append(seen)
        canned = self._scripted(seen.path)
        if canned is not None:
            return canned
        if seen.headers.get("authorization") != f"Bearer {TOKEN}":
            return Canned(401, fixture("401.json"))
        refused = _nonconforming(seen)
        if refused is not None:
            return refused
        parts = seen.path.strip("/").split("/")
        if parts[:3] == ["crm", "v3", "owners"]:
            return self._owners(seen)
        if parts[:3] == ["crm", "v3", "objects"] and len(parts) >= 4:
            obj, rest = parts[3], parts[4:]
            if rest == [] and seen.method == "GET":
                return self._list(obj, seen)
            if rest == ["search"]:
                return self._search(obj, seen.body)
            if rest == ["batch", "read"]:
                return self._batch_read(obj, seen.body)
            if rest == ["batch", "update"]:
                return self._batch_update(obj, seen.body)
        return Canned(404, {"status": "error", "message": "not found",
                            "category": "OBJECT_NOT_FOUND"})

    def _headers(self) -> dict[str, str]:
        return dict(self.rate_headers)

    def _pick(self, record: dict[str, Any], wanted: list[str] | None) -> dict[str, Any]:
        props = record["properties"]
        if wanted is not None:
            props = {k: props.get(k) for k in wanted if k in props}
        return {**record, "properties": props}

    def _list(self, obj: str, seen: Seen) -> Canned:
        limit = int(seen.query.get("limit", ["10"])[0])
        after = int(seen.query.get("after", ["0"])[0])
        wanted = seen.query.get("properties")
        ordered = sorted(self.objects[obj].values(), key=lambda r: int(r["id"]))
        page = ordered[after:after + limit]
        body: dict[str, Any] = {"results": [self._pick(r, wanted) for r in page]}
        if after + limit < len(ordered):
            body["paging"] = {"next": {"after": str(after + limit),
                                       "link": f"?after={after + limit}"}}
        return Canned(200, body, self._headers())

    def _search(self, obj: str, request: dict[str, Any]) -> Canned:
        limit = int(request.get("limit", 10))
        after = int(request.get("after") or 0)
        if after + limit > SEARCH_CAP:
            # HubSpot's search stops at 10,000 results per query.
            return Canned(400, {"status": "error", "category": "VALIDATION_ERROR",
                                "message": "Search results are limited to 10000 results"})
        keep = _matcher(request.get("filterGroups") or [])
        matches = [r for r in self.objects[obj].values() if keep(r)]
        for sort in reversed(request.get("sorts") or []):
            prop = sort["propertyName"] if isinstance(sort, dict) else str(sort).lstrip("-")
            descending = (sort.get("direction") == "DESCENDING") if isinstance(sort, dict) \
                else str(sort).startswith("-")
            if prop in DATETIME_PROPS:  # the common case, kept cheap: 10,000 records a query
                matches.sort(key=lambda r, p=prop: _epoch_ms(r["properties"].get(p) or "0"),
                             reverse=descending)
            else:
                matches.sort(key=lambda r, p=prop: _value(p, r["properties"].get(p)),
                             reverse=descending)
        total = len(matches)
        matches = matches[:SEARCH_CAP]
        page = matches[after:after + limit]
        body: dict[str, Any] = {"total": total,
                                "results": [self._pick(r, request.get("properties"))
                                            for r in page]}
        if after + limit < len(matches):
            body["paging"] = {"next": {"after": str(after + limit)}}
        # Search answers carry no rate-limit headers (docs/connectors.md#rate-limits).
        return Canned(200, body)

    def _batch_read(self, obj: str, request: dict[str, Any]) -> Canned:
        ids = [i["id"] for i in request["inputs"]]
        found = [self._pick(self.objects[obj][i], request.get("properties"))
                 for i in ids if i in self.objects[obj]]
        missing = [i for i in ids if i not in self.objects[obj]]
        body: dict[str, Any] = {"status": "COMPLETE", "results": found,
                                "startedAt": iso(BASE_TIME), "completedAt": iso(BASE_TIME)}
        if not missing:
            return Canned(200, body, self._headers())
        body["numErrors"] = 1
        body["errors"] = [{"status": "error", "category": "OBJECT_NOT_FOUND",
                           "message": "Could not get some objects, they may be deleted or "
                                      "not exist.", "context": {"ids": missing}}]
        return Canned(207, body, self._headers())

    def _batch_update(self, obj: str, request: dict[str, Any]) -> Canned:
        owner_ids = {o["id"] for o in self.owners}
        results, errors = [], []
        bad_owner = [i for i in request["inputs"]
                     if i["properties"].get("hubspot_owner_id") not in owner_ids]
        if bad_owner and self.invalid_owner_answer == "400":
            return Canned(400, fixture("400_validation.json"), self._headers())
        for item in request["inputs"]:
            record = self.objects[obj].get(item["id"])
            if record is None:
                errors.append({"status": "error", "category": "OBJECT_NOT_FOUND",
                               "message": "Could not get some COMPANY objects.",
                               "context": {"ids": [item["id"]]}})
                continue
            if item in bad_owner:
                errors.append({"status": "error", "category": "VALIDATION_ERROR",
                               "message": "not a valid owner ID",
                               "context": {"ids": [item["id"]]}})
                continue
            record["properties"].update(item["properties"])
            results.append(record)
        body: dict[str, Any] = {"status": "COMPLETE", "results": results,
                                "startedAt": iso(BASE_TIME), "completedAt": iso(BASE_TIME)}
        if errors:
            body["errors"] = errors
            body["numErrors"] = len(errors)
            return Canned(207, body, self._headers())
        return Canned(200, body, self._headers())

    def _owners(self, seen: Seen) -> Canned:
        archived = seen.query.get("archived", ["false"])[0] == "true"
        limit = int(seen.query.get("limit", ["100"])[0])
        after = int(seen.query.get("after", ["0"])[0])
        chosen = [o for o in self.owners if bool(o.get("archived")) == archived]
        page = chosen[after:after + limit]
        body: dict[str, Any] = {"results": page}
        if after + limit < len(chosen):
            body["paging"] = {"next": {"after": str(after + limit)}}
        return Canned(200, body, self._headers())

    # --- the HTTP side ----------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return None

            def _serve(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                seen = Seen(self.command, split.path, parse_qs(split.query),
                            {k.lower(): v for k, v in self.headers.items()}, body)
                canned = fake.answer(seen)
                if canned.delay:
                    time.sleep(canned.delay)
                payload = b"" if canned.body is None else json.dumps(canned.body).encode()
                try:
                    self.send_response(canned.status)
                    self.send_header("Content-Type", "application/json;charset=utf-8")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in canned.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a read timeout under test)

            do_GET = do_POST = do_PATCH = _serve

        return Handler


def _nonconforming(seen: Seen) -> Canned | None:
    """HubSpot's 400 for a request its schema refuses (spec.py), so every test of the
    connector also checks the shape of what it sends."""
    try:
        found = problems(seen.method, seen.path, seen.query, seen.body)
    except KeyError:
        return None  # an endpoint we have no schema for: answered as before
    if not found:
        return None
    return Canned(400, {"status": "error", "category": "VALIDATION_ERROR",
                        "message": "Invalid input JSON: " + "; ".join(found),
                        "correlationId": "00000000-0000-0000-0000-000000000000"})


def _value(prop: str, raw: object) -> Any:
    if raw is None or raw == "":
        return (0, 0)
    if prop in NUMBER_PROPS:
        return (1, int(str(raw)))
    if prop in DATETIME_PROPS:
        return (1, _epoch_ms(str(raw)))
    return (1, str(raw).lower())


@lru_cache(maxsize=65536)
def _epoch_ms(text: str) -> int:
    if text.isdigit():
        return int(text)
    return ms(datetime.fromisoformat(text.replace("Z", "+00:00")))


def _matcher(groups: list[dict[str, Any]]) -> Callable[[dict[str, Any]], bool]:
    """Filter groups (OR of ANDs) compiled once per search: 10,000 records per query."""
    compiled = [[_predicate(f) for f in g.get("filters", [])] for g in groups]

    def keep(record: dict[str, Any]) -> bool:
        props = record["properties"]
        for group in compiled:
            for check in group:
                if not check(props):
                    break
            else:
                return True
        return not compiled

    return keep


def _predicate(f: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    prop, op = f["propertyName"], f["operator"]
    if op == "IN":
        wanted = {_value(prop, v) for v in f["values"]}
        return lambda props: _value(prop, props.get(prop)) in wanted
    if op == "CONTAINS_TOKEN":  # a word of the value, `*` completing a partial one
        pattern = str(f.get("value", "")).lower()
        return lambda props: any(fnmatch.fnmatchcase(word, pattern) for word in
                                 re.split(r"[^\w]+", str(props.get(prop) or "").lower()))
    want = _value(prop, f.get("value"))
    compare = {"EQ": operator.eq, "GT": operator.gt, "GTE": operator.ge,
               "LT": operator.lt, "LTE": operator.le}[op]
    if prop in DATETIME_PROPS:  # the common case, kept cheap
        bound = want[1]

        def check_time(props: dict[str, Any]) -> bool:
            raw = props.get(prop)
            return bool(raw) and compare(_epoch_ms(raw), bound)

        return check_time

    def check(props: dict[str, Any]) -> bool:
        have = _value(prop, props.get(prop))
        return have[0] != 0 and compare(have, want)

    return check


class RecordingLimiter:
    """A burst bucket that never blocks and remembers what it was told."""

    def __init__(self) -> None:
        self.acquired = 0
        self.pauses: list[float] = []

    def acquire(self, cost: int = 1) -> None:
        self.acquired += cost

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)


def settings_for(url: str, token: str | None = TOKEN) -> Settings:
    # Explicit values win over the environment: no Redis, this base URL, this token.
    return Settings(HUBSPOT_ACCESS_TOKEN=token, hubspot_base_url=url, redis_url=None)


def serve() -> Iterator[FakeHubSpot]:
    fake = FakeHubSpot().start()
    try:
        yield fake
    finally:
        fake.stop()
