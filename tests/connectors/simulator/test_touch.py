"""The simulator learns first touch: `Simulator.touch` and `POST /__simulator__/touch` set each
object's touch field as the CRM would, and the connectors read it with the record."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime

import pytest
import requests

from connectors import registry
from connectors.settings import Settings
from connectors.simulator import RunningSimulator, Simulator, serve
from connectors.transport import Unlimited

AT = datetime(2026, 12, 7, 15, 30, tzinfo=UTC)
AT_MS = int(AT.timestamp() * 1000)


@pytest.fixture
def sim() -> Simulator:
    simulator = Simulator(5, clock=lambda: AT.timestamp())
    simulator.seed(companies=5, contacts=5, accounts=5, leads=5, sf_contacts=5, owners=3)
    return simulator


@pytest.fixture
def running(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSimulator]:
    with serve(sim) as started:
        for name, value in started.env().items():
            monkeypatch.setenv(name, value)
        yield started


def test_given_a_hubspot_record_when_touched_then_last_sales_activity_is_that_instant(sim):
    record_id = sim.ids("hubspot", "companies")[0]

    value = sim.touch("hubspot", "companies", record_id, at_ms=AT_MS)

    assert value == "2026-12-07T15:30:00.000Z"
    props = sim.hubspot_record("companies", record_id)
    assert props is not None and props["hs_last_sales_activity_timestamp"] == value


@pytest.mark.parametrize("obj", ["Account", "Contact"])
def test_given_a_salesforce_account_or_contact_when_touched_then_last_activity_date_is_set(
        sim, obj):
    record_id = sim.ids("salesforce", obj)[0]

    assert sim.touch("salesforce", obj, record_id, at_ms=AT_MS) == "2026-12-07"
    fields = sim.salesforce_record(obj, record_id)
    assert fields is not None and fields["LastActivityDate"] == "2026-12-07"


def test_given_a_lead_when_touched_then_its_status_moves_to_another_worked_status(sim):
    record_id = sim.ids("salesforce", "Lead")[0]
    before = sim.salesforce_record("Lead", record_id)
    assert before is not None

    after = sim.touch("salesforce", "Lead", record_id)

    assert after != before["Status"]
    again = sim.touch("salesforce", "Lead", record_id)
    assert again != after


def test_given_the_control_endpoint_when_touching_then_the_record_changes_and_bad_ids_are_400(
        sim, running):
    record_id = sim.ids("hubspot", "contacts")[0]
    url = f"{running.hubspot_url}/__simulator__/touch"

    ok = requests.post(url, json={"object": "contacts", "id": record_id, "at": AT_MS})
    missing = requests.post(url, json={"object": "contacts", "id": "999999"})
    shapeless = requests.post(url, json=["contacts"])

    assert ok.status_code == 200 and ok.json() == {"value": "2026-12-07T15:30:00.000Z"}
    assert missing.status_code == 400 and "999999" in missing.json()["error"]
    assert shapeless.status_code == 400


@pytest.mark.parametrize(("crm", "obj", "field"), [
    ("hubspot", "companies", "hs_last_sales_activity_timestamp"),
    ("salesforce", "Account", "LastActivityDate"),
    ("salesforce", "Lead", "Status"),
])
def test_given_a_touched_record_when_a_connector_reads_it_then_the_touch_field_comes_along(
        sim, running, crm, obj, field):
    record_id = sim.ids(crm, obj)[0]
    value = sim.touch(crm, obj, record_id, at_ms=AT_MS)

    with closing(registry.create_for(crm, None, Settings(), limiter=Unlimited())) as connector:
        [record] = connector.read_records(obj, [record_id])

    assert record.properties[field] == value


def test_given_a_routing_file_override_then_the_touch_field_is_its_choice():
    class _File:
        touch_fields = {"salesforce": {"lead": "LastActivityDate"}}

    class _Routing:
        file = _File()

    fields = registry.touch_fields("salesforce", _Routing())  # type: ignore[arg-type]

    assert fields == {"Account": "LastActivityDate", "Lead": "LastActivityDate",
                      "Contact": "LastActivityDate"}
    assert registry.touch_fields("hubspot", None) == {
        "companies": "hs_last_sales_activity_timestamp",
        "contacts": "hs_last_sales_activity_timestamp"}
