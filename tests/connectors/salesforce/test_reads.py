"""Salesforce reads: SOQL listings paged by nextRecordsUrl, reads by id, users, domains."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from connectors.salesforce import settings as vendor
from connectors.salesforce.connector import from_settings, website_like
from connectors.transport import Unlimited
from sync.ports import CrmUnavailable, CrmUser, QuotaExhausted
from tests.connectors.salesforce.builders import (
    INSTANCE,
    QUERY_URL,
    fixture,
    page,
    row,
    sf_id,
    soql,
    token_settings,
)

ACCOUNT_FIELDS = ", ".join(vendor.OBJECT_FIELDS["Account"])
NEXT = "/services/data/v62.0/query/01gRM000000ABCDYA4-2000"


# --- list_records -----------------------------------------------------------------------------

def test_given_two_pages_when_listing_then_the_cursor_follows_next_records_url(connector, rsps):
    rsps.get(QUERY_URL, json=fixture("query_accounts_page1.json"))
    rsps.get(f"{INSTANCE}{NEXT}", json=fixture("query_accounts_page2.json"))

    first = connector.list_records("Account", since=None, cursor=None)
    second = connector.list_records("Account", since=None, cursor=first.cursor)

    assert soql(rsps.calls[0]) == (f"SELECT {ACCOUNT_FIELDS} FROM Account "
                                   "ORDER BY SystemModstamp, Id")
    assert rsps.calls[1].request.url == f"{INSTANCE}{NEXT}"
    assert json.loads(first.cursor)["next"] == NEXT
    assert second.cursor is None
    assert [r.id for r in first.records + second.records] == [
        "001RM000004Ou1aYAC", "001RM000004Ou1bYAC", "001RM000004Ou1cYAC"]


def test_given_a_query_when_listing_then_every_page_carries_its_total_size(connector, rsps):
    rsps.get(QUERY_URL, json=fixture("query_accounts_page1.json"))
    rsps.get(f"{INSTANCE}{NEXT}", json=fixture("query_accounts_page2.json"))

    first = connector.list_records("Account", since=None, cursor=None)
    second = connector.list_records("Account", since=None, cursor=first.cursor)

    assert (first.total, second.total) == (3, 3)  # SOQL `totalSize`: the whole query's count


def test_given_a_row_then_the_record_keeps_its_fields_without_attributes_and_utc_times(
        connector, rsps):
    rsps.get(QUERY_URL, json=fixture("query_accounts_page1.json"))

    records = connector.list_records("Account", since=None, cursor=None).records

    acme, globex = records
    assert acme.object == "Account"
    assert "attributes" not in acme.properties
    assert acme.properties["Website"] == "https://www.acme.com"
    assert acme.properties["OwnerId"] == "005RM000001ZZZZYA4"
    assert acme.properties["NumberOfEmployees"] == 1200
    assert acme.created_at == datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    assert globex.modified_at == datetime(2026, 11, 25, 10, 0, 0, 250000, tzinfo=UTC)
    assert globex.modified_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(("since", "literal"), [
    (datetime(2026, 11, 25, 10, 0, 0, 999000, tzinfo=UTC), "2026-11-25T10:00:00+00:00"),
    (datetime(2026, 11, 25, 11, 30, tzinfo=timezone(timedelta(hours=1))),
     "2026-11-25T10:30:00+00:00"),
    (datetime(2026, 11, 25, 10, 0), "2026-11-25T10:00:00+00:00"),  # naive means UTC
])
def test_given_since_when_listing_then_soql_filters_on_system_modstamp(
        connector, rsps, since, literal):
    rsps.get(QUERY_URL, json=page([]))

    listed = connector.list_records("Account", since=since, cursor=None)

    assert soql(rsps.calls[0]) == (f"SELECT {ACCOUNT_FIELDS} FROM Account WHERE SystemModstamp "
                                   f">= {literal} ORDER BY SystemModstamp, Id")
    assert listed.records == [] and listed.cursor is None


def test_given_an_object_in_any_case_then_the_crm_spelling_and_its_fields_are_used(
        connector, rsps):
    rsps.get(QUERY_URL, json=page([row("Lead", "00QRM000001a001AAA", Email="x@acme.com")]))

    records = connector.list_records("lead", since=None, cursor=None).records

    assert soql(rsps.calls[0]).startswith(
        f"SELECT {', '.join(vendor.OBJECT_FIELDS['Lead'])} FROM Lead ")
    assert records[0].object == "Lead"


def test_given_an_unknown_object_then_value_error_and_no_call(connector, rsps):
    with pytest.raises(ValueError, match="Opportunity"):
        connector.list_records("Opportunity", since=None, cursor=None)
    assert len(rsps.calls) == 0


def test_given_an_expired_cursor_then_a_fresh_query_resumes_after_the_last_record(
        connector, rsps):
    # A sweep stopped by the daily quota resumes hours later: the server cursor is gone.
    rsps.get(QUERY_URL, json=fixture("query_accounts_page1.json"))
    first = connector.list_records("Account", since=None, cursor=None)
    rsps.get(f"{INSTANCE}{NEXT}", status=400, json=fixture("error_invalid_query_locator.json"))
    same_second = [
        row("Account", "001RM000004Ou1aYAC", SystemModstamp="2026-11-25T10:00:00.000+0000"),
        row("Account", "001RM000004Ou1bYAC", SystemModstamp="2026-11-25T10:00:00.250+0000"),
        row("Account", "001RM000004Ou1dYAC", SystemModstamp="2026-11-25T10:00:00.250+0000"),
        row("Account", "001RM000004Ou1cYAC", SystemModstamp="2026-11-25T10:05:00.000+0000"),
    ]
    rsps.get(QUERY_URL, json=page(same_second))

    resumed = connector.list_records("Account", since=None, cursor=first.cursor)

    assert soql(rsps.calls[2]) == (f"SELECT {ACCOUNT_FIELDS} FROM Account WHERE SystemModstamp "
                                   ">= 2026-11-25T10:00:00+00:00 ORDER BY SystemModstamp, Id")
    assert [r.id for r in resumed.records] == ["001RM000004Ou1dYAC", "001RM000004Ou1cYAC"]
    assert resumed.cursor is None


def test_given_a_bare_next_records_url_then_it_is_accepted_as_a_cursor(connector, rsps):
    rsps.get(f"{INSTANCE}{NEXT}", json=fixture("query_accounts_page2.json"))

    listed = connector.list_records("Account", since=None, cursor=NEXT)

    assert [r.id for r in listed.records] == ["001RM000004Ou1cYAC"]


@pytest.mark.parametrize("cursor", [
    "@evil.example/services/data/v62.0/query/x",
    json.dumps({"next": "https://evil.example/services/data/", "last": None}),
    "not json",
])
def test_given_a_cursor_that_is_not_an_instance_path_then_value_error_and_no_call(
        connector, rsps, cursor):
    # The session token goes wherever the cursor points: only instance paths are followed.
    with pytest.raises(ValueError, match="cursor"):
        connector.list_records("Account", since=None, cursor=cursor)
    assert len(rsps.calls) == 0


# --- read_records / read_owners -----------------------------------------------------------------

def test_given_450_ids_when_reading_then_three_id_in_queries_of_at_most_200(connector, rsps):
    ids = [sf_id("00Q", n) for n in range(450)]
    for start in (0, 200, 400):
        chunk = ids[start:start + 200]
        rsps.get(QUERY_URL, json=page([row("Lead", i, OwnerId="005RM000001AVAAYA4")
                                       for i in chunk if i != ids[7]]))

    records = connector.read_records("Lead", ids)

    sent = [soql(c) for c in rsps.calls]
    assert [q.count("'00Q") for q in sent] == [200, 200, 50]
    assert sent[0].startswith(f"SELECT {', '.join(vendor.OBJECT_FIELDS['Lead'])} FROM Lead "
                              f"WHERE Id IN ('{ids[0]}','{ids[1]}',")
    assert len(records) == 449 and ids[7] not in {r.id for r in records}


def test_given_15_character_and_malformed_ids_then_answers_use_the_asked_spelling(
        connector, rsps):
    long_id = "00QRM000001a001AAA"
    rsps.get(QUERY_URL, json=page([row("Lead", long_id, OwnerId="005RM000001AVAAYA4"),
                                   row("Lead", "00QRM000001a002AAA", OwnerId=None)]))

    owners = connector.read_owners("Lead", [long_id[:15], "00QRM000001a002AAA", "x' OR Id != '"])

    assert soql(rsps.calls[0]) == ("SELECT Id, OwnerId FROM Lead WHERE Id IN "
                                   "('00QRM000001a001','00QRM000001a002AAA')")
    assert owners == {long_id[:15]: "005RM000001AVAAYA4", "00QRM000001a002AAA": None}


def test_given_only_unknown_ids_then_nothing_is_sent(connector, rsps):
    assert connector.read_records("Lead", ["", "  ", "not-an-id"]) == []
    assert len(rsps.calls) == 0


# --- users -------------------------------------------------------------------------------------

def test_when_listing_users_then_users_are_people_and_queues_are_not(connector, rsps):
    rsps.get(QUERY_URL, json=fixture("users.json"))
    rsps.get(QUERY_URL, json=fixture("queues.json"))

    users = connector.users()

    assert soql(rsps.calls[0]) == "SELECT Id, Name, Email, IsActive FROM User"
    assert soql(rsps.calls[1]) == "SELECT Id, Name FROM Group WHERE Type = 'Queue'"
    assert users == [
        CrmUser("005RM000001AVAAYA4", active=True, person=True, email="ava@example.com",
                name="Ava Stone"),
        CrmUser("005RM000001BENAYA4", active=False, person=True, email="ben@example.com",
                name="Ben Ortiz"),
        CrmUser("005RM000001INTGYA4", active=True, person=True, email=None,
                name="Integration User"),
        CrmUser("00GRM000000QUEUEA1", active=True, person=False, name="Unassigned Leads"),
    ]


def test_given_more_users_than_a_page_then_query_more_fetches_the_rest(connector, rsps):
    more = "/services/data/v62.0/query/01gUSERS-2000"
    rsps.get(QUERY_URL, json=page([row("User", "005RM000001AVAAYA4", IsActive=True)], more))
    rsps.get(f"{INSTANCE}{more}", json=page([row("User", "005RM000001BENAYA4", IsActive=True)]))
    rsps.get(QUERY_URL, json=page([]))

    assert [u.id for u in connector.users()] == ["005RM000001AVAAYA4", "005RM000001BENAYA4"]


# --- accounts_by_domain -------------------------------------------------------------------------

def test_given_domains_then_like_clauses_are_escaped_by_format_soql(connector, rsps):
    rsps.get(QUERY_URL, json=page([
        row("Account", "001RM0000000001AAA", Website="https://www.my_co.com/", OwnerId="005A"),
        row("Account", "001RM0000000002AAA", Website="myxco.com", OwnerId="005B"),
    ]))

    found = connector.accounts_by_domain(["my_co.com", "WWW.Acme.com", "o'brien.com"])

    # `_` would be a LIKE wildcard; `o'brien.com` is no host name (the normalizer drops it).
    assert soql(rsps.calls[0]) == (
        "SELECT Id, Website, OwnerId FROM Account WHERE Website LIKE '%my\\_co.com%' "
        "OR Website LIKE '%acme.com%' ORDER BY CreatedDate, Id")
    assert found == {"my_co.com": "005A"}


def test_like_clauses_escape_quotes_and_wildcards():
    assert website_like(["o'brien.com", "100%.com"]) == (
        "Website LIKE '%o\\'brien.com%' OR Website LIKE '%100\\%.com%'")


def test_given_substring_and_subdomain_accounts_then_only_the_domain_or_its_parents_match(
        connector, rsps):
    rsps.get(QUERY_URL, json=page([
        row("Account", "001RM0000000001AAA", Website="notacme.com", OwnerId="005NOT"),
        row("Account", "001RM0000000002AAA", Website="http://acme.com", OwnerId="005OLD"),
        row("Account", "001RM0000000003AAA", Website="www.acme.com", OwnerId="005NEW"),
        row("Account", "001RM0000000004AAA", Website="us.acme.com", OwnerId="005US"),
        row("Account", "001RM0000000005AAA", Website="eu.acme.com/de", OwnerId="005EU"),
        row("Account", "001RM0000000006AAA", Website=None, OwnerId="005NONE"),
    ]))

    found = connector.accounts_by_domain(["eu.acme.com"])

    # One LIKE for the registered domain covers its subdomains.
    assert "Website LIKE '%acme.com%' ORDER BY" in soql(rsps.calls[0])
    # The lead's own domain and its parent; the oldest account wins a shared domain.
    assert found == {"eu.acme.com": "005EU", "acme.com": "005OLD"}


def test_given_many_domains_then_lookups_go_in_chunks(connector, rsps):
    domains = [f"company{n}.com" for n in range(120)]
    for _ in range(3):
        rsps.get(QUERY_URL, json=page([]))

    assert connector.accounts_by_domain(domains) == {}
    assert [soql(c).count("LIKE") for c in rsps.calls] == [50, 50, 20]


def test_given_no_usable_domain_then_nothing_is_sent(connector, rsps):
    assert connector.accounts_by_domain(["", "co.uk"]) == {}
    assert len(rsps.calls) == 0


# --- Sforce-Limit-Info --------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "usage"), [
    ("api-usage=18/5000", (18, 5000)),
    ("api-usage=25/5000; per-app-api-usage=17/250(appName=sample-connected-app)", (25, 5000)),
])
def test_given_sforce_limit_info_then_the_latest_usage_is_exposed(connector, rsps, header,
                                                                     usage):
    assert connector.api_usage() is None
    rsps.get(QUERY_URL, json=page([]), headers={"Sforce-Limit-Info": header})

    connector.list_records("Account", since=None, cursor=None)

    assert connector.api_usage() == usage


def test_given_usage_at_the_limit_then_the_next_call_stops_before_it_is_made(
        connector, rsps, sleeps):
    rsps.get(QUERY_URL, json=fixture("query_accounts_page1.json"),
             headers={"Sforce-Limit-Info": "api-usage=5000/5000"})
    first = connector.list_records("Account", since=None, cursor=None)

    with pytest.raises(QuotaExhausted, match="5000/5000"):
        connector.list_records("Account", since=None, cursor=first.cursor)

    assert len(rsps.calls) == 1 and sleeps == []


def test_given_one_attempt_when_the_org_answers_503_then_the_call_fails_without_a_retry(
        rsps, sleeps):
    # POST /route's connector (tasks/http/lookup.py): a form waits, so no retry loop.
    rsps.get(QUERY_URL, status=503, json=[{"errorCode": "SERVER_UNAVAILABLE", "message": "x"}])
    quick = from_settings(token_settings(), limiter=Unlimited(), transport_sleep=sleeps.append,
                          attempts=1)
    try:
        with pytest.raises(CrmUnavailable, match="gave up after 1 attempts"):
            quick.accounts_by_name(["Acme Corporation"])
    finally:
        quick.close()
    assert len(rsps.calls) == 1 and sleeps == []
