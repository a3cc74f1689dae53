"""Salesforce auth: token, SOAP username/password and JWT bearer; one clear error, no secrets."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from connectors import registry
from connectors.salesforce.connector import SalesforceConnector, from_settings, login_domain
from connectors.transport import Unlimited
from sync.ports import CredentialsError
from tests.connectors.salesforce.builders import (
    API,
    COMPOSITE_URL,
    INSTANCE,
    JWT_TOKEN_URL,
    PASSWORD,
    QUERY_URL,
    SECURITY_TOKEN,
    SOAP_LOGIN_URL,
    TOKEN,
    fixture,
    ok,
    page,
    password_settings,
    settings,
    soql,
    token_settings,
)

SOAP_SESSION = "00DRM000000SOAP!AQ0AQSoapIssuedSessionToken"
JWT_SESSION = "00DRM000000JWT!AQ0AQJwtIssuedSessionToken"
PASSWORD_SETTINGS = ("SALESFORCE_USERNAME, SALESFORCE_PASSWORD, SALESFORCE_SECURITY_TOKEN, "
                     "SALESFORCE_DOMAIN")


def build(cfg, sleeps: list[float] | None = None) -> SalesforceConnector:
    sink = sleeps if sleeps is not None else []
    return from_settings(cfg, limiter=Unlimited(), transport_sleep=sink.append)


def text(request) -> str:
    return request.body.decode() if isinstance(request.body, bytes) else request.body


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in (TOKEN, PASSWORD, SECURITY_TOKEN, SOAP_SESSION, JWT_SESSION):
            assert secret not in text


# --- access token ---------------------------------------------------------------------------

def test_given_a_token_when_constructed_then_no_call_is_made_and_queries_carry_it(rsps):
    conn = build(token_settings())
    assert len(rsps.calls) == 0
    rsps.get(QUERY_URL, json=fixture("users.json"))
    rsps.get(QUERY_URL, json=fixture("queues.json"))

    conn.users()

    request = rsps.calls[0].request
    assert request.url.startswith(f"{INSTANCE}/services/data/v62.0/query/")
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert conn.instance == "acme.my.salesforce.com"
    assert_no_secret(repr(conn))


def test_given_an_instance_without_scheme_and_a_v_version_then_the_url_is_still_right(rsps):
    conn = build(settings(SALESFORCE_INSTANCE_URL="acme.my.salesforce.com/",
                          SALESFORCE_ACCESS_TOKEN=TOKEN, SALESFORCE_API_VERSION="v61.0"))
    rsps.get("https://acme.my.salesforce.com/services/data/v61.0/query/", json=page([]))
    rsps.get("https://acme.my.salesforce.com/services/data/v61.0/query/", json=page([]))

    assert conn.users() == []


def test_given_a_rejected_token_when_called_then_one_credentials_error_names_the_settings(
        rsps):
    sleeps: list[float] = []
    conn = build(token_settings(), sleeps)
    rsps.get(QUERY_URL, status=401, json=fixture("error_invalid_session.json"))

    with pytest.raises(CredentialsError) as caught:
        conn.users()

    assert caught.value.setting == "SALESFORCE_INSTANCE_URL, SALESFORCE_ACCESS_TOKEN"
    assert "INVALID_SESSION_ID" in str(caught.value)
    assert len(rsps.calls) == 1 and sleeps == []
    assert_no_secret(str(caught.value), repr(caught.value))


# --- username / password / security token (SOAP login) ---------------------------------------

def test_given_password_settings_when_constructed_then_soap_login_then_the_issued_session(
        rsps):
    rsps.post(SOAP_LOGIN_URL, body=fixture("login_soap_ok.xml"), content_type="text/xml")
    rsps.get(QUERY_URL, json=page([]))
    rsps.get(QUERY_URL, json=page([]))

    conn = build(password_settings())
    conn.users()

    login = rsps.calls[0].request
    assert login.headers["SOAPAction"] == "login"
    assert "<n1:username>router@acme.com</n1:username>" in text(login)
    assert f"<n1:password>{PASSWORD}{SECURITY_TOKEN}</n1:password>" in text(login)
    assert rsps.calls[1].request.headers["Authorization"] == f"Bearer {SOAP_SESSION}"
    assert rsps.calls[1].request.url.startswith(f"{API}/query/")
    assert_no_secret(repr(conn))


def test_given_a_sandbox_domain_when_constructed_then_login_goes_to_test(rsps):
    rsps.post("https://test.salesforce.com/services/Soap/u/62.0",
              body=fixture("login_soap_ok.xml"), content_type="text/xml")

    build(password_settings(SALESFORCE_DOMAIN="https://test.salesforce.com/"))

    assert len(rsps.calls) == 1


def test_given_an_empty_security_token_then_password_login_is_attempted(rsps):
    # Orgs that trust the caller's IP range issue no security token.
    rsps.post(SOAP_LOGIN_URL, body=fixture("login_soap_ok.xml"), content_type="text/xml")

    build(password_settings(SALESFORCE_SECURITY_TOKEN=""))

    assert f"<n1:password>{PASSWORD}</n1:password>" in text(rsps.calls[0].request)


def test_given_a_rejected_login_then_one_credentials_error_without_the_secret(rsps, caplog):
    caplog.set_level(logging.DEBUG)
    sleeps: list[float] = []
    # Salesforce answers a failed SOAP login with HTTP 500 and a LoginFault.
    rsps.post(SOAP_LOGIN_URL, status=500, body=fixture("login_soap_fault.xml"),
              content_type="text/xml")

    with pytest.raises(CredentialsError) as caught:
        build(password_settings(), sleeps)

    assert caught.value.setting == PASSWORD_SETTINGS
    assert "INVALID_LOGIN" in str(caught.value)
    assert len(rsps.calls) == 1 and sleeps == []  # never a retry storm on a bad password
    assert_no_secret(str(caught.value), repr(caught.value), caplog.text)


def test_given_an_expired_session_when_writing_then_relogin_keeps_the_auto_assign_header(
        rsps):
    # simple-salesforce re-sends a request after renewing the session, but drops per-call
    # headers when it does: the header must still be on the re-sent PATCH.
    rsps.post(SOAP_LOGIN_URL, body=fixture("login_soap_ok.xml"), content_type="text/xml")
    conn = build(password_settings())
    rsps.patch(COMPOSITE_URL, status=401, json=fixture("error_invalid_session.json"))
    rsps.post(SOAP_LOGIN_URL, body=fixture("login_soap_ok.xml"), content_type="text/xml")
    rsps.patch(COMPOSITE_URL, json=[ok("00QRM000001a001AAA")])

    results = conn.write_owners("Lead", {"00QRM000001a001AAA": "005RM000001AVAAYA4"})

    assert [r.ok for r in results] == [True]
    patches = [c.request for c in rsps.calls if c.request.method == "PATCH"]
    assert len(patches) == 2
    assert all(p.headers["Sforce-Auto-Assign"] == "FALSE" for p in patches)


# --- JWT bearer -----------------------------------------------------------------------------

@pytest.fixture
def rsa_key(tmp_path: Path) -> tuple[Path, object]:
    """A throwaway RSA key in PEM, and its public half to check the signature."""
    rsa = pytest.importorskip(
        "cryptography.hazmat.primitives.asymmetric.rsa",
        reason="cryptography is needed to sign a JWT (a simple-salesforce dependency)")
    from cryptography.hazmat.primitives import serialization

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "server.key"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path, key.public_key()


def jwt_settings(key_file: Path, **values):
    return settings(SALESFORCE_USERNAME="router@acme.com", SALESFORCE_CONSUMER_KEY="3MVG9-app",
                    SALESFORCE_PRIVATE_KEY_FILE=str(key_file), **values)


def test_given_jwt_settings_when_constructed_then_a_signed_assertion_buys_the_session(
        rsps, rsa_key):
    import jwt

    path, public = rsa_key
    rsps.post(JWT_TOKEN_URL, json=fixture("token_jwt_ok.json"))
    rsps.get(QUERY_URL, json=page([]))
    rsps.get(QUERY_URL, json=page([]))

    conn = build(jwt_settings(path))
    conn.users()

    form = parse_qs(rsps.calls[0].request.body)
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    claims = jwt.decode(form["assertion"][0], public, algorithms=["RS256"],
                        audience="https://login.salesforce.com")
    assert claims["iss"] == "3MVG9-app" and claims["sub"] == "router@acme.com"
    # The session lives on the instance the token endpoint named.
    assert rsps.calls[1].request.url.startswith(f"{API}/query/")
    assert rsps.calls[1].request.headers["Authorization"] == f"Bearer {JWT_SESSION}"
    assert_no_secret(repr(conn))


@pytest.mark.filterwarnings("ignore:\\s+If your connected app policy:UserWarning")
def test_given_a_rejected_jwt_then_one_credentials_error_names_the_jwt_settings(
        rsps, rsa_key):
    sleeps: list[float] = []
    rsps.post(JWT_TOKEN_URL, status=400, json=fixture("token_jwt_error.json"))

    with pytest.raises(CredentialsError) as caught:
        build(jwt_settings(rsa_key[0]), sleeps)

    assert caught.value.setting == ("SALESFORCE_USERNAME, SALESFORCE_CONSUMER_KEY, "
                                    "SALESFORCE_PRIVATE_KEY_FILE, SALESFORCE_DOMAIN")
    assert "invalid_grant" in str(caught.value)
    assert len(rsps.calls) == 1 and sleeps == []


def test_given_a_missing_key_file_then_credentials_error_before_any_call(rsps, tmp_path):
    with pytest.raises(CredentialsError) as caught:
        build(jwt_settings(tmp_path / "nope.key"))

    assert caught.value.setting == "SALESFORCE_PRIVATE_KEY_FILE"
    assert len(rsps.calls) == 0


def test_given_a_key_file_that_is_not_a_key_then_credentials_error_without_its_bytes(
        rsps, tmp_path):
    path = tmp_path / "garbage.key"
    path.write_text("-----BEGIN PRIVATE KEY-----\nNOTAKEYsecretbytes\n-----END PRIVATE KEY-----\n")

    with pytest.raises(CredentialsError) as caught:
        build(jwt_settings(path))

    assert caught.value.setting == "SALESFORCE_PRIVATE_KEY_FILE"
    assert "NOTAKEYsecretbytes" not in str(caught.value)
    assert len(rsps.calls) == 0


# --- incomplete settings ----------------------------------------------------------------------

@pytest.mark.parametrize(("values", "named"), [
    ({"SALESFORCE_ACCESS_TOKEN": TOKEN}, "SALESFORCE_INSTANCE_URL"),
    ({"SALESFORCE_USERNAME": "router@acme.com"},
     "SALESFORCE_PASSWORD, SALESFORCE_SECURITY_TOKEN"),
    ({"SALESFORCE_USERNAME": "router@acme.com", "SALESFORCE_PASSWORD": PASSWORD},
     "SALESFORCE_SECURITY_TOKEN"),
    ({"SALESFORCE_CONSUMER_KEY": "3MVG9-app"},
     "SALESFORCE_USERNAME, SALESFORCE_PRIVATE_KEY_FILE"),
    ({"SALESFORCE_INSTANCE_URL": INSTANCE}, "SALESFORCE_ACCESS_TOKEN"),
    ({}, "SALESFORCE_ACCESS_TOKEN"),
])
def test_given_incomplete_settings_then_one_credentials_error_naming_what_is_missing(
        rsps, values, named):
    with pytest.raises(CredentialsError) as caught:
        build(settings(**values))

    assert named in caught.value.setting
    assert len(rsps.calls) == 0
    assert_no_secret(str(caught.value))


def test_given_settings_from_the_environment_then_the_connector_uses_them(
        rsps, monkeypatch):
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", INSTANCE)
    monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", TOKEN)
    from connectors import registry
    from connectors.settings import Settings

    conn = registry.create("salesforce", Settings(), limiter=Unlimited())

    assert isinstance(conn, SalesforceConnector) and conn.name == "salesforce"


@pytest.mark.parametrize(("value", "expected"), [
    ("login", "login"), ("test", "test"), ("", "login"), ("acme.my", "acme.my"),
    ("https://acme.my.salesforce.com/", "acme.my"), ("login.salesforce.com", "login"),
])
def test_login_domain_accepts_a_prefix_a_host_or_a_url(value, expected):
    assert login_domain(value) == expected


# --- transport details: TLS trust and timeouts --------------------------------------------------

def test_given_requests_ca_bundle_then_every_call_verifies_with_it(rsps, monkeypatch, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not used by the mock")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    conn = build(token_settings())
    rsps.get(QUERY_URL, json=page([]))
    rsps.get(QUERY_URL, json=page([]))

    conn.users()

    sent = rsps.calls[0].request.req_kwargs
    assert sent["verify"] == str(bundle)
    assert sent["timeout"] == (10.0, 120.0)  # simple-salesforce sets none


def test_given_a_crm_timeout_setting_when_created_through_the_registry_then_calls_use_it_as_the_read_timeout(  # noqa: E501
        rsps, monkeypatch):
    # Given: ACCOUNT_ROUTER_CRM_TIMEOUT_SECONDS set in the environment (how workers get it).
    monkeypatch.setenv("ACCOUNT_ROUTER_CRM_TIMEOUT_SECONDS", "2.5")
    conn = registry.create("salesforce", token_settings(), limiter=Unlimited())
    rsps.get(QUERY_URL, json=page([]))
    rsps.get(QUERY_URL, json=page([]))

    # When: a call goes out.
    conn.users()

    # Then: its read timeout is the setting; connecting keeps the vendor's timeout.
    assert rsps.calls[0].request.req_kwargs["timeout"] == (10.0, 2.5)


def test_given_only_ssl_cert_file_then_it_is_trusted_too(rsps, monkeypatch, tmp_path):
    bundle = tmp_path / "system.pem"
    bundle.write_text("not used by the mock")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    conn = build(token_settings())
    rsps.get(QUERY_URL, json=page([]))
    rsps.get(QUERY_URL, json=page([]))

    conn.users()

    assert rsps.calls[0].request.req_kwargs["verify"] == str(bundle)


def test_every_query_names_the_page_size(connector, rsps):
    rsps.get(QUERY_URL, json=page([]))
    rsps.get(QUERY_URL, json=page([]))

    connector.users()

    assert rsps.calls[0].request.headers["Sforce-Query-Options"] == "batchSize=2000"
    assert soql(rsps.calls[0]) == "SELECT Id, Name, Email, IsActive FROM User"



def test_given_ssl_cert_file_in_the_settings_only_then_every_call_verifies_with_it(
        rsps, monkeypatch, tmp_path):
    # The settings object is the one place settings come from: a Settings carrying
    # SSL_CERT_FILE is trusted even when the process environment does not hold it.
    bundle = tmp_path / "system.pem"
    bundle.write_text("not used by the mock")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    conn = build(token_settings(SSL_CERT_FILE=str(bundle)))
    rsps.get(QUERY_URL, json=page([]))

    conn.users()

    assert rsps.calls[0].request.req_kwargs["verify"] == str(bundle)
