"""End to end against the local Salesforce simulator: real HTTPS with its own CA, real SOQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.salesforce.connector import SalesforceConnector, from_settings
from connectors.transport import Unlimited
from sync.ports import CrmUnavailable, QuotaExhausted
from tests.connectors.salesforce.builders import settings

simulator = pytest.importorskip("connectors.simulator", reason="the CRM simulator is not built")
schema = pytest.importorskip("connectors.simulator.schema")

ACCOUNTS = 2100  # more than one 2,000-record query page
AVA = schema.sf_id("005", 101)
GUS = schema.sf_id("005", 109)  # left the company: inactive
LEAD_QUEUE = schema.sf_id("00G", 199)


@pytest.fixture(scope="module")
def running() -> Iterator[object]:
    sim = simulator.Simulator(seed=7)
    sim.seed(companies=0, accounts=ACCOUNTS, leads=20, owners=10)
    with simulator.serve(sim) as served:
        yield served


@pytest.fixture
def sf(running, monkeypatch: pytest.MonkeyPatch) -> Iterator[SalesforceConnector]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", running.ca_bundle_path)
    running.sim.reset_daily()
    running.sim.clear_faults()
    sleeps: list[float] = []
    conn = from_settings(settings(SALESFORCE_INSTANCE_URL=running.salesforce_url,
                                  SALESFORCE_ACCESS_TOKEN=simulator.SALESFORCE_SESSION),
                         limiter=Unlimited(), transport_sleep=sleeps.append)
    yield conn
    conn.close()


def list_all(sf: SalesforceConnector, obj: str, *, expire_cursors: object = None) -> list:
    records, cursor, pages = [], None, 0
    while True:
        page = sf.list_records(obj, since=None, cursor=cursor)
        records += page.records
        pages += 1
        cursor = page.cursor
        if cursor is None:
            return records
        if expire_cursors is not None:
            expire_cursors.cursors.clear()


def test_given_the_simulator_then_a_listing_pages_over_https_through_every_account(running, sf):
    records = list_all(sf, "account")

    assert len(records) == ACCOUNTS
    assert {r.id for r in records} == set(running.sim.ids("salesforce", "Account"))
    stamps = [(r.modified_at, r.id) for r in records]
    assert stamps == sorted(stamps)
    assert sf.stats().calls == {("query", "200"): 1, ("queryMore", "200"): 1}
    used, cap = running.sim.salesforce_usage()
    assert sf.api_usage() == (used, cap)


def test_given_expired_server_cursors_then_the_listing_still_completes_exactly_once(
        running, sf):
    records = list_all(sf, "Account", expire_cursors=running.sim)

    assert len(records) == ACCOUNTS and len({r.id for r in records}) == ACCOUNTS
    # The expired cursor answered INVALID_QUERY_LOCATOR; a fresh keyset query took over.
    assert sf.stats().calls == {("query", "200"): 2, ("queryMore", "400"): 1}


def test_given_flaky_servers_and_locked_rows_then_retries_finish_the_work(running, sf):
    running.sim.configure_faults(error_rate=0.3, lock_error_rate=0.3)
    leads = running.sim.ids("salesforce", "Lead")[3:]

    results = sf.write_owners("Lead", dict.fromkeys(leads, AVA))
    listed = list_all(sf, "Lead")

    running.sim.clear_faults()
    assert len(listed) == len(running.sim.ids("salesforce", "Lead"))
    for result in results:
        if result.ok:
            assert running.sim.owner_of("salesforce", "Lead", result.id) == AVA
        else:  # still locked, or the server kept failing: either way worth another run
            assert result.retryable
    assert sum(r.ok for r in results) >= len(leads) // 2
    assert sf.stats().retries > 0


def test_given_owner_writes_then_the_simulator_applies_them_with_auto_assign_off(running, sf):
    leads = running.sim.ids("salesforce", "Lead")[:3]
    before = running.sim.stats("salesforce")["writes"]

    results = sf.write_owners("Lead", {leads[0]: AVA, leads[1]: GUS, leads[2]: LEAD_QUEUE})

    assert [r.ok for r in results] == [True, False, True]
    assert (results[1].error or "").startswith("INACTIVE_OWNER_OR_USER:")
    assert not results[1].retryable
    owners = sf.read_owners("Lead", [leads[0][:15], leads[1], leads[2]])
    assert owners == {leads[0][:15]: AVA, leads[1]: running.sim.owner_of("salesforce", "Lead",
                                                                         leads[1]),
                      leads[2]: LEAD_QUEUE}
    after = running.sim.stats("salesforce")["writes"]
    assert after["total"] == before["total"] + 1
    assert after["without_auto_assign_false"] == before["without_auto_assign_false"]


def test_given_users_and_queues_then_people_and_queues_are_told_apart(sf):
    users = {u.id: u for u in sf.users()}

    assert users[AVA].active and users[AVA].person
    assert not users[GUS].active
    assert users[LEAD_QUEUE].person is False and users[LEAD_QUEUE].active
    assert schema.sf_id("00G", 198) not in users  # a regular group is never an owner


def test_given_accounts_with_websites_then_domains_find_their_owner(running, sf):
    running.sim.salesforce_create("Account", {"Name": "Brien", "Website": "https://www.my-brien.com/x",
                                              "OwnerId": AVA})
    running.sim.salesforce_create("Account", {"Name": "Not Brien", "Website": "notmy-brien.com",
                                              "OwnerId": GUS})

    found = sf.accounts_by_domain(["eu.my-brien.com", "nowhere-at-all.example"])

    assert found == {"my-brien.com": AVA}


def test_given_company_names_then_accounts_with_a_word_starting_alike_are_found(running, sf):
    # company_match (docs/routing-file.md#company_match) narrows these; the CRM only has to
    # return every account a name could match: a word starting with the same three letters.
    running.sim.salesforce_create("Account", {"Name": "Zyxcorp, Inc.",
                                              "Website": "zyxcorp.example", "OwnerId": AVA})
    running.sim.salesforce_create("Account", {"Name": "The Zyxcorp Group",
                                              "Website": "https://zyx-group.example"})
    running.sim.salesforce_create("Account", {"Name": "Qwzzy O'Brien",
                                              "Website": "qwzzy.example"})
    running.sim.salesforce_create("Account", {"Name": "Zyxcorp Without Site"})

    found = sf.accounts_by_name(["ZYXCORP LLC", "qwz 100%", "x"])

    assert sorted(found) == [("Qwzzy O'Brien", "qwzzy.example"),
                             ("The Zyxcorp Group", "zyx-group.example"),
                             ("Zyxcorp, Inc.", "zyxcorp.example")]
    assert sf.accounts_by_name([]) == []


def test_given_the_daily_quota_runs_out_then_the_connector_stops_without_retrying(
        running, sf):
    used, _ = running.sim.salesforce_usage()
    running.sim.configure_limits(salesforce_daily=used + 2)
    try:
        sf.users()  # users and queues: the last two calls; Sforce-Limit-Info now says N/N
        with pytest.raises(QuotaExhausted, match="Sforce-Limit-Info"):
            sf.users()  # stopped before the call
        assert running.sim.salesforce_usage()[0] == used + 2
        # A fresh connector knows no usage yet: the org's 403 stops it after one call.
        sleeps: list[float] = []
        fresh = from_settings(settings(SALESFORCE_INSTANCE_URL=running.salesforce_url,
                                       SALESFORCE_ACCESS_TOKEN=simulator.SALESFORCE_SESSION),
                              limiter=Unlimited(), transport_sleep=sleeps.append)
        with pytest.raises(QuotaExhausted, match="REQUEST_LIMIT_EXCEEDED"):
            fresh.list_records("Lead", since=None, cursor=None)
        assert fresh.stats().calls == {("query", "403"): 1} and sleeps == []
        fresh.close()
    finally:
        running.sim.configure_limits(salesforce_daily=15_000)


def test_given_no_ca_bundle_then_tls_fails_once_with_a_clear_message(running, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    sleeps: list[float] = []
    conn = from_settings(settings(SALESFORCE_INSTANCE_URL=running.salesforce_url,
                                  SALESFORCE_ACCESS_TOKEN=simulator.SALESFORCE_SESSION),
                         limiter=Unlimited(), transport_sleep=sleeps.append)

    with pytest.raises(CrmUnavailable, match="REQUESTS_CA_BUNDLE"):
        conn.users()

    assert sleeps == []  # an untrusted certificate is not retried
    conn.close()
