"""The overrides page over HTTP: the list, filters and paging, and the rate per rule and per
rep equal the history's; hostile filters are 4xx pages and markup is escaped."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from sync.history.overrides import override_rates
from sync.models import HistoryEvent, event_id
from tasks.dashboard.data import PAGE_SIZE
from tests.tasks.dashboard.conftest import HOSTILE, NOW, Env, sign_in
from tests.tasks.dashboard.test_pages import rows


def override(record_id: str, minutes: int, *, frm: str = "ana", to: str = "bo",
             rule: str | None = "smb", by: str | None = "userId:7") -> HistoryEvent:
    return HistoryEvent(
        id=event_id("override", record_id, str(minutes)), decision_id=None,
        record_id=record_id, crm="hubspot", object="account", kind="override",
        at=NOW - timedelta(minutes=minutes),
        data={"from": frm, "to": to, "by": by, "after_seconds": 300.0, "rule": rule,
              "source": "CRM_UI"})


@pytest.fixture
def client(env: Env) -> TestClient:
    # ana's turns 500 and 501 were taken over by bo, bo's fallback 700 by ana (rule named).
    env.history.record_events([override("500", 5), override("501", 6),
                               override("700", 7, frm="bo", to="ana", rule="named", by=None),
                               override(HOSTILE, 8, frm=HOSTILE, to=HOSTILE, rule=HOSTILE)])
    sign_in(env.client)
    return env.client


def test_given_overrides_when_opening_the_page_then_rates_equal_the_history(
        client: TestClient, env: Env) -> None:
    page = client.get("/dashboard/overrides?window=today")

    assert page.status_code == 200
    by_rule, by_rep = override_rates(env.history, NOW.replace(hour=0), NOW)
    shown_rules = {k: v[1:3] for k, v in rows(page.text, "rule").items()}
    assert shown_rules == {r.name: [str(r.overrides), str(r.assignments)] for r in by_rule}
    assert rows(page.text, "rule")["smb"][3] == "25.0%"  # 2 of ana's 5 + bo's 3 turns
    assert rows(page.text, "rep")["ana"][1:] == ["2", "5", "40.0%"]
    assert {k for k in rows(page.text, "rep")} == {r.name for r in by_rep}


def test_given_overrides_when_listed_then_newest_first_with_links_to_the_decisions(
        client: TestClient) -> None:
    page = client.get("/dashboard/overrides?window=today").text

    listed = rows(page, "record")
    assert list(listed) == ["500", "501", "700", HOSTILE]
    assert listed["700"][3:6] == ["bo", "ana", "CRM_UI"]
    assert listed["500"][5] == "userId:7 (CRM_UI)" and listed["500"][6] == "5.0 min"
    assert 'href="/dashboard/decisions?record=500"' in page
    assert HOSTILE not in page  # escaped everywhere
    assert 'data-testid="override-total">4<' in page


@pytest.mark.parametrize(("query", "records"), [
    ("rule=named", ["700"]), ("rep=bo", ["500", "501", "700"]),
    ("rule=smb&rep=ana", ["500", "501"]), ("rule=nobody", []),
])
def test_given_a_filter_when_opening_the_page_then_only_matching_overrides_list(
        client: TestClient, query: str, records: list[str]) -> None:
    page = client.get(f"/dashboard/overrides?window=today&{query}").text

    assert list(rows(page, "record")) == records
    if not records:
        assert "No override matches." in page


def test_given_more_than_a_page_when_paging_then_older_and_newer_links_walk_it(
        client: TestClient, env: Env) -> None:
    env.history.record_events([override(f"r{i}", 10 + i) for i in range(PAGE_SIZE)])

    first = client.get("/dashboard/overrides?window=today").text
    second = client.get(f"/dashboard/overrides?window=today&offset={PAGE_SIZE}").text

    assert len(rows(first, "record")) == PAGE_SIZE and "Older →" in first
    assert len(rows(second, "record")) == 4 and "← Newer" in second and "Older" not in second


@pytest.mark.parametrize("query", ["offset=-1", "offset=x", "offset=²", "offset=100001",
                                   "window=week", "rule=" + "x" * 300, "rep=%01"])
def test_given_hostile_parameters_when_opening_the_page_then_a_400_page(
        client: TestClient, query: str) -> None:
    response = client.get(f"/dashboard/overrides?{query}")

    assert response.status_code == 400 and "<script>" not in response.text


def test_given_no_session_when_opening_the_page_then_sent_to_sign_in(env: Env) -> None:
    response = env.client.get("/dashboard/overrides", follow_redirects=False)

    assert response.status_code == 303 and response.headers["location"] == "/"
