"""Salesforce Outbound Messages: SOAP from one org, acked only once their ids are queued.

See docs/operations.md#post-webhookssalesforcesecret.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET

import defusedxml.ElementTree as defused_et
from defusedxml import DefusedXmlException
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from connectors.registry import canonical_object
from connectors.settings import Settings
from tasks.http.common import MAX_EVENTS, Ctx, Rejected, same, secret_value

log = logging.getLogger("tasks.http")

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
SALESFORCE_ID_LENGTHS = (15, 18)
MIN_SECRET_LENGTH = 16
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")  # RFC 3986 unreserved: the same in every URL form
SOAP_ACK = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}"><soapenv:Body>'
    '<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
    "<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"
)

router = APIRouter(tags=["webhooks"])


def parse_outbound_message(body: bytes) -> tuple[str, dict[str, list[str]]]:
    """A Salesforce Outbound Message -> (organization id, {object: [record ids]})."""
    try:
        # defusedxml: a DTD is refused as soon as the parser meets it, whatever the body's
        # encoding (a UTF-16 body hides `<!DOCTYPE` from a byte search), so no entity is ever
        # expanded and nothing external is fetched. No DTD is ever legitimate here.
        root = defused_et.fromstring(body, forbid_dtd=True, forbid_entities=True,
                                     forbid_external=True)
    except DefusedXmlException as exc:
        raise Rejected(400, "DOCTYPE and entities are not accepted", "invalid") from exc
    # LookupError: an unknown `encoding=` in the XML declaration.
    except (ET.ParseError, ValueError, LookupError, RecursionError) as exc:
        raise Rejected(400, "body is not well-formed XML", "invalid") from exc
    found = [el for el in root.iter() if _local(el.tag) == "notifications"]
    if len(found) != 1:
        raise Rejected(400, "expected one <notifications> element", "invalid")
    message = found[0]
    org = next((el.text or "" for el in message if _local(el.tag) == "OrganizationId"), "")
    notifications = [el for el in message if _local(el.tag).lower() == "notification"]
    if not notifications or len(notifications) > MAX_EVENTS:
        raise Rejected(400, f"expected 1 to {MAX_EVENTS} notifications", "invalid")
    ids: dict[str, list[str]] = {}
    for i, note in enumerate(notifications):
        sobject = next((el for el in note if _local(el.tag) == "sObject"), None)
        if sobject is None:
            raise Rejected(400, f"notification {i}: no <sObject>", "invalid")
        try:
            obj = canonical_object("salesforce", sobject.get(XSI_TYPE, "").rpartition(":")[2])
        except ValueError as exc:
            raise Rejected(400, f"notification {i}: {exc}", "invalid") from exc
        record_id = next(((el.text or "").strip() for el in sobject if _local(el.tag) == "Id"), "")
        if len(record_id) not in SALESFORCE_ID_LENGTHS or not record_id.isalnum() \
                or not record_id.isascii():
            raise Rejected(400, f"notification {i}: <sf:Id> is not a Salesforce id", "invalid")
        if record_id not in ids.setdefault(obj, []):
            ids[obj].append(record_id)
    return org.strip(), ids


def _local(tag: object) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def same_org(given: str, expected: str) -> bool:
    """15- and 18-character ids name the same org when their first 15 characters match (the
    last 3 only encode the case of the first 15)."""
    if len(given) not in SALESFORCE_ID_LENGTHS or len(expected) not in SALESFORCE_ID_LENGTHS:
        return False
    return same(given[:15], expected[:15])


def usable_secret(settings: Settings) -> str | None:
    """ACCOUNT_ROUTER_SALESFORCE_WEBHOOK_SECRET when it can guard the endpoint, else None (the
    endpoint is off). It is a path segment of the URL Salesforce is given, since Outbound
    Messages cannot carry a custom header: so URL-safe, and long enough not to be guessed."""
    secret = secret_value(settings.salesforce_webhook_secret)
    if not secret or len(secret) < MIN_SECRET_LENGTH or not _URL_SAFE.fullmatch(secret):
        return None
    return secret


def warn_if_off(settings: Settings) -> None:
    """Say once, at start, why a configured Salesforce endpoint answers 404."""
    if (settings.salesforce_org_id or settings.salesforce_webhook_secret) \
            and usable_secret(settings) is None:
        log.warning("Salesforce webhook off: ACCOUNT_ROUTER_SALESFORCE_WEBHOOK_SECRET must be "
                    "set, at least %d characters of A-Z a-z 0-9 - . _ ~; give Salesforce "
                    "<public url>/webhooks/salesforce/<secret>", MIN_SECRET_LENGTH)


@router.post("/webhooks/salesforce/{secret}")
async def salesforce_webhook(request: Request, secret: str, ctx: Ctx) -> Response:
    settings = ctx.settings
    expected = usable_secret(settings)
    if expected is None:
        # Off without a secret: the org id alone is public, so anyone could have messages routed.
        raise Rejected(404, "Not Found", "off")
    try:
        if not same(secret, expected):
            raise Rejected(401, "wrong webhook secret", "unauthorized")
        body = await request.body()
        if not settings.salesforce_org_id:
            log.error("Salesforce webhook refused: SALESFORCE_ORG_ID is not set")
            raise Rejected(401, "organization cannot be verified", "unauthorized")
        org, batches = parse_outbound_message(body)
        if not same_org(org, settings.salesforce_org_id.strip()):
            raise Rejected(403, "message from another organization", "forbidden")
        await run_in_threadpool(ctx.hand_over, "salesforce", batches, "webhook")
    except Rejected as exc:
        ctx.count("salesforce", exc.result, 1)
        return exc.response()
    ctx.count("salesforce", "accepted", sum(len(ids) for ids in batches.values()))
    # Acked only now: without the ack Salesforce keeps retrying, so nothing is lost.
    return Response(SOAP_ACK, media_type="text/xml")
