"""The overrides page in a real browser (Debian's Chromium through Playwright) over a service
deployment: the router sweeps the CRM simulator into Redis state, a person reassigns a record
in the simulator, the next sweep records the override, the outbox is flushed into PostgreSQL,
and `serve`'s app shows it under uvicorn on a loopback port."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser, Page, expect

from connectors import registry
from connectors.settings import Settings
from connectors.simulator import Simulator, serve
from connectors.transport import Unlimited
from sync.compiler import load_routing
from sync.history import History
from sync.history.outbox import drain
from sync.history.overrides import Override, list_overrides
from sync.pipeline import Pipeline
from sync.state.redis import RedisStateStore
from tasks.http import create_app
from tasks.metrics import LocalMetrics
from tests.servers.browser import VIEWPORT, PageGuard, screenshot
from tests.servers.postgres import PostgresServer
from tests.servers.served import served
from tests.tasks.dashboard.test_browser import EXAMPLE, TOKEN, sign_in


@dataclass
class Deployment:
    url: str
    history: History
    override: Override  # the one a person made


@pytest.fixture(scope="module")
def deployment(redis_server: str, postgres_server: PostgresServer) -> Iterator[Deployment]:
    sim = Simulator(seed=21)
    sim.seed(companies=40, contacts=0, accounts=0, leads=0, days=0)
    with serve(sim) as running, pytest.MonkeyPatch.context() as env:
        for name, value in running.env().items():
            env.setenv(name, value)
        database = postgres_server.create_database("dashboard_overrides")
        history = History(database)
        history.upgrade()
        # A prefix of its own: the other browser module's deployment shares this Redis.
        store = RedisStateStore(redis_server, prefix="ov-browser:")
        routing = load_routing(EXAMPLE)
        connector = registry.create("hubspot", Settings(), limiter=Unlimited(),
                                    transport_sleep=lambda _: None)
        with closing(connector):
            pipeline = Pipeline(connector, routing, store, metrics=LocalMetrics())
            pipeline.sweep("companies", full=True)
            marks = store.owner_marks("hubspot", "companies", sim.ids("hubspot", "companies"))
            record_id, mark = sorted(marks.items())[0]
            sim.reassign("hubspot", "companies", record_id,
                         "100" if mark.owner != "100" else "101", by="5000100")
            pipeline.sweep("companies")
        drain(store, history, budget_seconds=30.0)
        [override] = list_overrides(history)
        settings = Settings.model_validate({
            "api_token": TOKEN, "config": str(EXAMPLE), "redis_url": redis_server,
            "database_url": database})
        app = create_app(settings, store, lambda *_: None, metrics=LocalMetrics())
        try:
            with served(app) as url:
                yield Deployment(url, history, override)
        finally:
            store.close()
            history.close()


def test_given_a_persons_reassignment_when_opening_overrides_then_it_lists_with_its_rates(
        deployment: Deployment, page: Page) -> None:
    o = deployment.override
    sign_in(page, deployment.url)
    page.click("nav a:has-text('Overrides')")
    page.wait_for_url("**/dashboard/overrides")

    row = page.locator(f"#overrides tr[data-record='{o.record_id}']")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(3)).to_have_text(o.from_)
    expect(row.locator("td").nth(4)).to_have_text(o.to)
    expect(row.locator("td").nth(5)).to_have_text("sweep")  # a HubSpot read names nobody
    rule_row = page.locator(f"#by-rule tr[data-rule='{o.rule}']")
    expect(rule_row.locator("td").nth(1)).to_have_text("1")
    rep_row = page.locator(f"#by-rep tr[data-rep='{o.from_}']")
    expect(rep_row.locator("td").nth(1)).to_have_text("1")
    screenshot(page, "overrides")

    # Filter by the rule from its rate row, then follow the record to its decisions.
    rule_row.locator("a").click()
    page.wait_for_url(f"**/dashboard/overrides?*rule={o.rule}*")
    expect(page.locator("#overrides tbody tr")).to_have_count(1)
    page.locator("#overrides a.record").click()
    page.wait_for_url(f"**/dashboard/decisions?record={o.record_id}")
    expect(page.locator("#decisions tbody tr").first).to_contain_text(o.record_id)


def test_given_no_javascript_when_reading_overrides_then_the_list_shows_in_utc(
        deployment: Deployment, browser: Browser) -> None:
    context = browser.new_context(viewport=VIEWPORT, java_script_enabled=False)
    plain = context.new_page()
    guard = PageGuard(plain)
    try:
        sign_in(plain, deployment.url)
        plain.goto(deployment.url + "/dashboard/overrides?window=30d")
        row = plain.locator(f"#overrides tr[data-record='{deployment.override.record_id}']")
        expect(row.locator("time")).to_have_text(
            re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
        screenshot(plain, "overrides-no-js")
    finally:
        context.close()
    assert not guard.problems, guard.problems
