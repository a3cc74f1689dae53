"""HubSpot connector against a loopback fake: paging, search windows, batches, retries, owners."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import redis

from connectors import registry
from connectors.hubspot.connector import DEFAULT_TIMEOUT, HubSpotConnector, from_settings
from connectors.settings import Settings
from connectors.transport import RETRY_AFTER_CAP_SECONDS, Unlimited
from sync.ports import (
    Connector,
    CredentialsError,
    CrmUnavailable,
    CrmUser,
    QuotaExhausted,
    WriteResult,
)
from tests.connectors.hubspot.fake_hubspot import (
    BASE_TIME,
    TOKEN,
    FakeHubSpot,
    RecordingLimiter,
    company,
    contact,
    fixture,
    ms,
    settings_for,
)
from tests.loopback import free_port

COMPANY_PROPS = ["name", "domain", "website", "industry", "numberofemployees", "annualrevenue",
                 "country", "state", "city", "zip", "phone", "hubspot_owner_id",
                 "hs_lastmodifieddate",
                 "createdate", "hs_object_id"]


def direct(fake: FakeHubSpot, sleeps: list[float] | None = None, **kw: object
           ) -> HubSpotConnector:
    """A connector whose search limit does not block (for tests that search a lot)."""
    kw.setdefault("limiter", RecordingLimiter())
    return HubSpotConnector(TOKEN, base_url=fake.url, search_limiter=Unlimited(),
                            transport_sleep=(sleeps if sleeps is not None else []).append,
                            **kw)  # type: ignore[arg-type]


def all_pages(conn: HubSpotConnector, obj: str, since: datetime | None) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = conn.list_records(obj, since=since, cursor=cursor)
        pages.append([r.id for r in page.records])
        cursor = page.cursor
        if cursor is None:
            return pages


# --- the port ---------------------------------------------------------------------------------


def test_given_the_connector_then_it_implements_the_port(connector: HubSpotConnector) -> None:
    assert isinstance(connector, Connector)
    assert connector.name == "hubspot"


def test_given_no_token_when_created_from_settings_then_credentials_error_names_the_setting(
) -> None:
    with pytest.raises(CredentialsError) as err:
        from_settings(settings_for("http://127.0.0.1:9", token=None))
    assert err.value.setting == "HUBSPOT_ACCESS_TOKEN"
    assert "not set" in str(err.value)


def test_given_a_connector_when_shown_then_the_token_never_appears(
    connector: HubSpotConnector,
) -> None:
    assert TOKEN not in repr(connector)
    assert TOKEN not in str(connector)


# --- listing ---------------------------------------------------------------------------------


def test_given_250_companies_when_listing_without_since_then_pages_of_100_follow_after(
    connector: HubSpotConnector, fake: FakeHubSpot,
) -> None:
    fake.add("companies", *(company(i) for i in range(1, 251)))

    pages = all_pages(connector, "Companies", since=None)

    assert [len(p) for p in pages] == [100, 100, 50]
    assert [i for p in pages for i in p] == [str(i) for i in range(1, 251)]
    gets = [r for r in fake.requests if r.path == "/crm/v3/objects/companies"]
    assert [r.query.get("after") for r in gets] == [None, ["100"], ["200"]]
    first = gets[0]
    assert first.method == "GET"
    assert first.query["limit"] == ["100"]
    assert first.query["archived"] == ["false"]
    assert first.query["properties"] == COMPANY_PROPS
    assert first.headers["authorization"] == f"Bearer {TOKEN}"


def test_given_a_listed_record_then_properties_and_aware_utc_times_are_returned(
    connector: HubSpotConnector, fake: FakeHubSpot,
) -> None:
    modified = datetime(2026, 3, 4, 5, 6, 7, 123000, tzinfo=UTC)
    fake.add("companies", company(7, modified, domain="acme.com", hubspot_owner_id="7001"))

    (record,) = connector.list_records("companies", since=None, cursor=None).records

    assert record.id == "7"
    assert record.object == "companies"
    assert record.properties["domain"] == "acme.com"
    assert record.properties["hubspot_owner_id"] == "7001"
    assert record.modified_at == modified
    assert record.created_at == BASE_TIME - timedelta(days=30)
    assert record.created_at is not None and record.created_at.tzinfo is UTC


def test_given_an_unknown_object_when_listing_then_value_error_lists_the_known_ones(
    connector: HubSpotConnector,
) -> None:
    with pytest.raises(ValueError, match="companies, contacts"):
        connector.list_records("deals", since=None, cursor=None)


def test_given_a_cursor_of_another_object_when_listing_then_it_is_refused(
    connector: HubSpotConnector, fake: FakeHubSpot,
) -> None:
    fake.add("companies", *(company(i) for i in range(1, 150)))
    cursor = connector.list_records("companies", since=None, cursor=None).cursor

    with pytest.raises(ValueError, match="cursor belongs to"):
        connector.list_records("contacts", since=None, cursor=cursor)


# --- search since a watermark ------------------------------------------------------------------


def test_given_since_when_listing_then_search_filters_gte_in_ms_sorted_ascending(
    connector: HubSpotConnector, fake: FakeHubSpot,
) -> None:
    fake.add("companies", *(company(i) for i in range(1, 11)))
    since = BASE_TIME + timedelta(minutes=4)

    page = connector.list_records("companies", since=since, cursor=None)

    assert [r.id for r in page.records] == [str(i) for i in range(4, 11)]
    assert page.cursor is None
    (search,) = fake.requests
    assert (search.method, search.path) == ("POST", "/crm/v3/objects/companies/search")
    assert search.body == {
        "filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate",
                                       "operator": "GTE", "value": str(ms(since))}]}],
        "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
        "properties": COMPANY_PROPS,
        "limit": 200,
    }


def test_given_since_when_listing_then_each_page_carries_the_search_total_and_a_list_none(
    fake: FakeHubSpot,
) -> None:
    fake.add("companies", *(company(i, BASE_TIME + timedelta(seconds=i)) for i in range(1, 451)))
    conn = direct(fake)

    first = conn.list_records("companies", since=BASE_TIME, cursor=None)
    listed = conn.list_records("companies", since=None, cursor=None)

    assert (len(first.records), first.total) == (199, 450)  # HubSpot's `total` for the query
    assert listed.total is None  # the list endpoint does not count
    conn.close()


def test_given_contacts_when_searching_since_then_the_contact_modified_property_is_used(
    connector: HubSpotConnector, fake: FakeHubSpot,
) -> None:
    fake.add("contacts", contact(1), contact(2))

    page = connector.list_records("CONTACTS", since=BASE_TIME, cursor=None)

    assert [r.id for r in page.records] == ["1", "2"]
    (search,) = fake.requests
    assert search.path == "/crm/v3/objects/contacts/search"
    assert search.body["filterGroups"][0]["filters"][0]["propertyName"] == "lastmodifieddate"
    assert page.records[0].modified_at == BASE_TIME + timedelta(minutes=1)


def test_given_more_than_10000_changed_records_when_searching_then_every_one_comes_once_in_order(
    fake: FakeHubSpot,
) -> None:
    # 10,250 records, 450 of them modified in the same millisecond across page boundaries,
    # and a fake that refuses any query deeper than 10,000 results, as HubSpot does.
    same = BASE_TIME + timedelta(hours=1)
    records = [company(i, BASE_TIME + timedelta(seconds=i), stamps=False)
               for i in range(1, 9801)]
    records += [company(i, same + timedelta(hours=3), stamps=False) for i in range(9801, 10251)]
    fake.add("companies", *records)
    conn = direct(fake)

    pages = all_pages(conn, "companies", since=BASE_TIME)
    got = [i for p in pages for i in p]

    assert len(got) == len(set(got)) == 10_250
    assert set(got) == {str(i) for i in range(1, 10_251)}
    assert got[:9800] == [str(i) for i in range(1, 9801)]  # oldest first
    searches = [r for r in fake.requests if r.path.endswith("/search")]
    assert all(not r.body.get("after") for r in searches)  # no query goes deep
    # The tie at one instant is paged by id, then the window moves past it.
    ties = [r for r in searches
            if r.body["sorts"] == [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]]
    assert len(ties) == 3
    assert ties[1].body["filterGroups"][0]["filters"][1] == {
        "propertyName": "hs_object_id", "operator": "GT", "value": "10000"}
    conn.close()


def test_given_records_at_the_page_boundary_instant_when_paging_then_they_are_held_back_once(
    fake: FakeHubSpot,
) -> None:
    # 199 distinct instants, then 3 records sharing the next: page 1 stops before them, and
    # page 2 starts at their instant.
    records = [company(i, BASE_TIME + timedelta(seconds=i)) for i in range(1, 200)]
    records += [company(i, BASE_TIME + timedelta(seconds=500)) for i in range(200, 203)]
    fake.add("companies", *records)
    conn = direct(fake)

    pages = all_pages(conn, "companies", since=BASE_TIME)

    assert [len(p) for p in pages] == [199, 3]
    cursor_body = fake.requests[1].body["filterGroups"][0]["filters"][0]
    assert cursor_body == {"propertyName": "hs_lastmodifieddate", "operator": "GTE",
                           "value": str(ms(BASE_TIME + timedelta(seconds=500)))}
    conn.close()


def test_given_a_record_modified_while_paging_then_none_is_skipped(fake: FakeHubSpot) -> None:
    fake.add("companies", *(company(i, BASE_TIME + timedelta(seconds=i)) for i in range(1, 401)))
    conn = direct(fake)
    first = conn.list_records("companies", since=BASE_TIME, cursor=None)
    # Record 5 changes: it moves to the end of the order. An offset would now skip one.
    fake.add("companies", company(5, BASE_TIME + timedelta(days=1)))

    rest = all_pages_from(conn, first.cursor)

    seen = [r.id for r in first.records] + rest
    assert set(seen) == {str(i) for i in range(1, 401)}
    assert seen.count("5") == 2  # seen again after its change, as a sweep should
    conn.close()


def all_pages_from(conn: HubSpotConnector, cursor: str | None) -> list[str]:
    out: list[str] = []
    while cursor is not None:
        page = conn.list_records("companies", since=BASE_TIME, cursor=cursor)
        out += [r.id for r in page.records]
        cursor = page.cursor
    return out


# --- batch reads -------------------------------------------------------------------------------


def test_given_missing_ids_when_reading_then_207_leaves_them_out_in_chunks_of_100(
    connector: HubSpotConnector, fake: FakeHubSpot,
) -> None:
    fake.add("companies", *(company(i) for i in range(1, 201)))
    ids = [str(i) for i in range(1, 251)]  # 201..250 do not exist

    records = connector.read_records("companies", ids)

    assert [r.id for r in records] == [str(i) for i in range(1, 201)]
    reads = [r for r in fake.requests if r.path == "/crm/v3/objects/companies/batch/read"]
    assert [len(r.body["inputs"]) for r in reads] == [100, 100, 50]
    assert reads[0].body["inputs"][0] == {"id": "1"}
    assert reads[0].body["properties"] == COMPANY_PROPS
    assert reads[0].query["archived"] == ["false"]


def test_given_records_when_reading_owners_then_unowned_is_none_and_missing_is_absent(
    connector: HubSpotConnector, fake: FakeHubSpot,
) -> None:
    fake.add("contacts", contact(1, hubspot_owner_id="7001"), contact(2, hubspot_owner_id=""))

    owners = connector.read_owners("contacts", ["1", "2", "3"])

    assert owners == {"1": "7001", "2": None}
    (read,) = fake.requests
    assert read.body["properties"] == ["hubspot_owner_id"]


# --- owner writes ------------------------------------------------------------------------------


def test_given_a_recorded_207_when_writing_owners_then_results_are_per_record(
    connector: HubSpotConnector, fake: FakeHubSpot,
) -> None:
    fake.then("/crm/v3/objects/companies/batch/update", 207, fixture("batch_update_207.json"))

    results = connector.write_owners("companies", {"101": "7001", "102": "7001"})

    assert results[0] == WriteResult("101", ok=True)
    assert results[1].id == "102" and not results[1].ok and not results[1].retryable
    assert "OBJECT_NOT_FOUND" in (results[1].error or "")
    (update,) = fake.requests
    assert update.body == {"inputs": [
        {"id": "101", "properties": {"hubspot_owner_id": "7001"}},
        {"id": "102", "properties": {"hubspot_owner_id": "7001"}}]}


def test_given_250_writes_with_bad_ones_when_207_then_only_those_fail(
    connector: HubSpotConnector, fake: FakeHubSpot,
) -> None:
    fake.invalid_owner_answer = "207"
    fake.owners = [fixture("owners_page.json")["results"][0]]
    fake.add("companies", *(company(i) for i in range(1, 250)))  # 250 does not exist
    owners = {str(i): "7001" for i in range(1, 251)}
    owners["17"] = "999"  # not an owner

    results = connector.write_owners("companies", owners)

    assert [r.id for r in results] == list(owners)
    assert {r.id for r in results if not r.ok} == {"17", "250"}
    assert all(not r.retryable for r in results)
    updates = [r for r in fake.requests if r.path.endswith("/batch/update")]
    assert [len(r.body["inputs"]) for r in updates] == [100, 100, 50]
    assert fake.objects["companies"]["18"]["properties"]["hubspot_owner_id"] == "7001"


def test_given_hubspot_rejects_a_whole_batch_for_one_input_then_the_rest_is_still_written(
    connector: HubSpotConnector, fake: FakeHubSpot, sleeps: list[float],
) -> None:
    fake.owners = [fixture("owners_page.json")["results"][0]]
    fake.add("companies", *(company(i) for i in range(1, 9)))
    owners = {str(i): "7001" for i in range(1, 9)}
    owners["6"] = "999"

    results = connector.write_owners("companies", owners)

    failed = [r for r in results if not r.ok]
    assert [r.id for r in failed] == ["6"]
    assert "VALIDATION_ERROR" in (failed[0].error or "") and not failed[0].retryable
    assert all(fake.objects["companies"][i]["properties"].get("hubspot_owner_id") == "7001"
               for i in owners if i != "6")
    assert sleeps == []  # 400 is never retried: halving is not retrying
    assert len(fake.requests) == 7  # 8 -> 4+4 -> 2+2 -> 1+1, and 4 and 2 that pass


def test_given_hubspot_down_when_writing_then_the_rest_is_reported_retryable_without_calls(
    fake: FakeHubSpot, sleeps: list[float],
) -> None:
    conn = direct(fake, sleeps, attempts=3)
    fake.then("/crm/v3/objects/companies/batch/update", 503, fixture("500.json"), times=3)
    owners = {str(i): "7001" for i in range(1, 151)}

    results = conn.write_owners("companies", owners)

    assert [r.id for r in results] == list(owners)
    assert all(not r.ok and r.retryable for r in results)
    assert "gave up after 3 attempts" in (results[0].error or "")
    assert len(fake.requests) == 3 and len(sleeps) == 2
    conn.close()


# --- retries and rate limits -------------------------------------------------------------------


def test_given_a_ten_secondly_429_with_retry_after_then_it_is_waited_out_and_retried(
    connector: HubSpotConnector, fake: FakeHubSpot, sleeps: list[float],
    limiter: RecordingLimiter,
) -> None:
    fake.add("companies", company(1))
    fake.then("/crm/v3/objects/companies", 429, fixture("429_ten_secondly.json"),
              {"Retry-After": "3", "X-HubSpot-RateLimit-Remaining": "0",
               "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}, times=2)

    page = connector.list_records("companies", since=None, cursor=None)

    assert [r.id for r in page.records] == ["1"]
    assert sleeps == [3.0, 3.0]  # Retry-After, not a blanket backoff
    assert 3.0 in limiter.pauses  # every worker sharing the bucket holds too
    assert len(fake.requests) == 3
    assert connector.stats().calls == {("companies.list", "429"): 2,
                                       ("companies.list", "200"): 1}
    assert connector.stats().retries == 2


def test_given_a_429_without_retry_after_then_the_reported_interval_is_waited(
    connector: HubSpotConnector, fake: FakeHubSpot, sleeps: list[float],
) -> None:
    fake.then("/crm/v3/objects/companies", 429, fixture("429_ten_secondly.json"),
              {"X-HubSpot-RateLimit-Interval-Milliseconds": "2500"})

    connector.list_records("companies", since=None, cursor=None)

    assert sleeps == [2.5]


def test_given_a_429_asking_a_day_then_the_shared_limiter_pauses_only_up_to_the_cap(
    connector: HubSpotConnector, fake: FakeHubSpot, sleeps: list[float],
    limiter: RecordingLimiter,
) -> None:
    # A broken or hostile Retry-After must not park every worker sharing the bucket for a day.
    fake.add("companies", company(1))
    fake.then("/crm/v3/objects/companies", 429, fixture("429_ten_secondly.json"),
              {"Retry-After": "86400"})

    connector.list_records("companies", since=None, cursor=None)

    assert limiter.pauses == [RETRY_AFTER_CAP_SECONDS]


def test_given_a_daily_429_then_quota_exhausted_is_raised_without_sleeping(
    connector: HubSpotConnector, fake: FakeHubSpot, sleeps: list[float],
) -> None:
    fake.then("/crm/v3/objects/companies", 429, fixture("429_daily.json"),
              {"X-HubSpot-RateLimit-Interval-Milliseconds": "86400000"})

    with pytest.raises(QuotaExhausted, match="daily"):
        connector.write_owners("companies", {"1": "7001"})

    assert sleeps == []
    assert len(fake.requests) == 1


def test_given_a_500_then_it_is_retried_once_and_succeeds(
    connector: HubSpotConnector, fake: FakeHubSpot, sleeps: list[float],
) -> None:
    fake.add("companies", company(1))
    fake.then("/crm/v3/objects/companies/batch/read", 500, fixture("500.json"))

    records = connector.read_records("companies", ["1"])

    assert [r.id for r in records] == ["1"]
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.5  # full jitter on the first backoff
    assert len(fake.requests) == 2


def test_given_a_400_then_it_is_not_retried(
    connector: HubSpotConnector, fake: FakeHubSpot, sleeps: list[float],
) -> None:
    fake.then("/crm/v3/objects/companies/search", 400, fixture("400_validation.json"))

    with pytest.raises(CrmUnavailable, match="VALIDATION_ERROR"):
        connector.list_records("companies", since=BASE_TIME, cursor=None)

    assert len(fake.requests) == 1
    assert sleeps == []


def test_given_a_wrong_token_then_credentials_error_names_the_setting_and_hides_the_token(
    fake: FakeHubSpot, sleeps: list[float],
) -> None:
    wrong = "pat-na1-00000000-dead-beef-0000-000000000000"
    body = fixture("401.json")
    body["message"] += f" (token {wrong})"  # even a vendor echoing it must not leak it
    fake.then("/crm/v3/owners", 401, body)
    conn = from_settings(settings_for(fake.url, token=wrong), limiter=RecordingLimiter(),
                         transport_sleep=sleeps.append)

    with pytest.raises(CredentialsError) as err:
        conn.users()

    assert err.value.setting == "HUBSPOT_ACCESS_TOKEN"
    assert "HUBSPOT_ACCESS_TOKEN" in str(err.value)
    assert "Authentication credentials not found" in str(err.value)
    chain: list[BaseException] = []
    exc: BaseException | None = err.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__
    assert len(chain) == 3  # ours, the transport's, the client's ApiException
    assert all(wrong not in str(e) and wrong not in repr(e) for e in chain)
    assert wrong not in repr(conn)
    assert sleeps == [] and len(fake.requests) == 1
    conn.close()


def test_given_missing_scopes_then_it_is_a_credentials_error(
    connector: HubSpotConnector, fake: FakeHubSpot,
) -> None:
    fake.then("/crm/v3/objects/companies/batch/update", 403, fixture("403_missing_scopes.json"))

    with pytest.raises(CredentialsError, match="MISSING_SCOPES"):
        connector.write_owners("companies", {"1": "7001"})


def test_given_a_success_reporting_no_calls_left_then_the_window_limiter_alone_paces(
    connector: HubSpotConnector, fake: FakeHubSpot, limiter: RecordingLimiter,
) -> None:
    # Our rolling-window limiter already knows the window is full; pausing a whole interval
    # on top would idle a third of a rate-limited sweep.
    fake.rate_headers["X-HubSpot-RateLimit-Remaining"] = "0"
    fake.rate_headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = "10000"

    connector.list_records("companies", since=None, cursor=None)

    assert limiter.pauses == []
    assert limiter.acquired == 1


def test_given_a_slow_answer_then_the_read_timeout_is_retried(
    fake: FakeHubSpot, sleeps: list[float],
) -> None:
    conn = direct(fake, sleeps, timeout=(1.0, 0.2))
    fake.add("companies", company(1))
    fake.then("/crm/v3/objects/companies", 200, {"results": []}, delay=1.0)

    page = conn.list_records("companies", since=None, cursor=None)

    assert [r.id for r in page.records] == ["1"]
    assert conn.stats().calls[("companies.list", "timeout")] == 1
    assert len(sleeps) == 1
    conn.close()


def test_given_a_crm_timeout_setting_when_created_through_the_registry_then_it_is_the_read_timeout(  # noqa: E501
    fake: FakeHubSpot, sleeps: list[float], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given: ACCOUNT_ROUTER_CRM_TIMEOUT_SECONDS far below the vendor default of 60 s, and an
    # answer slower than it (workers are subprocesses: the environment is how it reaches them).
    monkeypatch.setenv("ACCOUNT_ROUTER_CRM_TIMEOUT_SECONDS", "0.2")
    conn = registry.create("hubspot", settings_for(fake.url), limiter=RecordingLimiter(),
                           transport_sleep=sleeps.append)
    fake.add("companies", company(1))
    fake.then("/crm/v3/objects/companies", 200, {"results": []}, delay=1.0)

    # When: the connector lists companies.
    page = conn.list_records("companies", since=None, cursor=None)

    # Then: the slow call timed out at the setting (not after 60 s) and was retried.
    assert [r.id for r in page.records] == ["1"]
    assert conn.stats().calls[("companies.list", "timeout")] == 1
    conn.close()


def test_given_no_crm_timeout_setting_then_the_vendor_read_timeout_stays(
    fake: FakeHubSpot,
) -> None:
    conn = from_settings(settings_for(fake.url), limiter=RecordingLimiter())
    assert conn._timeout == DEFAULT_TIMEOUT
    conn.close()


def test_given_ca_settings_and_no_such_variables_when_created_then_the_client_trusts_the_setting(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given: the CA bundle comes from the settings object, the process environment has none.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    settings = settings_for(fake.url).model_copy(update={"ssl_cert_file": "/srv/ca/system.pem"})
    bundled = settings.model_copy(update={"requests_ca_bundle": "/srv/ca/bundle.pem"})

    # When: the connector is built from each.
    conns = [from_settings(s, limiter=RecordingLimiter()) for s in (settings, bundled)]

    # Then: every generated client verifies with the setting (REQUESTS_CA_BUNDLE first).
    try:
        assert {c.configuration.ssl_ca_cert for c in conns[0]._clients} == {"/srv/ca/system.pem"}
        assert {c.configuration.ssl_ca_cert for c in conns[1]._clients} == {"/srv/ca/bundle.pem"}
    finally:
        for conn in conns:
            conn.close()


def test_given_nothing_listening_then_connection_errors_are_retried_then_reported(
    sleeps: list[float],
) -> None:
    port = free_port()  # nothing listens: connections are refused
    conn = HubSpotConnector(TOKEN, base_url=f"http://127.0.0.1:{port}",
                            limiter=RecordingLimiter(), search_limiter=Unlimited(),
                            transport_sleep=sleeps.append, attempts=3)

    with pytest.raises(CrmUnavailable, match="gave up after 3 attempts") as err:
        conn.users()

    assert conn.stats().calls == {("owners.list", "connection"): 3}
    assert len(sleeps) == 2
    assert TOKEN not in str(err.value)
    conn.close()


# --- owners ------------------------------------------------------------------------------------


def test_given_active_archived_and_queue_owners_then_users_map_activity_and_type(
    connector: HubSpotConnector, fake: FakeHubSpot,
) -> None:
    fake.owners = fixture("owners_page.json")["results"] + \
        fixture("owners_archived_page.json")["results"]

    users = connector.users()

    assert users == [
        CrmUser("7001", active=True, person=True, email="ava@example.com", name="Ava Stone"),
        CrmUser("7002", active=True, person=False, email="smb-queue@example.com", name=None),
        CrmUser("7003", active=False, person=True, email="ben@example.com", name="Ben Ortiz"),
    ]
    assert [(r.path, r.query["archived"]) for r in fake.requests] == [
        ("/crm/v3/owners/", ["false"]), ("/crm/v3/owners/", ["true"])]


def test_given_many_owners_then_users_page_with_after(
    connector: HubSpotConnector, fake: FakeHubSpot,
) -> None:
    template = fixture("owners_page.json")["results"][0]
    fake.owners = [{**template, "id": str(8000 + i)} for i in range(150)]

    users = connector.users()

    assert len(users) == 150
    assert [r.query.get("after") for r in fake.requests] == [None, ["100"], None]


# --- lead-to-account matching -----------------------------------------------------------------


def test_given_domains_when_matching_accounts_then_in_filters_of_100_give_owned_companies(
    connector: HubSpotConnector, fake: FakeHubSpot,
) -> None:
    fake.add("companies",
             company(1, domain="acme.com", hubspot_owner_id="7001"),
             company(2, domain="acme.com", hubspot_owner_id="7002"),  # newer duplicate
             company(3, domain="globex.com"),  # no owner
             *(company(10 + i, domain=f"d{i}.com", hubspot_owner_id="7003")
               for i in range(120)))
    domains = ["https://www.Acme.com/about", "globex.com", "nobody.com"] + \
        [f"d{i}.com" for i in range(120)]

    owners = connector.accounts_by_domain(domains)

    assert owners["acme.com"] == "7001"
    assert "globex.com" not in owners and "nobody.com" not in owners
    assert owners["d119.com"] == "7003" and len(owners) == 121
    searches = [r.body for r in fake.requests]
    assert [len(b["filterGroups"][0]["filters"][0]["values"]) for b in searches] == [100, 23]
    assert searches[0]["filterGroups"][0]["filters"][0]["values"][:3] == [
        "acme.com", "globex.com", "nobody.com"]
    assert searches[0]["filterGroups"][0]["filters"][0]["operator"] == "IN"
    assert searches[0]["properties"] == ["domain", "hubspot_owner_id"]


def test_given_requests_then_each_goes_through_the_burst_bucket(
    connector: HubSpotConnector, fake: FakeHubSpot, limiter: RecordingLimiter,
) -> None:
    fake.add("companies", company(1))
    connector.list_records("companies", since=None, cursor=None)
    connector.list_records("companies", since=BASE_TIME, cursor=None)
    connector.read_records("companies", ["1"])

    assert limiter.acquired == 3
    assert json.loads(json.dumps(connector.stats().total)) == 3


def test_given_a_redis_url_then_both_buckets_are_shared_and_keyed_without_the_token(
    fake: FakeHubSpot, redis_url: str,
) -> None:
    settings = Settings(HUBSPOT_ACCESS_TOKEN=TOKEN, hubspot_base_url=fake.url,
                        redis_url=redis_url)
    conn = from_settings(settings)
    fake.add("companies", company(1))

    conn.list_records("companies", since=None, cursor=None)
    conn.list_records("companies", since=BASE_TIME, cursor=None)

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = sorted(client.keys("*"))
    client.close()
    assert [k.rsplit(":", 1)[1] for k in keys] == ["burst", "search"]
    assert all(k.startswith("ar:ratelimit:hubspot:") and TOKEN not in k for k in keys)
    conn.close()
