"""The Salesforce REST subset as a FastAPI app: SOQL query, composite writes, limits, OAuth."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from connectors.simulator import soql
from connectors.simulator.control import CONTROL_PREFIX, add_control_routes, json_body, stall
from connectors.simulator.core import SALESFORCE_ORG_ID, Faults, Simulator
from connectors.simulator.schema import (
    NUMBER_TYPES,
    STRING_TYPES,
    SfField,
    SfObject,
    normalize_sf_id,
    salesforce_time,
    sf_object,
)

COMPOSITE_MAX = 200
_VERSION = re.compile(r"^v\d+\.\d+$")
_VERSIONED = re.compile(r"^/services/data/v\d+\.\d+(?P<rest>/.*)?$")
_OPEN_PATHS = ("/services/data", "/services/oauth2/token")  # no session, no quota
_VERSIONS = [{"label": label, "url": f"/services/data/v{v}", "version": v}
             for label, v in (("Summer '23", "58.0"), ("Winter '24", "59.0"),
                              ("Spring '24", "60.0"), ("Summer '24", "61.0"),
                              ("Winter '25", "62.0"))]

Handler = Callable[..., Awaitable[Response]]


def endpoint_key(method: str, path: str) -> str:
    """The stats key of a call: version, record ids and query locators abstracted away,
    e.g. `PATCH /services/data/vXX.X/composite/sobjects`."""
    path = path.rstrip("/") or "/"
    match = _VERSIONED.match(path)
    if match:
        rest = match.group("rest") or ""
        rest = re.sub(r"^/(query|queryAll)/[^/]+$", r"/\1/{locator}", rest)
        rest = re.sub(r"^/sobjects/([^/]+)/[^/]+$", r"/sobjects/\1/{id}", rest)
        path = "/services/data/vXX.X" + rest
    return f"{method} {path}"


def error(status: int, code: str, message: str, fields: list[str] | None = None) -> JSONResponse:
    """Salesforce's error shape: a JSON array of {message, errorCode[, fields]}."""
    body: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        body["fields"] = fields
    return JSONResponse([body], status_code=status)


def render(spec: SfField, value: Any) -> Any:
    if value is None:
        return None
    if spec.type == "datetime":
        return salesforce_time(int(value))
    if spec.type in ("double", "currency"):
        return float(value)
    return value


def record_json(version: str, meta: SfObject, record: Mapping[str, Any],
                fields: tuple[SfField, ...] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"attributes": {
        "type": meta.name, "url": f"/services/data/{version}/sobjects/{meta.name}/{record['Id']}"}}
    for spec in fields if fields is not None else tuple(meta.fields.values()):
        out[spec.name] = render(spec, record.get(spec.name))
    return out


class _BadRequest(Exception):
    """A whole request Salesforce refuses (unknown object or field), not one record."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


def _record_error(code: str, message: str, fields: list[str] | None = None) -> dict[str, Any]:
    return {"statusCode": code, "message": message, "fields": fields or []}


def _coerce(spec: SfField, value: Any) -> tuple[bool, Any]:
    """(ok, value) for a JSON value written to `spec`; ids normalized to 18 characters."""
    if value is None:
        return True, None
    if spec.type in STRING_TYPES:
        return isinstance(value, str), value
    if spec.type in ("id", "reference"):
        return isinstance(value, str), normalize_sf_id(value) or value
    if spec.type in NUMBER_TYPES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False, value
        if spec.type == "int":
            return float(value).is_integer(), int(value)
        return True, float(value)
    if spec.type == "boolean":
        return isinstance(value, bool), value
    return False, value


class _Writer:
    """Validates and applies owner/field updates the way Salesforce answers them per record."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def check(self, meta: SfObject, raw_id: object, fields: dict[str, Any]
              ) -> tuple[dict[str, Any] | None, dict[str, Any], list[dict[str, Any]]]:
        """(the live record, coerced fields, per-record errors); callers hold sim.lock."""
        coerced: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        for key, value in fields.items():
            spec = meta.field(key)
            if spec is None:
                raise _BadRequest("INVALID_FIELD",
                                  f"No such column '{key}' on sobject of type {meta.name}")
            if not spec.writable:
                errors.append(_record_error(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {spec.name}. Please check the security "
                    "settings of this field and verify that it is read/write for your profile "
                    "or permission set.", [spec.name]))
                continue
            ok, coerced_value = _coerce(spec, value)
            if not ok:
                errors.append(_record_error("INVALID_TYPE_ON_FIELD_IN_RECORD",
                                            f"{spec.name}: value not of required type: {value}",
                                            [spec.name]))
            coerced[spec.name] = coerced_value
        record_id = normalize_sf_id(raw_id) if isinstance(raw_id, str) else None
        record = None
        if record_id is None or not record_id.startswith(meta.prefix):
            errors.insert(0, _record_error("INVALID_ID_FIELD", f"invalid record id: {raw_id}",
                                           ["Id"]))
        else:
            record = self.sim.salesforce_records[meta.name].get(record_id)
            if record is None or record["IsDeleted"]:
                record = None
                errors.insert(0, _record_error("ENTITY_IS_DELETED", "entity is deleted"))
        if "OwnerId" in coerced and not errors:
            refused = self.sim.salesforce_owner_error(meta.name, coerced["OwnerId"])
            if refused:
                errors.append(_record_error(refused[0], refused[1], ["OwnerId"]))
        if record is not None and not errors and self.sim.roll_lock_error():
            errors.append(_record_error(
                "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record or 1 "
                f"records: {record_id}"))
        return record, coerced, errors

    def apply(self, record: dict[str, Any], coerced: dict[str, Any]) -> None:
        record.update(coerced)
        record["LastModifiedById"] = self.sim.salesforce_api_user  # the API's own user
        self.sim.touch_salesforce(record)


def _updatable(name: object) -> SfObject:
    meta = sf_object(name) if isinstance(name, str) else None
    if meta is None:
        raise _BadRequest("INVALID_TYPE", f"sObject type '{name}' is not supported.")
    if not meta.updatable:
        raise _BadRequest("INVALID_TYPE_FOR_OPERATION",
                          f"entity type {meta.name} does not support update")
    return meta


def salesforce_app(sim: Simulator) -> FastAPI:
    """The Salesforce REST API subset over `sim` (see the package docstring for the routes)."""
    app = FastAPI(title="Salesforce simulator", docs_url=None, redoc_url=None, openapi_url=None,
                  redirect_slashes=False)
    add_control_routes(app, sim, "salesforce")
    writer = _Writer(sim)

    def route(path: str, methods: list[str], handler: Handler) -> None:
        # simple-salesforce calls `query/` and `limits/` with a trailing slash; others do not.
        app.add_api_route(path, handler, methods=methods, include_in_schema=False)
        app.add_api_route(path + "/", handler, methods=methods, include_in_schema=False)

    @app.middleware("http")
    async def gate(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                   ) -> Response:
        path = request.url.path
        if path.startswith(CONTROL_PREFIX):
            return await call_next(request)
        faults = sim.faults
        if faults.latency_ms > 0:
            await stall(request, faults.latency_ms / 1000)
        if path.rstrip("/") in _OPEN_PATHS:
            response = await call_next(request)
        elif _bearer(request) not in sim.salesforce_sessions:
            response = error(401, "INVALID_SESSION_ID", "Session expired or invalid")
            response.headers["WWW-Authenticate"] = "Token"
        elif not sim.salesforce_admit():
            response = error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        else:
            response = await _with_faults(sim, faults, request, call_next)
        used, cap = sim.salesforce_usage()
        response.headers["Sforce-Limit-Info"] = f"api-usage={used}/{cap}"
        sim.record_call("salesforce", endpoint_key(request.method, path), response.status_code)
        return response

    async def versions() -> Response:
        return JSONResponse(_VERSIONS)

    async def query(version: str, request: Request) -> Response:
        return _query(sim, version, request, include_deleted=False)

    async def query_all(version: str, request: Request) -> Response:
        return _query(sim, version, request, include_deleted=True)

    async def query_more(version: str, locator: str, request: Request) -> Response:
        return _query_more(sim, version, locator, request)

    async def limits(version: str) -> Response:
        if not _VERSION.match(version):
            return _not_found()
        used, cap = sim.salesforce_usage()
        return JSONResponse({"DailyApiRequests": {"Max": cap, "Remaining": max(0, cap - used)}})

    async def composite(version: str, request: Request) -> Response:
        if not _VERSION.match(version):
            return _not_found()
        sim.record_salesforce_write(_auto_assign_false(request))
        try:
            body = await json_body(request)
        except ValueError as exc:
            return error(400, "JSON_PARSER_ERROR", str(exc))
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            return error(400, "JSON_PARSER_ERROR", "expected {\"records\": [...]}")
        if len(records) > COMPOSITE_MAX:
            return error(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more "
                                                   f"than {COMPOSITE_MAX} records into this call")
        try:
            return JSONResponse(_composite_update(sim, writer, records,
                                                  bool(body.get("allOrNone", False))))
        except _BadRequest as exc:
            return error(400, exc.code, exc.message)

    async def sobject(version: str, obj: str, record_id: str, request: Request) -> Response:
        if not _VERSION.match(version):
            return _not_found()
        meta = sf_object(obj)
        if meta is None:
            return _not_found()
        if request.method == "GET":
            return _get_record(sim, version, meta, record_id, request)
        sim.record_salesforce_write(_auto_assign_false(request))
        try:
            body = await json_body(request)
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
        except ValueError as exc:
            return error(400, "JSON_PARSER_ERROR", str(exc))
        with sim.lock:
            try:
                meta = _updatable(meta.name)
                fields = {k: v for k, v in body.items() if k != "attributes"}
                record, coerced, errors = writer.check(meta, record_id, fields)
            except _BadRequest as exc:
                return error(400, exc.code, exc.message)
            if errors:
                first = errors[0]
                status = 404 if first["statusCode"] in ("ENTITY_IS_DELETED",
                                                        "INVALID_ID_FIELD") else 400
                return error(status, first["statusCode"], first["message"], first["fields"])
            assert record is not None
            writer.apply(record, coerced)
            sim.record_updates("salesforce", 1)
        return Response(status_code=204)

    async def token(request: Request) -> Response:
        return _token(sim, request, (await request.body()).decode("utf-8", "replace"))

    route("/services/data", ["GET"], versions)
    route("/services/data/{version}/query", ["GET"], query)
    route("/services/data/{version}/queryAll", ["GET"], query_all)
    route("/services/data/{version}/query/{locator}", ["GET"], query_more)
    route("/services/data/{version}/queryAll/{locator}", ["GET"], query_more)
    route("/services/data/{version}/limits", ["GET"], limits)
    route("/services/data/{version}/composite/sobjects", ["PATCH"], composite)
    route("/services/data/{version}/sobjects/{obj}/{record_id}", ["GET", "PATCH"], sobject)
    route("/services/oauth2/token", ["POST"], token)
    return app


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() in ("bearer", "oauth") else None


def _auto_assign_false(request: Request) -> bool:
    return request.headers.get("sforce-auto-assign", "").strip().lower() == "false"


def _not_found() -> JSONResponse:
    return error(404, "NOT_FOUND", "The requested resource does not exist")


async def _with_faults(sim: Simulator, faults: Faults, request: Request,
                       call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    fault = sim.roll_fault()
    if fault == "timeout":
        # Stall past the client's timeout, then do the work anyway: a timed-out write may
        # still have been applied, as with the real service. The body is read first: once
        # the client has given up, the server reports it gone and a later read would fail
        # (ClientDisconnect), silently dropping the work this fault exists to apply.
        await request.body()
        await stall(request, faults.timeout_sleep_s)
    elif fault == "error":
        # Salesforce never answers 429 (its rate signal is 403 REQUEST_LIMIT_EXCEEDED, a daily
        # quota), so transient faults here are 500/503.
        if sim.roll_error_status((500, 503)) == 500:
            return error(500, "UNKNOWN_EXCEPTION", "An unexpected error occurred. Please "
                                                   "include this ErrorId if you contact "
                                                   "support: 1234567-89 (-1234567)")
        return error(503, "SERVER_UNAVAILABLE", "Server temporarily unavailable, retry later")
    return await call_next(request)


def _page_size(sim: Simulator, request: Request) -> int:
    """Salesforce honours `Sforce-Query-Options: batchSize=N` between 200 and 2000."""
    match = re.search(r"batchSize=(\d+)", request.headers.get("sforce-query-options", ""))
    if match:
        return max(200, min(2000, int(match.group(1))))
    return int(sim.query_page_size)


def _query(sim: Simulator, version: str, request: Request, *, include_deleted: bool) -> Response:
    if not _VERSION.match(version):
        return _not_found()
    text = request.query_params.get("q")
    if not text:
        return error(400, "MALFORMED_QUERY", "A query string has to be specified")
    try:
        parsed = soql.parse(text)
    except soql.SoqlError as exc:
        return error(400, exc.code, exc.message)
    with sim.lock:
        table = sim.salesforce_records[parsed.object.name].values()
        hits = parsed.run(r for r in table if include_deleted or not r["IsDeleted"])
        if parsed.count:
            return JSONResponse({"totalSize": len(hits), "done": True, "records": []})
        rows = [record_json(version, parsed.object, r, parsed.fields) for r in hits]
    batch = _page_size(sim, request)
    body: dict[str, Any] = {"totalSize": len(rows), "done": len(rows) <= batch,
                            "records": rows[:batch]}
    if len(rows) > batch:
        kind = "queryAll" if include_deleted else "query"
        locator = sim.open_cursor(rows, batch)
        body["nextRecordsUrl"] = f"/services/data/{version}/{kind}/{locator}-{batch}"
    return JSONResponse(body)


def _query_more(sim: Simulator, version: str, locator: str, request: Request) -> Response:
    match = re.fullmatch(r"(01g\w+)-(\d+)", locator)
    with sim.lock:
        cursor = sim.cursors.get(match.group(1)) if match else None
    if not _VERSION.match(version) or match is None or cursor is None:
        return error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
    rows, batch = cursor
    start = int(match.group(2))
    end = start + batch
    body: dict[str, Any] = {"totalSize": len(rows), "done": end >= len(rows),
                            "records": rows[start:end]}
    if end < len(rows):
        kind = "queryAll" if "/queryAll/" in request.url.path else "query"
        body["nextRecordsUrl"] = f"/services/data/{version}/{kind}/{match.group(1)}-{end}"
    return JSONResponse(body)


def _get_record(sim: Simulator, version: str, meta: SfObject, record_id: str,
                request: Request) -> Response:
    fields: tuple[SfField, ...] | None = None
    wanted = [n.strip() for n in request.query_params.get("fields", "").split(",") if n.strip()]
    if wanted:
        found = [meta.field(n) for n in wanted]
        fields = tuple(f for f in found if f is not None)
        if len(fields) != len(wanted):
            return error(400, "INVALID_FIELD", f"No such column on sobject of type {meta.name}")
    key = normalize_sf_id(record_id)
    with sim.lock:
        record = sim.salesforce_records[meta.name].get(key or "")
        if record is None or record["IsDeleted"]:
            return _not_found()
        return JSONResponse(record_json(version, meta, record, fields))


def _composite_update(sim: Simulator, writer: _Writer, records: list[dict[str, Any]],
                      all_or_none: bool) -> list[dict[str, Any]]:
    """Per-record results in input order; with allOrNone, nothing is applied if any fails."""
    results: list[dict[str, Any]] = []
    planned: list[tuple[dict[str, Any], dict[str, Any]]] = []
    with sim.lock:
        for item in records:
            meta = _updatable((item.get("attributes") or {}).get("type"))
            raw_id = item.get("id", item.get("Id"))
            fields = {k: v for k, v in item.items() if k not in ("attributes", "id", "Id")}
            record, coerced, errors = writer.check(meta, raw_id, fields)
            shown = normalize_sf_id(raw_id) if isinstance(raw_id, str) else None
            results.append({"id": shown or raw_id, "success": not errors, "errors": errors})
            if not errors and record is not None:
                planned.append((record, coerced))
        failed = any(not r["success"] for r in results)
        if all_or_none and failed:
            for result in results:
                if result["success"]:
                    result.update(success=False, errors=[_record_error(
                        "ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back because not "
                        "all records were valid and the request was using AllOrNone header")])
            return results
        for record, coerced in planned:
            writer.apply(record, coerced)
        sim.record_updates("salesforce", len(planned))
    return results


def _token(sim: Simulator, request: Request, raw: str) -> Response:
    """OAuth 2.0 username-password and JWT bearer flows for the one configured test user."""
    form = {k: v[0] for k, v in parse_qs(raw).items()}
    creds = sim.salesforce_credentials
    grant = form.get("grant_type")

    def refuse(err: str = "invalid_grant", text: str = "authentication failure") -> Response:
        return JSONResponse({"error": err, "error_description": text}, status_code=400)

    if grant == "password":
        if form.get("client_id") != creds.consumer_key:
            return refuse("invalid_client_id", "client identifier invalid")
        if form.get("client_secret") != creds.consumer_secret:
            return refuse("invalid_client", "invalid client credentials")
        password = form.get("password", "")
        if form.get("username") != creds.username or password not in (
                creds.password, creds.password + creds.security_token):
            return refuse()
    elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
        if not _jwt_ok(sim, form.get("assertion", "")):
            return refuse()
    else:
        return refuse("unsupported_grant_type", "grant type not supported")
    access = f"{SALESFORCE_ORG_ID[:15]}!sim{uuid.uuid4().hex}"
    with sim.lock:
        sim.salesforce_sessions.add(access)
    instance = str(request.base_url).rstrip("/")
    identity = f"{instance}/id/{SALESFORCE_ORG_ID}/{creds.user_id}"
    issued = str(sim.now_ms())
    # Salesforce signs id + issued_at with the consumer secret so clients can verify the reply.
    signature = base64.b64encode(hmac.new(creds.consumer_secret.encode(),
                                          (identity + issued).encode(),
                                          hashlib.sha256).digest()).decode()
    return JSONResponse({"access_token": access, "instance_url": instance, "id": identity,
                         "token_type": "Bearer", "issued_at": issued, "signature": signature,
                         "scope": "api"})


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _jwt_ok(sim: Simulator, assertion: str) -> bool:
    """iss is the consumer key, sub the username, exp in the future; RS256 signature checked
    when a public key is configured."""
    creds = sim.salesforce_credentials
    parts = assertion.split(".")
    if len(parts) != 3:
        return False
    try:
        claims = json.loads(_b64url(parts[1]))
        signature = _b64url(parts[2])
    except (ValueError, json.JSONDecodeError):
        return False
    if not isinstance(claims, dict) or claims.get("iss") != creds.consumer_key \
            or claims.get("sub") != creds.username:
        return False
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp <= sim.clock():
        return False
    if creds.jwt_public_key_pem is None:
        return True
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = serialization.load_pem_public_key(creds.jwt_public_key_pem)
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(),
                   hashes.SHA256())
    except InvalidSignature:
        return False
    return True
