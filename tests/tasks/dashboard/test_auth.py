"""Dashboard sign-in, sessions, CSRF and headers, over HTTP (FastAPI TestClient)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from connectors.settings import Settings
from sync.state import open_store
from tasks.dashboard.auth import LOCKOUT_SECONDS, MAX_FAILURES, SESSION_SECONDS
from tasks.http import create_app
from tasks.metrics import LocalMetrics
from tests.tasks.dashboard.conftest import NOW, TOKEN, Env, RecordingEnqueue, csrf_of, sign_in

PAGES = ("overview", "balance", "reps", "decisions", "failed", "overrides", "review")


def test_given_no_session_when_opening_root_then_the_sign_in_page_has_one_password_field(
        env: Env) -> None:
    response = env.client.get("/")
    assert response.status_code == 200
    html = response.text
    assert len(re.findall(r"<input\b", html)) == 1
    assert 'type="password"' in html and 'name="token"' in html
    assert 'action="/dashboard/signin"' in html


def test_given_no_session_when_opening_any_page_then_it_redirects_to_sign_in(env: Env) -> None:
    for page in PAGES:
        response = env.client.get(f"/dashboard/{page}", follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (303, "/"), page


def test_given_the_token_when_signing_in_then_a_strict_httponly_session_cookie_opens_pages(
        env: Env) -> None:
    response = env.client.post("/dashboard/signin", data={"token": TOKEN},
                               follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/dashboard/overview")
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain http: a Secure cookie would never come back
    assert TOKEN.lower() not in cookie
    for page in PAGES:
        assert env.client.get(f"/dashboard/{page}").status_code == 200, page
    assert env.client.get("/", follow_redirects=False).headers["location"] == \
        "/dashboard/overview"


def test_given_https_when_signing_in_then_the_cookie_is_secure(env: Env) -> None:
    client = TestClient(env.client.app, base_url="https://testserver")
    response = client.post("/dashboard/signin", data={"token": TOKEN}, follow_redirects=False)
    assert "secure" in response.headers["set-cookie"].lower()


def test_given_a_wrong_token_when_signing_in_then_401_and_the_page_again_with_an_error(
        env: Env) -> None:
    for given in ("nope", "", TOKEN + "x", "ü" * 10, "x" * 100_000):
        response = env.client.post("/dashboard/signin", data={"token": given})
        assert response.status_code in (401, 429), given[:10]
        assert "not the API token" in response.text or "Too many" in response.text
        assert "set-cookie" not in response.headers


def test_given_a_malformed_sign_in_body_when_posting_then_401_never_5xx(env: Env) -> None:
    for body, kind in ((b"\xff\xfe", "application/x-www-form-urlencoded"),
                       (b"--x\r\n", "multipart/form-data; boundary=x"),
                       (b"{}", "application/json")):
        response = env.client.post("/dashboard/signin", content=body,
                                   headers={"content-type": kind})
        assert response.status_code == 401, body


def test_given_repeated_failures_when_signing_in_then_429_even_for_the_right_token_until_it_ends(
        env: Env) -> None:
    for _ in range(MAX_FAILURES):
        assert env.client.post("/dashboard/signin", data={"token": "guess"}).status_code == 401
    locked = env.client.post("/dashboard/signin", data={"token": TOKEN},
                             follow_redirects=False)
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0
    assert "set-cookie" not in locked.headers
    env.now[0] += LOCKOUT_SECONDS + 1
    sign_in(env.client)


def test_given_a_tampered_or_expired_cookie_when_opening_a_page_then_back_to_sign_in(
        env: Env) -> None:
    sign_in(env.client)
    cookie = env.client.cookies["account_router_session"]
    issued, nonce, signature = cookie.split(".")
    for forged in (f"{int(issued) + 1}.{nonce}.{signature}", f"{issued}.{nonce}x.{signature}",
                   f"{issued}.{nonce}.{signature[:-2]}", "garbage", "1.2.3", "é.é.é",
                   f"²{issued}.{nonce}.{signature}",
                   f"{issued}.{nonce}.{signature}" + "A" * 300):
        response = TestClient(env.client.app).get(
            "/dashboard/overview", follow_redirects=False,
            headers=[(b"cookie", f"account_router_session={forged}".encode())])
        assert response.status_code == 303, forged
    env.now[0] += SESSION_SECONDS + 1
    assert env.client.get("/dashboard/overview", follow_redirects=False).status_code == 303


def test_given_a_session_when_signing_out_then_the_cookie_goes_and_pages_need_sign_in(
        env: Env) -> None:
    sign_in(env.client)
    csrf = csrf_of(env.client.get("/dashboard/overview").text)
    copy = env.client.cookies["account_router_session"]
    response = env.client.post("/dashboard/signout", data={"csrf": csrf},
                               follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/")
    assert 'account_router_session=""' in response.headers["set-cookie"] \
        or "max-age=0" in response.headers["set-cookie"].lower()
    assert env.client.get("/dashboard/overview", follow_redirects=False).status_code == 303
    replayed = TestClient(env.client.app, cookies={"account_router_session": copy})
    assert replayed.get("/dashboard/overview", follow_redirects=False).status_code == 303


def test_given_no_api_token_when_serving_then_the_dashboard_is_off_and_says_how_to_enable(
        tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        app = create_app(Settings.model_validate({"api_token": None}), store,
                         RecordingEnqueue())
        client = TestClient(app)
        home = client.get("/")
        assert home.status_code == 403
        assert "ACCOUNT_ROUTER_API_TOKEN" in home.text and "password" not in home.text
        assert client.get("/dashboard/overview").status_code == 403
        assert client.post("/dashboard/signin", data={"token": ""}).status_code == 403
        assert client.post("/dashboard/reps/ana/pause", data={}).status_code == 403
    finally:
        store.close()


def test_given_a_page_when_served_then_strict_security_headers_and_only_own_assets(
        env: Env) -> None:
    sign_in(env.client)
    for path in ("/", "/dashboard/overview", "/dashboard/reps", "/dashboard/decisions"):
        response = env.client.get(path)
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        html = response.text
        assets = re.findall(r'(?:src|href)="([^"]*)"', html)
        local = [a for a in assets if not a.startswith("https://app.hubspot.com")
                 and not a.startswith("https://acme.my.salesforce.com")]
        assert all(a.startswith(("/", "?", "#")) for a in local), local
        assert "style=" not in html and "<script>" not in html  # the CSP would refuse them


def test_given_the_static_assets_when_fetched_then_served_with_their_types(env: Env) -> None:
    for name, kind in (("dashboard.css", "text/css"), ("dashboard.js", "text/javascript"),
                       ("favicon.svg", "image/svg+xml")):
        response = env.client.get(f"/static/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
    for name in ("nope.js", "..%2Fpages.py", "%2e%2e/__init__.py"):
        assert env.client.get(f"/static/{name}").status_code == 404


def test_given_an_action_when_the_csrf_token_is_missing_or_wrong_then_403(
        env: Env) -> None:
    sign_in(env.client)
    csrf = csrf_of(env.client.get("/dashboard/reps").text)
    assert env.client.post("/dashboard/reps/bo/pause", data={}).status_code == 403
    assert env.client.post("/dashboard/reps/bo/pause",
                           data={"csrf": csrf[:-1] + ("A" if csrf[-1] != "A" else "B")}
                           ).status_code == 403
    assert env.store.pauses(NOW) == {}
    # another session's token is no good either
    other = TestClient(env.client.app)
    sign_in(other)
    assert other.post("/dashboard/reps/bo/pause", data={"csrf": csrf}).status_code == 403


def test_given_no_session_when_posting_an_action_then_403_and_nothing_changes(
        env: Env) -> None:
    response = env.client.post("/dashboard/reps/bo/pause", data={"csrf": "x"})
    assert response.status_code == 403
    assert env.client.post("/dashboard/failed/retry",
                           data={"crm": "salesforce", "object": "Lead"}).status_code == 403
    assert env.enqueue.calls == []


def test_given_redis_state_without_a_database_url_when_opening_a_page_then_503_naming_it(
        redis_url: str) -> None:
    store = open_store(redis_url)
    try:
        app = create_app(Settings.model_validate({"api_token": TOKEN, "redis_url": redis_url}),
                         store, RecordingEnqueue(), metrics=LocalMetrics())
        client = TestClient(app)
        sign_in(client)
        for page in ("overview", "balance", "decisions", "failed"):
            response = client.get(f"/dashboard/{page}")
            assert response.status_code == 503, page
            assert "ACCOUNT_ROUTER_DATABASE_URL" in response.text
        assert client.get("/dashboard/reps").status_code == 200  # the state store suffices
    finally:
        store.close()
