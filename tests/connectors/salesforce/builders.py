"""Tiny builders for Salesforce payloads and settings; recorded shapes live in fixtures/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from connectors.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"
INSTANCE = "https://acme.my.salesforce.com"
API = f"{INSTANCE}/services/data/v62.0"
QUERY_URL = f"{API}/query/"
COMPOSITE_URL = f"{API}/composite/sobjects"
TOKEN = "00DRM000000TOKEN!AQ0AQsecretAccessTokenValue"
PASSWORD = "hunter2-Very-Secret"
SECURITY_TOKEN = "SecTok3nXYZ987"
SOAP_LOGIN_URL = "https://login.salesforce.com/services/Soap/u/62.0"
JWT_TOKEN_URL = "https://login.salesforce.com/services/oauth2/token"


def fixture(name: str) -> Any:
    """A recorded payload: parsed JSON for .json files, text otherwise."""
    text = (FIXTURES / name).read_text(encoding="utf-8")
    return json.loads(text) if name.endswith(".json") else text


def settings(**values: Any) -> Settings:
    """Settings from explicit values only (the environment is cleared by conftest)."""
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def token_settings(**values: Any) -> Settings:
    return settings(**{"SALESFORCE_INSTANCE_URL": INSTANCE, "SALESFORCE_ACCESS_TOKEN": TOKEN,
                       **values})


def password_settings(**values: Any) -> Settings:
    return settings(**{"SALESFORCE_USERNAME": "router@acme.com", "SALESFORCE_PASSWORD": PASSWORD,
                       "SALESFORCE_SECURITY_TOKEN": SECURITY_TOKEN, **values})


def row(obj: str, record_id: str, **fields: Any) -> dict[str, Any]:
    """One query row as Salesforce sends it, `attributes` included."""
    return {"attributes": {"type": obj, "url": f"/services/data/v62.0/sobjects/{obj}/{record_id}"},
            "Id": record_id, **fields}


def page(rows: list[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"totalSize": len(rows), "done": next_url is None, "records": rows}
    if next_url is not None:
        body["nextRecordsUrl"] = next_url
    return body


def ok(record_id: str) -> dict[str, Any]:
    return {"id": record_id, "success": True, "errors": []}


def failed(code: str, message: str = "error") -> dict[str, Any]:
    return {"success": False, "errors": [{"statusCode": code, "message": message, "fields": []}]}


def sf_id(prefix: str, n: int) -> str:
    """An 18-character id: a 3-character key prefix (`00Q`), a number, `AAA`."""
    return f"{prefix}{n:012d}AAA"


def soql(call: Any) -> str:
    """The SOQL a recorded GET sent in its `q` parameter."""
    return parse_qs(urlparse(call.request.url).query)["q"][0]


def body(call: Any) -> Any:
    return json.loads(call.request.body)
