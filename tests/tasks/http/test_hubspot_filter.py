"""The HubSpot webhook filter follows the routing file the app serves: a property its
`field_maps` map, or a custom property its rules name (`fields.<x>`), routes the record when
it changes; an edit of the file is followed, a broken edit is not."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi.testclient import TestClient

from tests.tasks.test_http import RecordingEnqueue, event, post_hubspot

ROUTING = """version: 1
reps: [{{id: ana, crm_ids: {{hubspot: '101'}}}}]
field_maps: {{hubspot: {{companies: {{industry: acme_industry}}}}}}
rules:
  - {{name: tiered, when: {{fields.{custom}: {{eq: gold}}}}, assign: {{rep: ana}}}}
  - {{name: everyone, assign: {{rep: ana}}}}
"""


def edit(path: Path, text: str) -> None:
    """Write and move the mtime on, so the change shows even within one clock tick."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def changes(first_id: int, *properties: str) -> list[dict[str, object]]:
    return [event(first_id + i, 501 + i, "company.propertyChange", propertyName=name)
            for i, name in enumerate(properties)]


def test_given_field_maps_and_custom_fields_when_they_change_then_the_records_are_routed(
    client: TestClient, enqueue: RecordingEnqueue, routing_file: Path,
) -> None:
    edit(routing_file, ROUTING.format(custom="tier"))

    response = post_hubspot(client, changes(1, "acme_industry", "tier", "industry",
                                            "hs_lastmodifieddate", "country"))

    assert response.json() == {"accepted": 5, "duplicates": 0}
    # acme_industry (mapped), tier (a rule's field), country (still in the default map);
    # `industry` is no longer read, hs_lastmodifieddate never was.
    assert enqueue.calls == [("hubspot", "companies", ["501", "502", "505"], "webhook")]


def test_given_the_routing_file_edited_when_a_change_arrives_then_the_filter_follows_it(
    client: TestClient, enqueue: RecordingEnqueue, routing_file: Path,
) -> None:
    edit(routing_file, ROUTING.format(custom="tier"))
    post_hubspot(client, changes(1, "tier", "region"))

    edit(routing_file, ROUTING.format(custom="region"))
    post_hubspot(client, changes(11, "tier", "region"))

    edit(routing_file, "version: 1\nrules: [oops")  # broken: the previous version stays
    post_hubspot(client, changes(21, "tier", "region"))

    assert enqueue.calls == [("hubspot", "companies", ["501"], "webhook"),
                             ("hubspot", "companies", ["502"], "webhook"),
                             ("hubspot", "companies", ["502"], "webhook")]
