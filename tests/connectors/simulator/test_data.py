"""Seeded simulator data: owners of the example routing file, realistic records, Python API."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import yaml

from connectors.simulator import Simulator
from connectors.simulator.data import (
    HUBSPOT_ARCHIVED_OWNER,
    HUBSPOT_QUEUE_OWNER,
    SALESFORCE_LEAD_QUEUE,
    named_domains,
)
from connectors.simulator.schema import hubspot_time, normalize_sf_id, sf_id

ROUTING = Path(__file__).parents[3] / "config" / "examples" / "routing.yaml"
NOW = 1_795_600_000.0  # 2026-11-25


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def seeded(seed: int = 42, **counts: int) -> Simulator:
    sim = Simulator(seed, clock=Clock())
    sim.seed(**{"companies": 400, "accounts": 400, "leads": 300, "contacts": 100, **counts})
    return sim


def test_given_the_example_routing_file_when_seeded_then_every_rep_is_an_owner_in_both_crms():
    sim = seeded()
    reps = yaml.safe_load(ROUTING.read_text())["reps"]
    for rep in reps:
        owner = sim.hubspot_owners[rep["crm_ids"]["hubspot"]]
        user = sim.salesforce_record("User", rep["crm_ids"]["salesforce"])
        assert user is not None
        assert owner.email == user["Email"] == rep["email"]
        active = rep.get("active", True)
        assert owner.archived is not active and user["IsActive"] is active
        assert owner.type == "PERSON" and user["UserType"] == "Standard"


def test_given_seeded_owners_then_an_archived_owner_a_queue_owner_and_a_queue_group_exist():
    sim = seeded()
    assert sim.hubspot_owners[HUBSPOT_ARCHIVED_OWNER].archived
    assert sim.hubspot_owners[HUBSPOT_QUEUE_OWNER].type == "QUEUE"
    queue = sim.salesforce_record("Group", SALESFORCE_LEAD_QUEUE)
    assert queue is not None and queue["Type"] == "Queue" and queue["Id"].startswith("00G")
    for user_id in sim.ids("salesforce", "User"):
        assert len(user_id) == 18 and user_id.startswith("005")


def test_given_the_same_seed_and_clock_when_seeded_twice_then_the_data_is_identical():
    a, b = seeded(7), seeded(7)
    assert a.ids("hubspot", "companies") == b.ids("hubspot", "companies")
    for record_id in a.ids("salesforce", "Lead")[:50]:
        assert a.salesforce_record("Lead", record_id) == b.salesforce_record("Lead", record_id)
    assert seeded(8).hubspot_record("companies", "1001") != a.hubspot_record("companies", "1001")


def test_given_seeded_companies_then_most_have_no_owner_and_some_valid_stale_or_queue():
    sim = seeded(companies=1000)
    owners = Counter(sim.hubspot_record("companies", i)["hubspot_owner_id"]  # type: ignore[index]
                     for i in sim.ids("hubspot", "companies"))
    assert owners[None] > 600
    assert sum(n for o, n in owners.items() if o in {str(i) for i in range(100, 109)}) > 100
    assert owners["109"] + owners[HUBSPOT_ARCHIVED_OWNER] > 20
    assert owners[HUBSPOT_QUEUE_OWNER] > 10


def test_given_seeded_leads_then_some_belong_to_the_queue_and_some_to_inactive_users():
    sim = seeded()
    owners = Counter(sim.owner_of("salesforce", "Lead", i) for i in sim.ids("salesforce", "Lead"))
    assert owners[None] > 150
    assert owners[SALESFORCE_LEAD_QUEUE] > 10
    assert owners[sf_id("005", 109)] + owners[sf_id("005", 190)] > 5


def test_given_seeded_records_then_fields_look_like_a_real_crm():
    sim = seeded()
    companies = [sim.hubspot_record("companies", i) for i in sim.ids("hubspot", "companies")]
    industries = {c["industry"] for c in companies if c}
    assert {"HOSPITAL_HEALTH_CARE", "COMPUTER_SOFTWARE"} <= industries
    domains = {c["domain"] for c in companies if c}
    assert set(named_domains()) <= domains  # named accounts are present
    first = companies[0]
    assert first is not None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["createdate"] or "")
    assert first["hs_object_id"] == "1001"
    accounts = [sim.salesforce_record("Account", i) for i in sim.ids("salesforce", "Account")]
    assert any(a and a["NumberOfEmployees"] and a["NumberOfEmployees"] > 500 for a in accounts)
    assert {a["BillingCountry"] for a in accounts if a} >= {"United States", "US"}
    assert all(a and a["CreatedDate"] <= a["SystemModstamp"] <= NOW * 1000 for a in accounts)
    leads = [sim.salesforce_record("Lead", i) for i in sim.ids("salesforce", "Lead")]
    assert any(lead and (lead["Email"] or "").endswith("@gmail.com") for lead in leads)
    assert {lead["LeadSource"] for lead in leads if lead} >= {"Web", "Partner Referral"}


def test_given_a_record_when_its_owner_is_set_then_the_modification_time_moves_forward():
    clock = Clock()
    sim = Simulator(1, clock=clock)
    sim.seed(companies=5, accounts=5, leads=0)
    company = sim.ids("hubspot", "companies")[0]
    account = sim.ids("salesforce", "Account")[0]
    clock.t += 60
    sim.set_owner("hubspot", "companies", company, "101")
    sim.set_owner("salesforce", "Account", account, "005000000000101")
    props = sim.hubspot_record("companies", company)
    assert props is not None and props["hubspot_owner_id"] == "101"
    assert props["hs_lastmodifieddate"] == hubspot_time(int(clock.t * 1000))
    fields = sim.salesforce_record("Account", account)
    assert fields is not None and fields["OwnerId"] == "005000000000101AAA"  # stored as 18
    assert fields["SystemModstamp"] == int(clock.t * 1000)


def test_given_new_records_when_created_after_seeding_then_ids_continue_and_times_are_now():
    clock = Clock()
    sim = Simulator(1, clock=clock)
    sim.seed(companies=3, accounts=3, leads=0)
    clock.t += 5
    new = sim.hubspot_create("companies", {"name": "Late Co", "domain": "late.example",
                                           "custom_score": 7})
    assert new == "1004"
    props = sim.hubspot_record("companies", new)
    assert props is not None and props["custom_score"] == "7"  # HubSpot stores strings
    lead = sim.salesforce_create("Lead", {"LastName": "Ng", "Company": "Late Co"})
    assert lead == sf_id("00Q", 1) and lead.endswith("EAA")  # the real checksum: Q is upper


def test_given_ids_when_normalized_then_15_and_18_character_forms_agree():
    assert normalize_sf_id("005000000000101") == "005000000000101AAA"
    assert normalize_sf_id("00Q000000000001") == "00Q000000000001EAA"
    assert normalize_sf_id("00Q000000000001EAA") == "00Q000000000001EAA"
    assert normalize_sf_id("00Q000000000001AAA") is None  # wrong checksum
    assert normalize_sf_id("not-an-id") is None
