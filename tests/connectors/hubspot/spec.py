"""HubSpot's request schemas, read from hubspot-api-client's generated code (the client is
generated from HubSpot's published OpenAPI specs), to validate the requests we send.

Bodies: every model reachable from an endpoint's request model becomes a JSON Schema object:
its JSON names (`attribute_map`), types (`openapi_types`), enums (the setter's
`allowed_values`) and required members (the setters refuse None under client-side
validation). Query strings: the API method's documented parameters and their types.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

import jsonschema

# The spec types `PublicObjectSearchRequest.sorts` as an array of strings, but HubSpot's search
# guide and the API take objects: a known spec erratum (HubSpot/hubspot-api-python#236,
# hubspot-api-nodejs#9). A plain string sort is silently ignored by the live API.
ERRATA: dict[tuple[str, str], dict[str, Any]] = {
    ("PublicObjectSearchRequest", "sorts"): {
        "type": "array",
        "items": {"type": "object", "additionalProperties": False,
                  "required": ["propertyName", "direction"],
                  "properties": {"propertyName": {"type": "string"},
                                 "direction": {"enum": ["ASCENDING", "DESCENDING"]}}},
    },
}

_SCALARS = {"str": {"type": "string"}, "int": {"type": "integer"}, "float": {"type": "number"},
            "bool": {"type": "boolean"}, "object": {}, "datetime": {"type": "string"}}
_ALLOWED = re.compile(r"allowed_values = (\[.*?\])", re.S)

# Each endpoint the connector calls: (API class, method, request body model or None).
ENDPOINTS: dict[tuple[str, str], tuple[str, str, str | None]] = {
    ("GET", "list"): ("basic_api.BasicApi", "get_page_with_http_info", None),
    ("POST", "batch/read"): ("batch_api.BatchApi", "read_with_http_info",
                             "BatchReadInputSimplePublicObjectId"),
    ("POST", "batch/update"): ("batch_api.BatchApi", "update_with_http_info",
                               "BatchInputSimplePublicObjectBatchInput"),
    ("POST", "search"): ("search_api.SearchApi", "do_search_with_http_info",
                         "PublicObjectSearchRequest"),
}
OWNERS = ("owners_api.OwnersApi", "get_page_with_http_info")


def _package(obj: str) -> str:
    return f"hubspot.crm.{obj}"


def body_schema(package: str, model: str) -> dict[str, Any]:
    """The JSON Schema of `model` (a class in `package`.models), every reachable model in
    `$defs`."""
    models = importlib.import_module(f"{package}.models")
    config = importlib.import_module(f"{package}.configuration").Configuration()
    config.client_side_validation = True
    defs: dict[str, Any] = {}

    def of_type(owner: str, name: str, text: str) -> dict[str, Any]:
        if (owner, name) in ERRATA:
            return ERRATA[(owner, name)]
        list_of = re.fullmatch(r"list\[(.+)\]", text)
        if list_of:
            return {"type": "array", "items": of_type("", "", list_of.group(1))}
        dict_of = re.fullmatch(r"dict\(str, (.+)\)|dict\[str, (.+)\]", text)
        if dict_of:
            return {"type": "object",
                    "additionalProperties": of_type("", "", dict_of.group(1) or
                                                    dict_of.group(2))}
        if text in _SCALARS:
            return dict(_SCALARS[text])
        add(text)
        return {"$ref": f"#/$defs/{text}"}

    def add(name: str) -> None:
        if name in defs:
            return
        cls = getattr(models, name)
        defs[name] = {}  # reserved before recursing: models may refer to themselves
        props: dict[str, Any] = {}
        required: list[str] = []
        for attr, text in cls.openapi_types.items():
            json_name = cls.attribute_map[attr]
            schema = of_type(name, json_name, text)
            setter = getattr(cls, attr).fset
            allowed = _ALLOWED.search(inspect.getsource(setter))
            if allowed:
                schema = {**schema, "enum": ast.literal_eval(allowed.group(1))}
            props[json_name] = schema
            probe = cls.__new__(cls)
            probe.local_vars_configuration = config
            try:
                setter(probe, None)
            except ValueError:
                required.append(json_name)
        defs[name] = {"type": "object", "properties": props, "required": required,
                      "additionalProperties": False}

    add(model)
    return {"$ref": f"#/$defs/{model}", "$defs": defs}


def query_schema(api: type, method: str) -> dict[str, Any]:
    """The query string of `api.method` as parsed by `urllib.parse.parse_qs` (name -> list of
    values): only documented parameters, each value of its documented type."""
    fn: Callable[..., Any] = getattr(api, method)
    source = inspect.getsource(fn)
    doc = inspect.getdoc(fn) or ""
    names = dict(re.findall(r'query_params\.append\(\("(\w+)", local_var_params\["(\w+)"\]\)',
                            source))
    props: dict[str, Any] = {}
    for json_name, param in names.items():
        found = re.search(rf":type {param}: ([\w\[\]]+)", doc)
        text = found.group(1) if found else "str"
        many = text.startswith("list[")
        item = text[5:-1] if many else text
        pattern = {"int": "^-?[0-9]+$", "bool": "^(true|false)$"}.get(item, "")
        value = {"type": "string", **({"pattern": pattern} if pattern else {})}
        props[json_name] = {"type": "array", "items": value, "minItems": 1,
                            **({} if many else {"maxItems": 1})}
    return {"type": "object", "properties": props, "additionalProperties": False}


@functools.lru_cache(maxsize=64)
def schemas_for(method: str, path: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(query schema, body schema or None) of a HubSpot request; KeyError if we have none."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["crm", "v3", "owners"] and len(parts) == 3:
        module, cls = OWNERS[0].split(".")
        api = getattr(importlib.import_module(f"hubspot.crm.owners.api.{module}"), cls)
        return query_schema(api, OWNERS[1]), None
    if parts[:3] != ["crm", "v3", "objects"] or len(parts) < 4:
        raise KeyError(f"{method} {path}")
    obj, rest = parts[3], "/".join(parts[4:]) or "list"
    api_path, fn, model = ENDPOINTS[(method, rest)]
    module, cls = api_path.split(".")
    api = getattr(importlib.import_module(f"{_package(obj)}.api.{module}"), cls)
    body = body_schema(_package(obj), model) if model else None
    return query_schema(api, fn), body


def problems(method: str, path: str, query: dict[str, list[str]], body: Any) -> list[str]:
    """Every way one request breaks HubSpot's schema (empty when it conforms)."""
    query_spec, body_spec = schemas_for(method, path)
    found = [f"query: {e.message}" for e in
             jsonschema.Draft202012Validator(query_spec).iter_errors(query)]
    if body_spec is None:
        if body is not None:
            found.append("body: none expected")
    else:
        found += [f"body{_where(e)}: {e.message}" for e in
                  jsonschema.Draft202012Validator(body_spec).iter_errors(body)]
    return found


def _where(error: jsonschema.ValidationError) -> str:
    return "".join(f"[{p!r}]" for p in error.absolute_path)
