"""The territory-overlap page: the last 30 days of history per rule of the routing file (wins,
matched with nobody eligible and who took those, rules that never won), equal to the history,
over HTTP and in Chromium; the full matrix is pointed to on the CLI."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Page, expect

from connectors.settings import Settings
from sync.history import History
from sync.models import Decision, Outcome, TraceStep
from sync.state import StateStore, open_store
from tasks.http import create_app
from tests.servers.browser import screenshot
from tests.servers.served import served
from tests.tasks.dashboard.conftest import HOSTILE, NOW, TOKEN, RecordingEnqueue, sign_in
from tests.tasks.dashboard.test_pages import rows

ROUTING = """version: 1
reps:
  - {id: ana}
  - {id: bo}
pools:
  west: {members: [ana]}
rules:
  - {name: named, when: {domain: {eq: named.com}}, assign: {rep: bo}}
  - {name: west, when: {state: {eq: CA}}, assign: {pool: west}}
  - {name: never, when: {country: {eq: NZ}}, assign: {rep: ana}}
  - {name: rest, assign: {rep: bo}}
"""


def decided(n: int, rule: str | None, owner: str | None, *, days: float = 1,
            unassignable: tuple[str, ...] = (), outcome: Outcome = Outcome.ASSIGNED
            ) -> Decision:
    steps = tuple(TraceStep(r, "no_assignee", "pool west: nobody eligible (ana paused)")
                  for r in unassignable)
    if rule is not None:
        steps += (TraceStep(rule, "won", owner or ""),)
    return Decision(record_id=f"r{n}", object="account", crm="hubspot", outcome=outcome,
                    owner=owner, rule=rule, reason="", trace=steps, trigger="sweep",
                    decided_at=NOW - timedelta(days=days))


def history_rows() -> list[Decision]:
    """In the window: named 2, west 3, rest 4 (2 of them after west had nobody), an
    unassigned record west could not place, a kept one; a rule since removed, 1; and 5
    decisions for `never` 31 days ago, outside the window."""
    out = [decided(1, "named", "bo"), decided(2, "named", "bo", days=29.9)]
    out += [decided(10 + i, "west", "ana") for i in range(3)]
    out += [decided(20 + i, "rest", "bo") for i in range(2)]
    out += [decided(30 + i, "rest", "bo", unassignable=("west",)) for i in range(2)]
    out.append(decided(40, None, None, unassignable=("west",), outcome=Outcome.UNASSIGNED))
    out.append(decided(41, None, "ana", outcome=Outcome.KEPT_EXISTING))
    out.append(decided(42, HOSTILE, "bo"))
    out += [decided(50 + i, "never", "ana", days=31) for i in range(5)]
    return out


@dataclass
class Env:
    client: TestClient
    app: object
    store: StateStore
    history: History


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_store(state)
    history = History(state)
    history.upgrade()
    history.record([(i + 1, d) for i, d in enumerate(history_rows())])
    settings = Settings.model_validate({"api_token": TOKEN, "config": str(routing)})
    app = create_app(settings, store, RecordingEnqueue(), clock=lambda: NOW.timestamp(),
                     history=history)
    try:
        yield Env(TestClient(app), app, store, history)
    finally:
        history.close()
        store.close()


def test_given_30_days_of_history_when_opening_overlap_then_per_rule_counts_equal_it(
        env: Env) -> None:
    sign_in(env.client)
    page = env.client.get("/dashboard/overlaps")

    assert page.status_code == 200
    table = rows(page.text, "rule")
    # Routing-file order first, then the rule only the history knows; markup escaped.
    assert list(table) == ["named", "west", "never", "rest", HOSTILE]
    assert [table[r][1] for r in ("named", "west", "never", "rest")] == ["2", "3", "0", "4"]
    hits = env.history.rule_hits(NOW - timedelta(days=30), NOW)
    assert {k: v for k, v in hits.items() if k} == {"named": 2, "west": 3, "rest": 4, HOSTILE: 1}
    assert table["west"][3] == "3"  # matched, nobody eligible
    assert "rest 2" in table["west"][4] and "(unassigned) 1" in table["west"][4]
    assert table["never"][5] == "no wins" and table["rest"][5] == "wins"
    assert "not in the file" in table[HOSTILE][5]
    assert re.search(r'data-testid="dead">No wins in 30 days: <a href="/dashboard/decisions'
                     r'\?rule=never">never</a>\.', page.text)
    assert '<span data-testid="decisions">12</span>' in page.text
    assert '<span data-testid="no-rule">2</span>' in page.text
    assert "account-router overlaps --config" in page.text
    assert HOSTILE not in page.text


def test_given_no_session_when_opening_overlap_then_sent_to_sign_in(env: Env) -> None:
    response = env.client.get("/dashboard/overlaps", follow_redirects=False)

    assert response.status_code in (302, 303, 307) and response.headers["location"] == "/"


def test_given_the_overlap_page_in_chromium_then_it_reads_and_links_to_decisions(
        env: Env, page: Page) -> None:
    with served(env.app) as url:
        page.goto(url + "/")
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        expect(page).to_have_url(re.compile(r"/dashboard/overview$"))
        page.click("nav a:has-text('Overlap')")
        page.wait_for_url("**/dashboard/overlaps")

        expect(page.locator("h1")).to_have_text("Territory overlap")
        expect(page.locator("#territory tbody tr")).to_have_count(5)
        expect(page.locator("tr[data-rule='never']")).to_contain_text("no wins")
        expect(page.locator("svg.chart.bars rect.bar")).to_have_count(5)
        expect(page.get_by_test_id("cli")).to_contain_text("account-router overlaps")
        screenshot(page, "territory-overlap")
        page.locator("tr[data-rule='west'] td a", has_text="rest").click()
        page.wait_for_url("**/dashboard/decisions?rule=rest")
        expect(page.locator("h1")).to_contain_text("Decisions")
