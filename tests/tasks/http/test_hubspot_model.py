"""The HubSpot webhook delivery is validated by pydantic models (HubSpotEventIn in a bounded
list), whose JSON schema states the bounds the endpoint enforces."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tasks.http.common import MAX_EVENTS, Rejected
from tasks.http.hubspot import (
    HUBSPOT_DELIVERY,
    MAX_EPOCH_MS,
    MAX_INTEGER,
    MAX_NAME_LENGTH,
    HubSpotEvent,
    HubSpotEventIn,
    parse_hubspot_events,
)
from tests.tasks.test_http import event


def test_given_the_delivery_model_when_its_schema_is_rendered_then_it_states_the_bounds() -> None:
    schema = HUBSPOT_DELIVERY.json_schema(by_alias=True)
    item = schema["$defs"]["HubSpotEventIn"]
    props = item["properties"]

    assert schema["type"] == "array"
    assert schema["maxItems"] == MAX_EVENTS
    assert sorted(item["required"]) == ["eventId", "objectId", "occurredAt", "subscriptionType"]
    assert {"type": "integer", "minimum": 1, "maximum": MAX_INTEGER} in props["objectId"]["anyOf"]
    assert {"type": "string", "pattern": "^[0-9]{1,19}$"} in props["objectId"]["anyOf"]
    assert {"type": "integer", "minimum": 0, "maximum": MAX_EPOCH_MS} in (
        props["occurredAt"]["anyOf"])
    assert {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH} in (
        props["eventId"]["anyOf"])
    assert props["subscriptionType"]["maxLength"] == MAX_NAME_LENGTH


@pytest.mark.parametrize("body", [
    [event()] * (MAX_EVENTS + 1),
    [event(object_id=0)],
    [event(object_id=MAX_INTEGER + 1)],
    [{**event(), "objectId": "12a"}],
    [event(occurred_at=MAX_EPOCH_MS + 1)],
    [{**event(), "eventId": "x" * (MAX_NAME_LENGTH + 1)}],
    [{**event(), "subscriptionType": "company"}],
    [{k: v for k, v in event().items() if k != "occurredAt"}],
])
def test_given_a_delivery_outside_the_schema_when_parsed_then_the_endpoint_refuses_it_too(
    body: list[dict[str, object]],
) -> None:
    schema = HUBSPOT_DELIVERY.json_schema(by_alias=True)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, schema)

    with pytest.raises(Rejected) as refused:
        parse_hubspot_events(json.dumps(body).encode())

    assert refused.value.status == 400


def test_given_a_delivery_hubspot_sends_when_parsed_then_it_fits_the_schema_and_the_model() -> None:
    body = [event(1, 501, portalId=62515, appId=1, attemptNumber=0, changeSource="CRM"),
            # Ids and the instant as strings (some SDKs quote 64-bit numbers), a text event id.
            {**event(2, 502, "contact.propertyChange", propertyName="country",
                     propertyValue="DE"),
             "eventId": "9c2d", "objectId": "502", "occurredAt": str(MAX_EPOCH_MS)}]

    jsonschema.validate(body, HUBSPOT_DELIVERY.json_schema(by_alias=True))
    parsed = parse_hubspot_events(json.dumps(body).encode())

    assert parsed == [
        HubSpotEvent("501", "company.creation", "1", 1_763_999_990_000, None,
                     change_source="CRM"),
        HubSpotEvent("502", "contact.propertyChange", "9c2d", MAX_EPOCH_MS, "country",
                     property_value="DE", has_value=True),
    ]


@pytest.mark.parametrize(("field", "value"), [
    ("objectId", True), ("objectId", 501.0), ("eventId", False), ("occurredAt", 1.5),
])
def test_given_a_bool_or_float_for_an_integer_when_validated_then_the_strict_model_refuses(
    field: str, value: object,
) -> None:
    with pytest.raises(ValueError, match=field):
        HubSpotEventIn.model_validate({**event(), field: value})


def test_given_a_refused_huge_field_when_parsed_then_the_message_does_not_echo_it() -> None:
    body = json.dumps([event(), {**event(), "eventId": "secret" * 100_000}]).encode()

    with pytest.raises(Rejected) as refused:
        parse_hubspot_events(body)

    assert refused.value.message.startswith("event 1: eventId must be")
    assert "secret" not in refused.value.message
