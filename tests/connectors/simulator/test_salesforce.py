"""The Salesforce simulator, driven by simple-salesforce 1.12 and raw HTTP over its test-CA TLS."""

from __future__ import annotations

import base64
import json
import re
import ssl
import time
from collections.abc import Iterator

import httpx
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from simple_salesforce import Salesforce, format_soql
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)

from connectors.simulator import SALESFORCE_SESSION, RunningSimulator, Simulator, serve
from connectors.simulator.data import SALESFORCE_LEAD_QUEUE, SALESFORCE_REGULAR_GROUP
from connectors.simulator.schema import sf_id

ACTIVE, INACTIVE = sf_id("005", 101), sf_id("005", 109)


def update(record_type: str, record_id: str, **fields: object) -> dict[str, object]:
    return {"attributes": {"type": record_type}, "id": record_id, **fields}


def write(sf: Salesforce, records: list[dict[str, object]], *, all_or_none: bool = False,
          auto_assign: bool = True) -> list[dict[str, object]]:
    headers = {"Sforce-Auto-Assign": "FALSE"} if auto_assign else {}
    result = sf.restful("composite/sobjects", method="PATCH", headers=headers,
                        json={"allOrNone": all_or_none, "records": records})
    assert isinstance(result, list)
    return [json.loads(json.dumps(r)) for r in result]  # OrderedDicts -> dicts


@pytest.fixture
def big(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Simulator, Salesforce]]:
    """2,100 accounts: more than one 2,000-record SOQL page."""
    simulator = Simulator(11)
    simulator.seed(companies=0, accounts=2100, leads=0)
    with serve(simulator) as served:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", served.ca_bundle_path)
        yield simulator, Salesforce(instance_url=served.salesforce_url,
                                    session_id=SALESFORCE_SESSION, version="61.0")


# --- query --------------------------------------------------------------------------------------

def test_given_more_than_2000_records_when_queried_then_pages_of_2000_with_next_records_url(
        big: tuple[Simulator, Salesforce]):
    sim, sf = big
    first = sf.query("SELECT Id, Name, OwnerId, SystemModstamp FROM Account")
    assert first["totalSize"] == 2100 and first["done"] is False
    assert len(first["records"]) == 2000
    assert re.fullmatch(r"/services/data/v61\.0/query/01g\w{12}-2000", first["nextRecordsUrl"])
    record = first["records"][0]
    assert record["attributes"] == {"type": "Account",
                                    "url": f"/services/data/v61.0/sobjects/Account/{record['Id']}"}
    assert list(record)[1:] == ["Id", "Name", "OwnerId", "SystemModstamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000", record["SystemModstamp"])
    ids = [r["Id"] for r in sf.query_all_iter("SELECT Id FROM Account ORDER BY Id")]
    assert ids == sorted(sim.ids("salesforce", "Account"))
    calls = sim.stats("salesforce")["calls"]
    assert calls["GET /services/data/vXX.X/query/{locator}"] == {"200": 1}


def test_given_a_batch_size_header_when_queried_then_pages_follow_it(
        big: tuple[Simulator, Salesforce]):
    _, sf = big
    headers = {"Sforce-Query-Options": "batchSize=500"}
    page = sf.query("SELECT Id FROM Account", headers=headers)
    sizes = [len(page["records"])]
    while not page["done"]:
        page = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True, headers=headers)
        sizes.append(len(page["records"]))
    assert sizes == [500, 500, 500, 500, 100]


def test_given_an_incremental_soql_when_queried_then_only_newer_records_in_modstamp_order(
        sf: Salesforce, sim: Simulator):
    stamps = sorted((r["SystemModstamp"], r["Id"]) for r in
                    (sim.salesforce_record("Lead", i) for i in sim.ids("salesforce", "Lead"))
                    if r)
    cut_ms = stamps[60][0]
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut_ms // 1000)) + "Z"
    soql = format_soql("SELECT Id, OwnerId, SystemModstamp FROM Lead WHERE SystemModstamp >= "
                       "{:literal} ORDER BY SystemModstamp, Id", since)
    got = [r["Id"] for r in sf.query_all(soql)["records"]]
    assert got == [i for stamp, i in stamps if stamp >= cut_ms // 1000 * 1000]


def test_given_deleted_records_when_queried_then_only_query_all_sees_them(
        sf: Salesforce, sim: Simulator):
    gone = sim.ids("salesforce", "Account")[0]
    sim.salesforce_delete("Account", gone)
    soql = format_soql("SELECT Id, IsDeleted FROM Account WHERE Id = {}", gone)
    assert sf.query(soql)["totalSize"] == 0
    assert sf.query_all(soql, include_deleted=True)["records"][0]["IsDeleted"] is True


def test_given_count_and_users_and_queues_when_queried_then_answers_like_salesforce(
        sf: Salesforce):
    unowned = sf.query("SELECT COUNT() FROM Lead WHERE OwnerId = null")
    assert unowned["records"] == [] and unowned["totalSize"] > 0
    users = sf.query("SELECT Id, Name, Email, IsActive FROM User WHERE IsActive = false")
    assert {u["Name"] for u in users["records"]} == {"Gus Lind", "Olive Grant"}
    queues = sf.query("SELECT Id, Name FROM Group WHERE Type = 'Queue'")["records"]
    assert [q["Id"] for q in queues] == [SALESFORCE_LEAD_QUEUE]


@pytest.mark.parametrize(("soql", "code"), [
    ("SELECT Id, Nope FROM Account", "INVALID_FIELD"),
    ("SELECT Id FROM Opportunityy", "INVALID_TYPE"),
    ("SELECT Id FROM Account WHERE SystemModstamp > '2026-01-01T00:00:00Z'",
     "INVALID_QUERY_FILTER_OPERATOR"),
    ("SELEKT Id FROM Account", "MALFORMED_QUERY"),
])
def test_given_a_bad_soql_when_queried_then_400_with_the_error_code(sf: Salesforce, soql, code):
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query(soql)
    assert caught.value.content[0]["errorCode"] == code


def test_given_an_unknown_query_locator_when_paging_then_400_invalid_query_locator(
        sf: Salesforce):
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query_more("/services/data/v59.0/query/01g000000009999-2000", identifier_is_url=True)
    assert caught.value.content[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


# --- composite writes ---------------------------------------------------------------------------

def test_given_owner_writes_when_patched_then_per_record_results_and_valid_ones_applied(
        sf: Salesforce, sim: Simulator):
    a, b, c, d, e = sim.ids("salesforce", "Account")[:5]
    lead1, lead2 = sim.ids("salesforce", "Lead")[:2]
    gone = sim.ids("salesforce", "Account")[5]
    sim.salesforce_delete("Account", gone)
    before = sim.salesforce_record("Account", a)
    results = write(sf, [
        update("Account", a, OwnerId=ACTIVE),
        update("Account", b, OwnerId=INACTIVE),
        update("Account", c, OwnerId=sf_id("005", 555)),  # no such user
        update("Account", d, OwnerId=SALESFORCE_LEAD_QUEUE),  # queues own leads only
        update("Lead", lead1, OwnerId=SALESFORCE_LEAD_QUEUE),
        update("Lead", lead2, OwnerId=SALESFORCE_REGULAR_GROUP),
        update("Account", e, OwnerId=ACTIVE[:15]),  # a 15-character id is fine
        update("Account", gone, OwnerId=ACTIVE),
        update("Account", "001nope", OwnerId=ACTIVE),
    ])
    codes = [r["errors"][0]["statusCode"] if r["errors"] else None for r in results]
    assert codes == [None, "INACTIVE_OWNER_OR_USER", "INVALID_CROSS_REFERENCE_KEY",
                     "INVALID_CROSS_REFERENCE_KEY", None, "INVALID_CROSS_REFERENCE_KEY", None,
                     "ENTITY_IS_DELETED", "INVALID_ID_FIELD"]
    assert results[0] == {"id": a, "success": True, "errors": []}
    assert results[2]["errors"][0] == {"statusCode": "INVALID_CROSS_REFERENCE_KEY",
                                       "message": "invalid cross reference id",
                                       "fields": ["OwnerId"]}
    assert sim.owner_of("salesforce", "Account", a) == ACTIVE
    assert sim.owner_of("salesforce", "Account", e) == ACTIVE
    assert sim.owner_of("salesforce", "Lead", lead1) == SALESFORCE_LEAD_QUEUE
    after = sim.salesforce_record("Account", a)
    assert before and after and after["SystemModstamp"] >= before["SystemModstamp"]
    assert sim.stats("salesforce")["records_updated"] == 3


def test_given_all_or_none_when_one_record_fails_then_nothing_is_applied(
        sf: Salesforce, sim: Simulator):
    a, b = sim.ids("salesforce", "Account")[:2]
    owner_a = sim.owner_of("salesforce", "Account", a)
    results = write(sf, [update("Account", a, OwnerId=ACTIVE),
                         update("Account", b, OwnerId=INACTIVE)], all_or_none=True)
    assert [r["errors"][0]["statusCode"] for r in results] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK", "INACTIVE_OWNER_OR_USER"]
    assert sim.owner_of("salesforce", "Account", a) == owner_a


def test_given_more_than_200_records_when_patched_then_400_exceeded_id_limit(
        sf: Salesforce, sim: Simulator):
    account = sim.ids("salesforce", "Account")[0]
    with pytest.raises(SalesforceMalformedRequest) as caught:
        write(sf, [update("Account", account, OwnerId=ACTIVE)] * 201)
    assert caught.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


@pytest.mark.parametrize(("fields", "code"), [
    ({"OwnerIdd": ACTIVE}, "INVALID_FIELD"),
])
def test_given_an_unknown_field_when_patched_then_the_whole_call_is_refused(
        sf: Salesforce, sim: Simulator, fields, code):
    account = sim.ids("salesforce", "Account")[0]
    with pytest.raises(SalesforceMalformedRequest) as caught:
        write(sf, [update("Account", account, **fields)])
    assert caught.value.content[0]["errorCode"] == code


def test_given_a_read_only_field_when_patched_then_that_record_fails(sf: Salesforce,
                                                                     sim: Simulator):
    account = sim.ids("salesforce", "Account")[0]
    result = write(sf, [update("Account", account, SystemModstamp="2026-01-01T00:00:00Z")])
    assert result[0]["errors"][0]["statusCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"


def test_given_writes_with_and_without_auto_assign_false_when_counted_then_stats_tell(
        sf: Salesforce, sim: Simulator):
    account = sim.ids("salesforce", "Account")[0]
    write(sf, [update("Account", account, OwnerId=ACTIVE)])
    write(sf, [update("Account", account, OwnerId=ACTIVE)])
    assert sim.stats("salesforce")["writes"] == {"total": 2, "without_auto_assign_false": 0}
    write(sf, [update("Account", account, OwnerId=ACTIVE)], auto_assign=False)
    sf.Account.update(account, {"OwnerId": ACTIVE})  # no header either
    assert sim.stats("salesforce")["writes"] == {"total": 4, "without_auto_assign_false": 2}


def test_given_lock_faults_when_patched_then_records_fail_with_unable_to_lock_row(
        sf: Salesforce, sim: Simulator):
    accounts = sim.ids("salesforce", "Account")[:100]
    sim.configure_faults(lock_error_rate=1.0)
    results = write(sf, [update("Account", a, OwnerId=ACTIVE) for a in accounts[:2]])
    assert results[0]["errors"] == [{
        "statusCode": "UNABLE_TO_LOCK_ROW", "fields": [],
        "message": "unable to obtain exclusive access to this record or 1 records: "
                   f"{accounts[0]}"}]
    sim.configure_faults(lock_error_rate=0.3)
    results = write(sf, [update("Account", a, OwnerId=ACTIVE) for a in accounts])
    locked = sum(1 for r in results if not r["success"])
    assert 15 <= locked <= 45
    assert all(r["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW" for r in results
               if not r["success"])
    applied = sum(1 for a in accounts if sim.owner_of("salesforce", "Account", a) == ACTIVE)
    assert applied >= 100 - locked


# --- sobjects, limits, quota, auth ----------------------------------------------------------------

def test_given_one_record_when_patched_and_read_then_204_and_the_new_owner(sf: Salesforce,
                                                                          sim: Simulator):
    lead = sim.ids("salesforce", "Lead")[0]
    status = sf.Lead.update(lead, {"OwnerId": ACTIVE}, headers={"Sforce-Auto-Assign": "FALSE"})
    assert status == 204
    assert sf.Lead.get(lead)["OwnerId"] == ACTIVE
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Lead.update(lead, {"OwnerId": INACTIVE})
    assert caught.value.content[0]["errorCode"] == "INACTIVE_OWNER_OR_USER"


def test_given_calls_when_made_then_limits_and_sforce_limit_info_report_usage(
        sf: Salesforce, sim: Simulator):
    sf.query("SELECT Id FROM Account LIMIT 1")
    limits = sf.limits()
    assert limits["DailyApiRequests"] == {"Max": 15000, "Remaining": 15000 - 2}
    assert sf.api_usage["api-usage"].used == 2 and sf.api_usage["api-usage"].total == 15000


def test_given_the_daily_quota_when_spent_then_403_request_limit_exceeded_until_reset(
        sf: Salesforce, sim: Simulator, running: RunningSimulator, sf_session):
    sim.configure_limits(salesforce_daily=3)
    for _ in range(3):
        sf.query("SELECT Id FROM Account LIMIT 1")
    with pytest.raises(SalesforceRefusedRequest) as caught:
        sf.query("SELECT Id FROM Account LIMIT 1")
    assert caught.value.content == [{"message": "TotalRequests Limit exceeded.",
                                     "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    raw = sf_session.patch(f"{running.salesforce_url}/services/data/v59.0/composite/sobjects",
                           headers={"Authorization": f"Bearer {SALESFORCE_SESSION}"},
                           json={"records": []})
    assert raw.status_code == 403 and raw.headers["Sforce-Limit-Info"] == "api-usage=3/3"
    sim.reset_daily()
    assert sf.query("SELECT Id FROM Account LIMIT 1")["totalSize"] == 1


def test_given_a_bad_session_when_calling_then_401_invalid_session_id(
        running: RunningSimulator, sf_session):
    response = sf_session.get(f"{running.salesforce_url}/services/data/v59.0/limits",
                              headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json() == [{"message": "Session expired or invalid",
                                "errorCode": "INVALID_SESSION_ID"}]
    assert "Sforce-Limit-Info" in response.headers
    sf = Salesforce(instance_url=running.salesforce_url, session_id="nope",
                    session=sf_session)
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM Account")


def test_given_the_test_user_when_it_logs_in_with_a_password_then_the_token_works(
        running: RunningSimulator, sim: Simulator, sf_session):
    creds = sim.salesforce_credentials
    url = f"{running.salesforce_url}/services/oauth2/token"
    form = {"grant_type": "password", "client_id": creds.consumer_key,
            "client_secret": creds.consumer_secret, "username": creds.username,
            "password": creds.password + creds.security_token}
    token = sf_session.post(url, data=form).json()
    assert token["instance_url"] == running.salesforce_url and token["token_type"] == "Bearer"
    assert {"id", "issued_at", "signature"} <= set(token)
    sf = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"],
                    session=sf_session)
    assert sf.query("SELECT Id FROM User LIMIT 1")["totalSize"] == 1
    refused = sf_session.post(url, data={**form, "password": "wrong"})
    assert refused.status_code == 400
    assert refused.json() == {"error": "invalid_grant",
                              "error_description": "authentication failure"}


def _jwt(key: rsa.RSAPrivateKey, claims: dict[str, object]) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "RS256"}).encode()) + "." + b64(json.dumps(claims).encode())
    return head + "." + b64(key.sign(head.encode(), padding.PKCS1v15(), hashes.SHA256()))


def test_given_a_signed_jwt_when_exchanged_then_a_token_and_a_forged_one_is_refused(
        running: RunningSimulator, sim: Simulator, sf_session):
    creds = sim.salesforce_credentials
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    creds.jwt_public_key_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = {"iss": creds.consumer_key, "sub": creds.username,
              "aud": "https://login.salesforce.com", "exp": int(time.time()) + 300}
    url = f"{running.salesforce_url}/services/oauth2/token"
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    ok = sf_session.post(url, data={"grant_type": grant, "assertion": _jwt(key, claims)})
    assert ok.status_code == 200 and ok.json()["access_token"] in sim.salesforce_sessions
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for assertion in (_jwt(other, claims), _jwt(key, {**claims, "exp": 1}),
                      _jwt(key, {**claims, "sub": "someone@else"})):
        refused = sf_session.post(url, data={"grant_type": grant, "assertion": assertion})
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


# --- TLS ------------------------------------------------------------------------------------------

def test_given_the_ca_bundle_when_connecting_then_tls_verifies_and_without_it_fails(
        running: RunningSimulator):
    url = f"{running.salesforce_url}/services/data/"
    with requests.Session() as session:
        session.trust_env = False  # the ambient REQUESTS_CA_BUNDLE must not decide this test
        assert session.get(url, verify=running.ca_bundle_path).status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            session.get(url, verify=True)
    context = ssl.create_default_context(cafile=running.ca_bundle_path)
    assert httpx.get(url.replace("127.0.0.1", "localhost"), verify=context).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, verify=ssl.create_default_context())
    assert running.salesforce_url.startswith("https://127.0.0.1:")
    assert running.hubspot_url.startswith("http://127.0.0.1:")
