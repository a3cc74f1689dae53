"""The simulator's owner changes: HubSpot webhook events with changeSource/sourceId, and
Salesforce's LastModifiedById, for a person's reassignment and for API writes."""

from __future__ import annotations

from connectors.simulator import Simulator
from connectors.simulator.data import SALESFORCE_INTEGRATION_USER
from connectors.simulator.schema import sf_id


def sim_at(ms: int = 1_765_000_000_000) -> Simulator:
    return Simulator(seed=1, clock=lambda: ms / 1000)


def test_given_a_person_reassigning_a_company_then_one_crm_ui_event_with_the_user():
    sim = sim_at()
    sim.seed(companies=3, contacts=1, accounts=0, leads=0, days=1)
    record = sim.ids("hubspot", "companies")[0]
    before = len(sim.owner_events())

    sim.reassign("hubspot", "companies", record, "103", by="5000177")

    [event] = sim.owner_events(after=before)
    assert event["subscriptionType"] == "company.propertyChange"
    assert event["objectId"] == int(record) and event["propertyName"] == "hubspot_owner_id"
    assert event["propertyValue"] == "103" and event["changeSource"] == "CRM_UI"
    assert event["sourceId"] == "userId:5000177"
    assert event["occurredAt"] == 1_765_000_000_000 and event["portalId"] == sim.hubspot_portal_id


def test_given_an_unchanged_owner_or_another_property_then_no_event():
    sim = sim_at()
    record = sim.hubspot_create("contacts", {"email": "a@b.com", "hubspot_owner_id": "101"})
    events = len(sim.owner_events())

    sim.hubspot_update("contacts", record, {"hubspot_owner_id": "101"})
    sim.hubspot_update("contacts", record, {"email": "c@d.com"})
    sim.reassign("hubspot", "contacts", record, None, by="1")  # cleared: an event, empty value

    [cleared] = sim.owner_events(after=events)
    assert cleared["subscriptionType"] == "contact.propertyChange"
    assert cleared["propertyValue"] == ""


def test_given_a_person_reassigning_an_account_then_last_modified_by_names_them():
    sim = sim_at()
    sim.seed(companies=0, contacts=0, accounts=2, leads=0, days=1)
    record = sim.ids("salesforce", "Account")[0]

    sim.reassign("salesforce", "Account", record, sf_id("005", 101), by=sf_id("005", 100))

    fields = sim.salesforce_record("Account", record)
    assert fields is not None
    assert fields["OwnerId"] == sf_id("005", 101)
    assert fields["LastModifiedById"] == sf_id("005", 100)
    assert sim.salesforce_api_user == SALESFORCE_INTEGRATION_USER  # what API writes set
