"""HubSpot webhooks: odd events are refused with a 400 naming the event, never a 5xx, and
nothing unbounded is kept."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.tasks.test_http import RecordingEnqueue, event, post_hubspot


@pytest.mark.parametrize("odd", [
    {"eventId": "\ud800"},  # a lone surrogate: cannot be stored in Redis or SQLite
    {"eventId": "x" * 900_000},  # would be kept 24 h as a dedupe key
    {"eventId": 10**30},
    {"eventId": "a\x00b"},
    {"objectId": 10**3999},  # 4,000 digits
    {"objectId": "9" * 4000},
    {"objectId": 2**63},
    {"occurredAt": 10**20},
    {"subscriptionType": "company.\ud800"},
    {"subscriptionType": "contact.propertyChange", "propertyName": "\udfff"},
], ids=["surrogate-event-id", "900kb-event-id", "huge-int-event-id", "nul-event-id",
        "4000-digit-object-id", "4000-digit-string-object-id", "object-id-over-64-bits",
        "occurred-after-year-9999", "surrogate-type", "surrogate-property"])
def test_given_an_event_with_an_odd_field_when_posted_then_400_naming_it_and_nothing_enqueued(
    client: TestClient, enqueue: RecordingEnqueue, odd: dict[str, object],
) -> None:
    body = json.dumps([event(1), {**event(2), **odd}]).encode()

    response = post_hubspot(client, body)

    assert response.status_code == 400
    assert response.json()["error"].startswith("event 1: ")
    assert enqueue.calls == []
    # Nothing was marked seen either: the first event of the delivery is still new.
    assert post_hubspot(client, [event(1)]).json() == {"accepted": 1, "duplicates": 0}


def test_given_the_largest_64_bit_ids_when_posted_then_accepted(
    client: TestClient, enqueue: RecordingEnqueue,
) -> None:
    response = post_hubspot(client, [event(2**63 - 1, 2**63 - 1)])

    assert response.json() == {"accepted": 1, "duplicates": 0}
    assert enqueue.calls == [("hubspot", "companies", [str(2**63 - 1)], "webhook")]
