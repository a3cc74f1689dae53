"""The HTTP app: CRM webhooks in, record ids onto the queue; the ops API; POST /route.

See docs/operations.md#http-contract.

One router per concern (`hubspot`, `salesforce`, `ops`, `review`, `route`, `health`), shared
pieces in `common` (a leaf), the routing file the app serves in `routing`, `create_app` in `app`
assembling them, every uvicorn setting of `serve` in `server`."""

from __future__ import annotations

from tasks.http.app import BODY_TIMEOUT_SECONDS, ENQUEUE_THREADS, create_app
from tasks.http.common import MAX_BODY_BYTES, Enqueue, Rejected
from tasks.http.hubspot import HubSpotEvent, hubspot_signature_v3, parse_hubspot_events
from tasks.http.salesforce import parse_outbound_message, same_org

__all__ = [
    "BODY_TIMEOUT_SECONDS", "ENQUEUE_THREADS", "MAX_BODY_BYTES", "Enqueue", "HubSpotEvent",
    "Rejected", "create_app", "hubspot_signature_v3", "parse_hubspot_events",
    "parse_outbound_message", "same_org",
]
