"""Dashboard pages over HTTP: the numbers equal the history's and the state store's, actions
change the store, hostile query parameters are 4xx pages and markup is escaped."""

from __future__ import annotations

import html as htmllib
import re
from datetime import UTC, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from connectors.settings import Settings
from sync.models import Outcome
from sync.state import open_store
from tasks.dashboard.charts import seconds
from tasks.dashboard.data import MAX_OFFSET, PAGE_SIZE
from tasks.http import create_app
from tests.tasks.dashboard.conftest import (
    HOSTILE,
    INSTANCE,
    NOW,
    PORTAL,
    ROUTING,
    TOKEN,
    Env,
    RecordingEnqueue,
    csrf_of,
    decision,
    sign_in,
)


@pytest.fixture
def client(env: Env) -> TestClient:
    sign_in(env.client)
    return env.client


def rows(html: str, attr: str) -> dict[str, list[str]]:
    """Table rows carrying `data-ATTR="key"`: key -> the text of each cell."""
    found = {}
    for key, body in re.findall(rf'<tr[^>]*\bdata-{attr}="([^"]*)"[^>]*>(.*?)</tr>', html,
                                re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", body, re.S)
        found[htmllib.unescape(key)] = [
            " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", c)).split()) for c in cells]
    return found


def number(text: str) -> int:
    return int(text.replace(",", ""))


# --- overview ------------------------------------------------------------------------------


@pytest.mark.parametrize(("window", "since"), [
    ("today", NOW.replace(hour=0)), ("7d", NOW - timedelta(days=7)),
    ("30d", NOW - timedelta(days=30))])
def test_given_a_window_when_opening_the_overview_then_outcomes_and_rules_equal_the_history(
        client: TestClient, env: Env, window: str, since: object) -> None:
    page = client.get(f"/dashboard/overview?window={window}")
    assert page.status_code == 200
    outcomes = env.history.outcome_counts(since, NOW)
    shown = {k: number(v[1]) for k, v in rows(page.text, "outcome").items()}
    assert {k: v for k, v in shown.items() if v} == {k: v for k, v in outcomes.items() if v}
    hits = env.history.rule_hits(since, NOW)
    shown_rules = {k: number(v[1]) for k, v in rows(page.text, "rule").items()}
    assert shown_rules == hits
    total = re.search(r'data-testid="total">([\d,]+)<', page.text)
    assert total and number(total[1]) == sum(outcomes.values())


def test_given_the_seeded_history_when_comparing_windows_then_30_days_holds_the_older_turns(
        client: TestClient) -> None:
    week = rows(client.get("/dashboard/overview?window=7d").text, "outcome")
    month = rows(client.get("/dashboard/overview?window=30d").text, "outcome")
    assert number(month["assigned"][1]) == number(week["assigned"][1]) + 4
    assert number(week["assigned"][1]) == 9  # ana 5 + bo 3 + the failed Salesforce write


def test_given_writes_when_opening_the_overview_then_the_speed_chart_plots_p50_and_p95(
        client: TestClient, env: Env) -> None:
    page = client.get("/dashboard/overview?window=today").text
    assert '<svg class="chart"' in page and 'class="line p50"' in page
    points = env.history.speed_to_lead(NOW.replace(hour=0), NOW, 24)
    assert sum(p.count for p in points) == 11  # assigned + fallback with a creation time
    table = re.search(r'<table class="sortable" id="speed">(.*?)</table>', page, re.S)
    assert table is not None
    counts = [number(c) for c in re.findall(r'<td class="num" data-sort="(\d+)">', table[1])]
    assert sum(counts) == 11
    latest = [p for p in points if p.count][-1]
    headline = re.search(r'data-testid="latest-speed">(.*?)</p>', page, re.S)
    assert headline is not None
    assert seconds(latest.p50) in headline[1] and seconds(latest.p95) in headline[1]


def test_given_a_bad_window_when_opening_a_page_then_400_page_naming_the_choices(
        client: TestClient) -> None:
    for value in ("zzz", "", "7D", "<b>", "1" * 5000):
        for page in ("overview", "balance"):
            response = client.get(f"/dashboard/{page}", params={"window": value})
            assert response.status_code == 400, (page, value[:10])
            assert "today, 7d, 30d" in response.text
            assert "<b>" not in response.text


# --- balance -------------------------------------------------------------------------------


def test_given_pool_turns_when_opening_balance_then_counts_caps_and_spread_match(
        client: TestClient, env: Env) -> None:
    page = client.get("/dashboard/balance?window=today").text
    pool = re.search(r'<table class="sortable" data-pool="smb">(.*?)</table>', page, re.S)
    assert pool is not None
    members = rows(pool[1], "rep")
    load = env.history.load(since=NOW.replace(hour=0), until=NOW)
    turns = {r.rep: r.count for r in load if r.pool == "smb" and r.outcome == "assigned"}
    assert turns == {"ana": 6, "bo": 3}
    assert number(members["ana"][1]) == 6 and number(members["bo"][1]) == 3
    assert members["ana"][2] == "3 / 3" and members["bo"][2] == "1 / 3"
    assert 'data-testid="spread">spread 3<' in page
    # per rep: bo's two fallbacks are no pool turn but are his load
    per_rep = re.search(r'id="per-rep-table">(.*?)</table>', page, re.S)
    assert per_rep is not None
    assert rows(per_rep[1], "rep")["bo"][1:] == ["3", "2", "5"]


# --- reps ----------------------------------------------------------------------------------


def test_given_the_routing_file_when_opening_reps_then_each_rep_has_its_status(
        client: TestClient) -> None:
    page = client.get("/dashboard/reps").text
    status = dict(re.findall(r'data-rep="([^"]+)" data-status="([^"]+)"', page))
    assert status == {"ana": "at_cap", "bo": "available", "cy": "out_of_office",
                      "dee": "inactive"}
    assert "at cap in smb" in page and "out of office until 2026-12-31" in page


def test_given_a_rep_when_pausing_and_resuming_from_the_page_then_the_store_follows(
        client: TestClient, env: Env) -> None:
    csrf = csrf_of(client.get("/dashboard/reps").text)
    response = client.post("/dashboard/reps/bo/pause", data={"csrf": csrf, "until": ""},
                           follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/dashboard/reps?")
    assert env.store.pauses(NOW) == {"bo": None}
    page = client.get(response.headers["location"]).text
    assert "Paused bo." in page and 'data-rep="bo" data-status="paused"' in page
    response = client.post("/dashboard/reps/bo/resume", data={"csrf": csrf},
                           follow_redirects=False)
    assert response.status_code == 303 and env.store.pauses(NOW) == {}
    assert "Resumed bo." in client.get(response.headers["location"]).text


def test_given_an_until_when_pausing_then_the_pause_ends_then_and_a_past_one_is_refused(
        client: TestClient, env: Env) -> None:
    csrf = csrf_of(client.get("/dashboard/reps").text)
    response = client.post("/dashboard/reps/ana/pause",
                           data={"csrf": csrf, "until": "2026-12-08T09:30"},
                           follow_redirects=False)
    assert response.status_code == 303
    until = NOW.replace(day=8, hour=9, minute=30)
    assert env.store.pauses(NOW) == {"ana": until.astimezone(UTC)}
    for bad in ("2026-12-01T09:00", "yesterday", "9999-99-99", "x" * 300):
        response = client.post("/dashboard/reps/bo/pause", data={"csrf": csrf, "until": bad})
        assert response.status_code == 400, bad
    assert "bo" not in env.store.pauses(NOW)


def test_given_an_unknown_rep_when_pausing_or_resuming_then_404(client: TestClient) -> None:
    csrf = csrf_of(client.get("/dashboard/reps").text)
    for rep in ("zed", "%3Cb%3E", "a" * 400):
        assert client.post(f"/dashboard/reps/{rep}/pause", data={"csrf": csrf}).status_code \
            == 404
        assert client.post(f"/dashboard/reps/{rep}/resume", data={"csrf": csrf}).status_code \
            == 404


# --- decisions -----------------------------------------------------------------------------


def test_given_filters_when_searching_decisions_then_the_rows_are_the_historys(
        client: TestClient, env: Env) -> None:
    for query, expected in (
            ({"rep": "bo"}, env.history.decision_ids(rep="bo")),
            ({"rule": "named"}, env.history.decision_ids(rule="named")),
            ({"record": "700"}, env.history.decision_ids(record_id="700")),
            ({"outcome": "unassigned"}, env.history.decision_ids(outcome="unassigned")),
            ({"rep": "ana", "rule": "smb"}, env.history.decision_ids(rep="ana", rule="smb"))):
        page = client.get("/dashboard/decisions", params=query)
        assert page.status_code == 200
        shown = [int(i) for i in re.findall(r'<tr data-id="(\d+)"', page.text)]
        assert shown == [i for i, _ in expected][:PAGE_SIZE], query
        assert shown, query


def test_given_many_decisions_when_paging_then_older_and_newer_links_cover_them_all(
        client: TestClient, env: Env) -> None:
    env.history.record([(1000 + i, decision(f"bulk{i}", Outcome.ASSIGNED, "ana", "smb",
                                            at=NOW - timedelta(seconds=i)))
                        for i in range(PAGE_SIZE + 5)])
    first = client.get("/dashboard/decisions").text
    older = re.search(r'href="/dashboard/decisions\?([^"]+)">Older', first)
    assert older is not None
    second = client.get("/dashboard/decisions?" + htmllib.unescape(older[1])).text
    ids = re.findall(r'<tr data-id="(\d+)"', first) + re.findall(r'<tr data-id="(\d+)"', second)
    assert len(ids) == len(set(ids)) == len(env.history.decision_ids(limit=2 * PAGE_SIZE))
    assert "Newer" in second


def test_given_markup_in_a_record_id_when_shown_then_it_is_escaped_everywhere(
        client: TestClient, env: Env) -> None:
    listing = client.get("/dashboard/decisions", params={"record": HOSTILE})
    assert listing.status_code == 200
    assert HOSTILE not in listing.text and htmllib.escape(HOSTILE) in listing.text
    detail = client.get(f"/dashboard/decisions/{env.ids[HOSTILE]}")
    assert detail.status_code == 200 and HOSTILE not in detail.text
    assert "%3Cscript%3E" in detail.text  # in the CRM link, percent-encoded
    assert HOSTILE not in client.get("/dashboard/overview").text


@pytest.mark.parametrize("query", [
    {"offset": str(MAX_OFFSET + 1)}, {"offset": "10" * 30}, {"offset": "-1"},
    {"offset": "abc"}, {"offset": "1e9"}, {"offset": "²"}, {"offset": "١٢"},
    {"record": "x" * 256}, {"rep": "a\x00b"},
    {"rule": "\x1b[31m"}, {"outcome": "won"}, {"outcome": "<b>"}])
def test_given_hostile_parameters_when_searching_then_400_never_5xx(
        client: TestClient, query: dict[str, str]) -> None:
    response = client.get("/dashboard/decisions", params=query)
    assert response.status_code == 400, query
    assert "<b>" not in response.text and "\x1b" not in response.text


def test_given_a_large_valid_offset_when_searching_then_an_empty_page(
        client: TestClient) -> None:
    response = client.get("/dashboard/decisions", params={"offset": str(MAX_OFFSET)})
    assert response.status_code == 200 and "No decisions yet." in response.text


def test_given_a_decision_when_opening_it_then_its_full_trace_and_crm_link(
        client: TestClient, env: Env) -> None:
    page = client.get(f"/dashboard/decisions/{env.ids['700']}").text
    assert "rule named: bo" in page
    trace = re.search(r'<table id="trace">(.*?)</table>', page, re.S)
    assert trace is not None
    assert "domain is not named.com" in trace[1] and "won" in trace[1]
    assert f'href="https://app.hubspot.com/contacts/{PORTAL}/record/0-2/700"' in page
    lead = client.get(f"/dashboard/decisions/{env.ids['00Q5g00000AbCdEAAZ']}").text
    assert f'href="{INSTANCE}/lightning/r/Lead/00Q5g00000AbCdEAAZ/view"' in lead
    assert "UNABLE_TO_LOCK_ROW" in lead


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "99999", str(2 ** 63), "9" * 40, "1.5",
                                 "²", "١٢"])
def test_given_an_unknown_or_malformed_decision_id_when_opening_then_404(
        client: TestClient, bad: str) -> None:
    assert client.get(f"/dashboard/decisions/{bad}").status_code == 404


# --- failed writes -------------------------------------------------------------------------


def test_given_a_failed_write_when_opening_failed_then_it_shows_why_and_retry_enqueues(
        client: TestClient, env: Env) -> None:
    page = client.get("/dashboard/failed").text
    assert "00Q5g00000AbCdEAAZ" in page and "UNABLE_TO_LOCK_ROW" in page
    assert 'data-crm="salesforce" data-object="Lead"' in page
    csrf = csrf_of(page)
    response = client.post("/dashboard/failed/retry",
                           data={"csrf": csrf, "crm": "salesforce", "object": "Lead"},
                           follow_redirects=False)
    assert response.status_code == 303
    assert env.enqueue.calls == [("salesforce", "Lead", ["00Q5g00000AbCdEAAZ"], "reprocess")]
    assert "Retry started for 1 records." in client.get(response.headers["location"]).text


def test_given_an_unknown_crm_object_when_retrying_then_400_and_nothing_enqueued(
        client: TestClient, env: Env) -> None:
    csrf = csrf_of(client.get("/dashboard/failed").text)
    for crm, obj in (("salesforce", "lead"), ("nope", "Lead"), ("", ""), ("<b>", "x")):
        response = client.post("/dashboard/failed/retry",
                               data={"csrf": csrf, "crm": crm, "object": obj})
        assert response.status_code == 400
    assert env.enqueue.calls == []


def test_given_the_people_loop_pages_when_opened_then_they_are_real_pages_in_the_nav(
        client: TestClient) -> None:
    for page, title in (("overrides", "Overrides"), ("review", "Review queue")):
        response = client.get(f"/dashboard/{page}")
        assert response.status_code == 200, page
        assert f'<a href="/dashboard/{page}" aria-current="page">{title}</a>' in response.text
        assert '<span class="tag">next</span>' not in response.text


def test_given_a_fresh_deployment_when_opening_every_page_then_200_and_zeros(
        tmp_path: Path) -> None:
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING)
    store = open_store(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        app = create_app(Settings.model_validate({"api_token": TOKEN, "config": str(routing)}),
                         store, RecordingEnqueue(), clock=lambda: NOW.timestamp())
        client = TestClient(app)
        sign_in(client)
        for page in ("overview?window=today", "overview?window=30d", "balance", "reps",
                     "decisions", "failed", "overrides", "review"):
            response = client.get(f"/dashboard/{page}")
            assert response.status_code == 200, page
        assert 'data-testid="total">0<' in client.get("/dashboard/overview").text
        assert "No decisions yet." in client.get("/dashboard/decisions").text
        status = dict(re.findall(r'data-rep="([^"]+)" data-status="([^"]+)"',
                                 client.get("/dashboard/reps").text))
        assert status["ana"] == "available" and status["bo"] == "available"
    finally:
        store.close()


@hsettings(max_examples=30, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(
    st.sampled_from(["record", "rep", "rule", "outcome", "offset", "window"]),
    st.text(max_size=300) | st.sampled_from(["0", "50", "today", "assigned", "ana"]),
    max_size=4),
    page=st.sampled_from(["overview", "balance", "decisions"]))
def test_given_any_query_when_opening_a_page_then_200_or_400_never_5xx(
        client: TestClient, params: dict[str, str], page: str) -> None:
    response = client.get(f"/dashboard/{page}", params=params)
    assert response.status_code in (200, 400), (page, params, response.text[:300])
    assert "<script>" not in response.text


@hsettings(max_examples=30, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rep=st.text(min_size=1, max_size=80).filter(lambda r: r not in (".", "..")),
       until=st.text(max_size=60), action=st.sampled_from(["pause", "resume"]))
def test_given_any_rep_and_until_when_acting_then_a_redirect_or_4xx_never_5xx(
        client: TestClient, rep: str, until: str, action: str) -> None:
    csrf = csrf_of(client.get("/dashboard/reps").text)
    response = client.post(f"/dashboard/reps/{quote(rep, safe='')}/{action}",
                           data={"csrf": csrf, "until": until}, follow_redirects=False)
    # 303 done; 400 a bad end; 404 no such rep; 405 a rep id whose "/" makes another path.
    assert response.status_code in (303, 400, 404, 405), (rep, until, response.text[:200])


def test_given_an_unknown_dashboard_address_when_opened_then_a_404_page_with_navigation(
        client: TestClient) -> None:
    for path in ("/dashboard/nope", "/dashboard/decisions/1/extra", "/dashboard/%3Cb%3E"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "no such page" in response.text and 'href="/dashboard/overview"' in response.text
        assert "<b>" not in response.text
