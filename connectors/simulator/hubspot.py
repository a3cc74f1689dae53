"""The HubSpot CRM v3 subset as a FastAPI app: objects list/get/batch/search and owners."""

from __future__ import annotations

import fnmatch
import functools
import json
import re
import uuid
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from connectors.simulator.control import CONTROL_PREFIX, add_control_routes, json_body, stall
from connectors.simulator.core import Faults, HubSpotOwner, HubSpotRecord, Simulator
from connectors.simulator.schema import (
    HUBSPOT_ALWAYS,
    HUBSPOT_DEFAULT_PROPERTIES,
    HUBSPOT_OBJECT_LABEL,
    HUBSPOT_OBJECTS,
    HUBSPOT_READ_ONLY,
    hubspot_time,
    parse_time,
)

LIST_MAX = 100
BATCH_MAX = 100
SEARCH_MAX = 200
SEARCH_WINDOW = 10_000  # results one search query can page through
# Filter groups OR, filters within a group AND (HubSpot changelog 2024-08-26).
SEARCH_FILTER_GROUPS = 5
SEARCH_FILTERS_PER_GROUP = 10
SEARCH_FILTERS_TOTAL = 25
_TOKEN_SPLIT = re.compile(r"[^\w]+")
OWNERS_MAX = 500
_RATE_TEXT = {"TEN_SECONDLY_ROLLING": "ten_secondly_rolling", "DAILY": "daily",
              "SECONDLY": "secondly"}
_AUTH_MESSAGE = ("Authentication credentials not found. This API supports OAuth 2.0 "
                 "authentication and you can find more details at "
                 "https://developers.hubspot.com/docs/methods/auth/oauth-overview")


class _Invalid(Exception):
    """A request HubSpot answers with 400 VALIDATION_ERROR."""


def endpoint_key(method: str, path: str) -> str:
    """The stats key of a call, record and owner ids abstracted: `GET /crm/v3/objects/companies`,
    `GET /crm/v3/objects/companies/{id}`, `POST /crm/v3/objects/companies/batch/update`."""
    path = path.rstrip("/") or "/"
    path = re.sub(r"^(/crm/v3/objects/[^/]+)/(?!search$)[^/]+$", r"\1/{id}", path)
    path = re.sub(r"^(/crm/v3/owners)/[^/]+$", r"\1/{id}", path)
    return f"{method} {path}"


def error(status: int, category: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message,
                         "correlationId": str(uuid.uuid4()), "category": category, **extra},
                        status_code=status)


def rate_limited(sim: Simulator, policy: str) -> JSONResponse:
    """HubSpot's 429: the body names the policy; DAILY means stop until tomorrow."""
    return JSONResponse({
        "status": "error", "message": f"You have reached your {_RATE_TEXT[policy]} limit.",
        "errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()), "policyName": policy,
        "groupName": f"publicapi:private-app:{policy.lower()}:{sim.hubspot_portal_id}",
    }, status_code=429)


def record_json(sim: Simulator, obj: str, record: HubSpotRecord,
                names: Iterable[str] | None) -> dict[str, Any]:
    """A SimplePublicObject: requested properties that exist (null when unset), plus the
    id and date properties HubSpot always returns."""
    known = sim.hubspot_properties[obj]
    wanted = list(names) if names else list(HUBSPOT_DEFAULT_PROPERTIES[obj])
    props = {n: record.properties.get(n) for n in wanted if n in known}
    for name in HUBSPOT_ALWAYS:
        props[name] = record.properties.get(name)
    out: dict[str, Any] = {"id": str(record.id), "properties": props,
                           "createdAt": hubspot_time(record.created_ms),
                           "updatedAt": hubspot_time(record.updated_ms),
                           "archived": record.archived}
    if record.archived:
        out["archivedAt"] = hubspot_time(record.updated_ms)
    return out


def owner_json(owner: HubSpotOwner) -> dict[str, Any]:
    return {"id": owner.id, "email": owner.email, "firstName": owner.first_name,
            "lastName": owner.last_name, "userId": owner.user_id,
            "userIdIncludingInactive": owner.user_id, "type": owner.type,
            "createdAt": hubspot_time(owner.created_ms),
            "updatedAt": hubspot_time(owner.updated_ms),
            "archived": owner.archived, "teams": list(owner.teams)}


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _int_param(value: str | None, default: int, name: str, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise _Invalid(f"{name} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise _Invalid(f"{name} must be between {low} and {high}, got {number}")
    return number


def _property_names(request: Request) -> list[str]:
    # The generated client repeats `properties=`; hand-written clients use commas. Accept both.
    return [n.strip() for raw in request.query_params.getlist("properties")
            for n in raw.split(",") if n.strip()]


def _next_page(request: Request, after: str) -> dict[str, Any]:
    return {"next": {"after": after, "link": str(request.url.include_query_params(after=after))}}


def _invalid_properties(sim: Simulator, obj: str, props: Mapping[str, Any]
                        ) -> list[dict[str, Any]]:
    """HubSpot's per-property validation errors for a write, empty when all are valid."""
    problems: list[dict[str, Any]] = []
    known = sim.hubspot_properties[obj]

    def problem(name: str, code: str, message: str) -> None:
        problems.append({"isValid": False, "message": message, "error": code, "name": name,
                         "localizedErrorMessage": message})

    for name, value in props.items():
        text = None if value is None else str(value)
        if name not in known:
            problem(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
        elif name in HUBSPOT_READ_ONLY:
            problem(name, "READ_ONLY_VALUE",
                    f"{name} is a read only property; its value cannot be set.")
        elif value is not None and not isinstance(value, str | int | float | bool):
            problem(name, "INVALID_PROPERTY_VALUE", f"{value!r} is not a valid value for {name}")
        elif name == "hubspot_owner_id" and text and not sim.hubspot_owner_assignable(text):
            problem(name, "INVALID_OWNER_ID", f"{text} is not a valid owner id")
        elif known[name] == "number" and text and _number(text) is None:
            problem(name, "INVALID_DECIMAL", f"{text} was not a valid number.")
    return problems


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _validation_message(problems: list[dict[str, Any]]) -> str:
    return "Property values were not valid: " + json.dumps(problems)


def hubspot_app(sim: Simulator) -> FastAPI:
    """The HubSpot CRM v3 subset over `sim` (see the package docstring for the routes)."""
    app = FastAPI(title="HubSpot simulator", docs_url=None, redoc_url=None, openapi_url=None,
                  redirect_slashes=False)
    add_control_routes(app, sim, "hubspot")

    @app.middleware("http")
    async def gate(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                   ) -> Response:
        path = request.url.path
        if path.startswith(CONTROL_PREFIX):
            return await call_next(request)
        faults = sim.faults
        if faults.latency_ms > 0:
            await stall(request, faults.latency_ms / 1000)
        key = endpoint_key(request.method, path)
        token = _bearer(request)
        if token is None or token not in sim.hubspot_tokens:
            response: Response = error(401, "INVALID_AUTHENTICATION", _AUTH_MESSAGE)
        else:
            search = key.endswith("/search")
            policy, headers = sim.hubspot_admit(token, search=search)
            if policy is not None:
                response = rate_limited(sim, policy)
            else:
                response = await _with_faults(sim, faults, request, call_next)
            if not search:  # HubSpot sends no rate-limit headers on search
                response.headers.update(headers)
        sim.record_call("hubspot", key, response.status_code)
        return response

    def guarded(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
        @functools.wraps(handler)  # FastAPI reads the wrapped signature for its parameters
        async def run(*args: Any, **kwargs: Any) -> Response:
            try:
                return await handler(*args, **kwargs)
            except _Invalid as exc:
                return error(400, "VALIDATION_ERROR", str(exc))
        return run

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            body = await json_body(request)
        except ValueError as exc:
            raise _Invalid(f"Invalid input JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _Invalid("Invalid input JSON: expected an object")
        return body

    def check_object(obj: str) -> None:
        if obj not in HUBSPOT_OBJECTS:
            raise _Invalid(f"Unable to infer object type from: {obj}")

    @app.get("/crm/v3/objects/{obj}")
    @guarded
    async def list_page(obj: str, request: Request) -> Response:
        check_object(obj)
        params = request.query_params
        limit = _int_param(params.get("limit"), 10, "limit", 1, LIST_MAX)
        after = _int_param(params.get("after"), 0, "after", 0, 2**63)
        archived = _flag(params.get("archived"))
        names = _property_names(request)
        with sim.lock:
            table, order = sim.hubspot_records[obj], sim.hubspot_order[obj]
            page: list[HubSpotRecord] = []
            following: int | None = None
            for record_id in order[bisect_left(order, after):]:
                record = table[record_id]
                if record.archived != archived:
                    continue
                if len(page) == limit:
                    following = record_id
                    break
                page.append(record)
            body: dict[str, Any] = {"results": [record_json(sim, obj, r, names) for r in page]}
        if following is not None:
            body["paging"] = _next_page(request, str(following))
        return JSONResponse(body)

    @app.get("/crm/v3/objects/{obj}/{record_id}")
    @guarded
    async def get_one(obj: str, record_id: str, request: Request) -> Response:
        check_object(obj)
        archived = _flag(request.query_params.get("archived"))
        with sim.lock:
            record = sim.hubspot_records[obj].get(int(record_id)) if record_id.isdigit() \
                else None
            if record is None or record.archived != archived:
                return _not_found()
            return JSONResponse(record_json(sim, obj, record, _property_names(request)))

    @app.patch("/crm/v3/objects/{obj}/{record_id}")
    @guarded
    async def update_one(obj: str, record_id: str, request: Request) -> Response:
        check_object(obj)
        props = (await body_of(request)).get("properties")
        if not isinstance(props, dict):
            raise _Invalid("properties must be an object")
        with sim.lock:
            record = sim.hubspot_records[obj].get(int(record_id)) if record_id.isdigit() \
                else None
            if record is None or record.archived:
                return _not_found()
            problems = _invalid_properties(sim, obj, props)
            if problems:
                raise _Invalid(_validation_message(problems))
            with sim.api_writes():
                sim.hubspot_update(obj, record_id, props)
            sim.record_updates("hubspot", 1)
            return JSONResponse(record_json(sim, obj, record, list(props)))

    # Deals and their associations: just what `suggest` reads (a deal's stage; the deals
    # associated with a company or contact). Registered before the generic object routes.
    @app.post("/crm/v3/objects/deals/batch/read")
    @guarded
    async def deals_batch_read(request: Request) -> Response:
        started = sim.now_ms()
        body = await body_of(request)
        ids = _batch_ids(body.get("inputs"))
        names = body.get("properties") or ["dealstage"]
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise _Invalid("properties must be a list of strings")
        results: list[dict[str, Any]] = []
        missing: list[str] = []
        with sim.lock:
            for raw in dict.fromkeys(ids):
                deal = sim.hubspot_deals.get(int(raw)) if raw.isdigit() else None
                if deal is None:
                    missing.append(raw)
                    continue
                results.append({"id": raw, "properties": {n: deal.get(n) for n in names},
                                "archived": False, "createdAt": hubspot_time(started),
                                "updatedAt": hubspot_time(started)})
        errors = [_batch_error("OBJECT_NOT_FOUND", "Could not get some DEAL objects, they may "
                               "be deleted or not exist. Check that ids are valid.", missing)
                  ] if missing else []
        return _batch_response(sim, results, errors, started)

    @app.post("/crm/v4/associations/{from_type}/{to_type}/batch/read")
    @guarded
    async def associations_batch_read(from_type: str, to_type: str,
                                      request: Request) -> Response:
        check_object(from_type)
        if to_type != "deals":
            raise _Invalid(f"the simulator associates {from_type} with deals only")
        started = sim.now_ms()
        ids = _batch_ids((await body_of(request)).get("inputs"))
        results: list[dict[str, Any]] = []
        with sim.lock:
            for raw in dict.fromkeys(ids):
                deals = sim.hubspot_deal_links.get((from_type, raw), [])
                if deals:  # HubSpot lists a record without associations in `errors`; we omit it
                    results.append({"from": {"id": raw}, "to": [
                        {"toObjectId": d, "associationTypes": [
                            {"category": "HUBSPOT_DEFINED", "typeId": 342, "label": None}]}
                        for d in deals]})
        return _batch_response(sim, results, [], started)

    @app.post("/crm/v3/objects/{obj}/batch/read")
    @guarded
    async def batch_read(obj: str, request: Request) -> Response:
        check_object(obj)
        started = sim.now_ms()
        body = await body_of(request)
        ids = _batch_ids(body.get("inputs"))
        if body.get("idProperty") not in (None, "", "hs_object_id"):
            raise _Invalid("the simulator reads by hs_object_id only")
        # Both lists are required by HubSpot's schema (BatchReadInputSimplePublicObjectId):
        # refusing a body without them keeps every test that talks to us honest.
        missing_fields = [m for m in ("properties", "propertiesWithHistory") if m not in body]
        if missing_fields:
            raise _Invalid("Invalid input JSON on line 1: Some required fields were not set: "
                           f"[{', '.join(missing_fields)}]")
        for member in ("properties", "propertiesWithHistory"):
            value = body[member]
            if not (isinstance(value, list) and all(isinstance(n, str) for n in value)):
                raise _Invalid(f"{member} must be a list of strings")
        names = body["properties"] or None
        results: list[dict[str, Any]] = []
        missing: list[str] = []
        with sim.lock:
            table = sim.hubspot_records[obj]
            for raw in dict.fromkeys(ids):  # HubSpot answers each id once
                record = table.get(int(raw)) if raw.isdigit() else None
                if record is None or record.archived:
                    missing.append(raw)
                else:
                    results.append(record_json(sim, obj, record, names))
        errors = []
        if missing:
            errors.append(_batch_error(
                "OBJECT_NOT_FOUND", f"Could not get some {HUBSPOT_OBJECT_LABEL[obj]} objects, "
                "they may be deleted or not exist. Check that ids are valid.", missing))
        return _batch_response(sim, results, errors, started)

    @app.post("/crm/v3/objects/{obj}/batch/update")
    @guarded
    async def batch_update(obj: str, request: Request) -> Response:
        check_object(obj)
        started = sim.now_ms()
        inputs = (await body_of(request)).get("inputs")
        ids = _batch_ids(inputs)
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise _Invalid(f"Duplicate IDs found in batch input: {dupes}. IDs must be unique")
        assert isinstance(inputs, list)
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        missing: list[str] = []
        with sim.lock:
            table = sim.hubspot_records[obj]
            for item in inputs:
                raw, props = str(item["id"]).strip(), item.get("properties")
                if not isinstance(props, dict):
                    raise _Invalid(f"inputs[id={raw}].properties must be an object")
                record = table.get(int(raw)) if raw.isdigit() else None
                if record is None or record.archived:
                    missing.append(raw)
                    continue
                problems = _invalid_properties(sim, obj, props)
                if problems:
                    errors.append(_batch_error("VALIDATION_ERROR",
                                               _validation_message(problems), [raw]))
                    continue
                with sim.api_writes():
                    sim.hubspot_update(obj, raw, props)
                results.append(record_json(sim, obj, record, list(props)))
            sim.record_updates("hubspot", len(results))
        if missing:
            errors.append(_batch_error(
                "OBJECT_NOT_FOUND", f"Could not update some {HUBSPOT_OBJECT_LABEL[obj]} "
                "objects, they may be deleted or not exist. Check that ids are valid.", missing))
        return _batch_response(sim, results, errors, started)

    @app.post("/crm/v3/objects/{obj}/search")
    @guarded
    async def search(obj: str, request: Request) -> Response:
        check_object(obj)
        return JSONResponse(_search(sim, obj, await body_of(request)))

    @app.get("/crm/v3/owners")
    @app.get("/crm/v3/owners/")  # the generated client's path
    @guarded
    async def owners(request: Request) -> Response:
        params = request.query_params
        limit = _int_param(params.get("limit"), 100, "limit", 1, OWNERS_MAX)
        after = _int_param(params.get("after"), 0, "after", 0, 2**31)
        archived = _flag(params.get("archived"))
        email = (params.get("email") or "").strip().lower()
        with sim.lock:
            rows = sorted((o for o in sim.hubspot_owners.values() if o.archived == archived
                           and (not email or (o.email or "").lower() == email)),
                          key=lambda o: (len(o.id), o.id))
            body: dict[str, Any] = {"results": [owner_json(o)
                                                for o in rows[after:after + limit]]}
        if after + limit < len(rows):
            body["paging"] = _next_page(request, str(after + limit))
        return JSONResponse(body)

    @app.get("/crm/v3/owners/{owner_id}")
    @guarded
    async def owner(owner_id: str, request: Request) -> Response:
        by_user = request.query_params.get("idProperty") == "userId"
        archived = _flag(request.query_params.get("archived"))
        with sim.lock:
            found = next((o for o in sim.hubspot_owners.values()
                          if (str(o.user_id) if by_user else o.id) == owner_id
                          and o.archived == archived), None)
            if found is None:
                return error(404, "OBJECT_NOT_FOUND", "Owner not found")
            return JSONResponse(owner_json(found))

    return app


def _not_found() -> JSONResponse:
    return error(404, "OBJECT_NOT_FOUND", "Object not found.  objectId are usually numeric.")


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
        status = sim.roll_error_status((429, 429, 500, 503))
        if status == 429:
            return rate_limited(sim, "TEN_SECONDLY_ROLLING")
        if status == 500:
            return error(500, "INTERNAL_ERROR", "internal error")
        return error(503, "SERVICE_UNAVAILABLE", "Service temporarily unavailable")
    return await call_next(request)


def _batch_ids(inputs: object) -> list[str]:
    if not isinstance(inputs, list):
        raise _Invalid("inputs must be a list")
    if len(inputs) > BATCH_MAX:
        raise _Invalid(f"Batch input must contain at most {BATCH_MAX} inputs, got "
                       f"{len(inputs)}")
    ids = []
    for item in inputs:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str | int):
            raise _Invalid("each input needs an id")
        ids.append(str(item["id"]).strip())
    return ids


def _batch_error(category: str, message: str, ids: list[str]) -> dict[str, Any]:
    # `errors` and `links` are required by hubspot-api-client's StandardError model.
    return {"status": "error", "category": category, "message": message,
            "context": {"ids": ids}, "errors": [], "links": {}}


def _batch_response(sim: Simulator, results: list[dict[str, Any]], errors: list[dict[str, Any]],
                    started: int) -> JSONResponse:
    body: dict[str, Any] = {"status": "COMPLETE", "results": results,
                            "startedAt": hubspot_time(started),
                            "completedAt": hubspot_time(sim.now_ms())}
    if not errors:
        return JSONResponse(body)
    body.update(errors=errors, numErrors=sum(len(e["context"]["ids"]) for e in errors))
    return JSONResponse(body, status_code=207)


# --- search ----------------------------------------------------------------------------------

def _key(ptype: str, raw: object) -> Any:
    """A property value as search compares it; None when unset (or unreadable)."""
    if raw is None or raw == "":
        return None
    text = str(raw).strip()
    if ptype == "number":
        return _number(text)
    if ptype == "datetime":
        return int(text) if text.isdigit() else parse_time(text)
    return text.casefold()


def _filter(sim: Simulator, obj: str, spec: object) -> Callable[[HubSpotRecord], bool]:
    if not isinstance(spec, dict):
        raise _Invalid("each filter must be an object")
    name, op = spec.get("propertyName"), str(spec.get("operator", "")).upper()
    if not isinstance(name, str) or name not in sim.hubspot_properties[obj]:
        raise _Invalid(f"There was a problem with the request: property {name!r} does not exist")
    ptype = sim.hubspot_properties[obj][name]

    def operand(value: object) -> Any:
        key = _key(ptype, value)
        if key is None:
            raise _Invalid(f"filter on {name}: {value!r} is not a valid {ptype} value")
        return key

    def have(record: HubSpotRecord) -> Any:
        return _key(ptype, record.properties.get(name))

    if op == "HAS_PROPERTY":
        return lambda r: have(r) is not None
    if op == "NOT_HAS_PROPERTY":
        return lambda r: have(r) is None
    if op in ("IN", "NOT_IN"):
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise _Invalid(f"operator {op} needs a non-empty `values` list")
        wanted = {operand(v) for v in values}
        return (lambda r: have(r) in wanted) if op == "IN" else \
            (lambda r: have(r) not in wanted)
    if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        pattern = str(spec.get("value", "")).casefold()
        positive = op == "CONTAINS_TOKEN"

        def contains(record: HubSpotRecord) -> bool:
            value = have(record)
            if value is None:
                return not positive
            # HubSpot splits text into words (case-insensitive) and matches the value against
            # each; `*` completes a partial one: `acm*` finds `ACME Corp.` and `The Acme Co`.
            # A pattern spanning words (`*@hubspot.com` on an email) matches the whole value.
            tokens = [t for t in _TOKEN_SPLIT.split(str(value)) if t]
            if "*" in pattern:
                found = fnmatch.fnmatchcase(str(value), pattern) or any(
                    fnmatch.fnmatchcase(t, pattern) for t in tokens)
            else:
                found = pattern in tokens
            return found == positive
        return contains
    if op == "BETWEEN":
        low, high = operand(spec.get("value")), operand(spec.get("highValue"))
        return lambda r: (v := have(r)) is not None and low <= v <= high
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "EQ": lambda a, b: a == b, "NEQ": lambda a, b: a != b,
        "LT": lambda a, b: a is not None and a < b, "LTE": lambda a, b: a is not None and a <= b,
        "GT": lambda a, b: a is not None and a > b, "GTE": lambda a, b: a is not None and a >= b,
    }
    if op not in compare:
        raise _Invalid(f"Unknown filter operator {op!r}")
    target, test = operand(spec.get("value")), compare[op]
    return lambda r: test(have(r), target)


def _search(sim: Simulator, obj: str, body: Mapping[str, Any]) -> dict[str, Any]:
    groups = body.get("filterGroups") or []
    if not isinstance(groups, list) or len(groups) > SEARCH_FILTER_GROUPS:
        raise _Invalid(f"filterGroups: at most {SEARCH_FILTER_GROUPS} groups")
    if sum(len(g.get("filters") or []) for g in groups if isinstance(g, dict)) \
            > SEARCH_FILTERS_TOTAL:
        raise _Invalid(f"filterGroups: at most {SEARCH_FILTERS_TOTAL} filters in total")
    limit = _int_param(_text(body.get("limit")), 10, "limit", 1, SEARCH_MAX)
    after = _int_param(_text(body.get("after")), 0, "after", 0, 2**31)
    if after >= SEARCH_WINDOW:
        raise _Invalid(f"after={after}: a search can page through at most {SEARCH_WINDOW} "
                       "results; narrow the query (e.g. by hs_lastmodifieddate or hs_object_id "
                       "windows)")
    names = body.get("properties") or None
    query = str(body.get("query") or "").casefold().strip()
    with sim.lock:
        predicates: list[list[Callable[[HubSpotRecord], bool]]] = []
        for group in groups:
            filters = group.get("filters") if isinstance(group, dict) else None
            if not isinstance(filters, list) or len(filters) > SEARCH_FILTERS_PER_GROUP:
                raise _Invalid("each filter group needs a list of at most "
                               f"{SEARCH_FILTERS_PER_GROUP} filters")
            predicates.append([_filter(sim, obj, f) for f in filters])
        rows = [r for r in sim.hubspot_records[obj].values() if not r.archived
                and (not predicates or any(all(p(r) for p in g) for g in predicates))
                and (not query or _matches_text(r, query))]
        rows = _sorted(sim, obj, rows, body.get("sorts") or [])
        page = rows[after:min(after + limit, SEARCH_WINDOW)]
        result: dict[str, Any] = {"total": len(rows),
                                  "results": [record_json(sim, obj, r, names) for r in page]}
    if after + len(page) < len(rows):
        result["paging"] = {"next": {"after": str(after + len(page))}}
    return result


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _matches_text(record: HubSpotRecord, query: str) -> bool:
    # The free-text `query` searches a handful of default text properties.
    fields = ("name", "domain", "website", "email", "firstname", "lastname", "company", "phone")
    return any(query in (record.properties.get(f) or "").casefold() for f in fields)


def _sorted(sim: Simulator, obj: str, rows: list[HubSpotRecord], sorts: Sequence[Any]
            ) -> list[HubSpotRecord]:
    """Rows by each sort in turn (unset values last), ties by id, as paging needs a total
    order."""
    rows = sorted(rows, key=lambda r: r.id)
    for sort in reversed(list(sorts)):
        name: object
        if isinstance(sort, str):
            name, descending = sort.lstrip("-"), sort.startswith("-")
        elif isinstance(sort, dict):
            name = sort.get("propertyName")
            descending = str(sort.get("direction", "ASCENDING")).upper() == "DESCENDING"
        else:
            raise _Invalid("sorts must be objects with propertyName and direction")
        if not isinstance(name, str) or name not in sim.hubspot_properties[obj]:
            raise _Invalid(f"cannot sort by unknown property {name!r}")
        ptype = sim.hubspot_properties[obj][name]
        keyed = [(_key(ptype, r.properties.get(name)), r) for r in rows]
        present = [(k, r) for k, r in keyed if k is not None]
        present.sort(key=lambda pair: pair[0], reverse=descending)
        rows = [r for _, r in present] + [r for k, r in keyed if k is None]
    return rows
