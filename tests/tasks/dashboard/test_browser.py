"""The dashboard in a real browser (Debian's Chromium through Playwright) over a real service
deployment: the simulator demo's pipeline routes into Redis state, the outbox is flushed into
PostgreSQL, and `serve`'s app runs under uvicorn on a loopback port. The page fixture fails a
test on any console error or any request beyond loopback."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from playwright.sync_api import Browser, Page, expect

from connectors import registry
from connectors.settings import Settings
from connectors.simulator import Simulator, serve
from connectors.transport import Unlimited
from sync.compiler import CompiledRouting, load_routing
from sync.history import History, HistoryEvent
from sync.history.outbox import drain
from sync.models import event_id
from sync.pipeline import Pipeline
from sync.state.redis import RedisStateStore
from tasks.http import create_app
from tasks.metrics import LocalMetrics
from tests.servers.browser import VIEWPORT, PageGuard, expect_console_error, screenshot
from tests.servers.postgres import PostgresServer
from tests.servers.served import served

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "config" / "examples" / "routing.yaml"
OBJECTS = {"hubspot": ("companies", "contacts"), "salesforce": ("Account", "Lead")}
TOKEN = "browser-test-token"
PORTAL = "62515"
T = TypeVar("T")


@dataclass
class Deployment:
    url: str
    history: History
    store: RedisStateStore
    sim: Simulator
    routing: CompiledRouting
    enqueued: list[tuple[str, str, list[str], str]]  # what the app handed to the workers

    def pipeline_run(self, crm: str, run: Callable[[Pipeline], T]) -> T:
        """`run` on a pipeline over this deployment's state, as a worker would build it."""
        connector = registry.create(crm, Settings(), limiter=Unlimited(),
                                    transport_sleep=lambda _: None)
        with closing(connector):
            return run(Pipeline(connector, self.routing, self.store, metrics=LocalMetrics()))

    def flush(self) -> None:
        """What beat's `history.flush` does: the outbox into PostgreSQL, then empty."""
        drain(self.store, self.history, budget_seconds=30.0)
        assert self.store.outbox_size() == 0


@pytest.fixture(scope="module")
def deployment(redis_server: str, postgres_server: PostgresServer) -> Iterator[Deployment]:
    sim = Simulator(seed=7)
    sim.seed(companies=150, contacts=40, accounts=150, leads=40, days=0)
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    client.close()
    with serve(sim) as running, pytest.MonkeyPatch.context() as env:
        for name, value in running.env().items():
            env.setenv(name, value)
        database = postgres_server.create_database("dashboard_browser")
        history = History(database)
        history.upgrade()
        store = RedisStateStore(redis_server)
        routing = load_routing(EXAMPLE)
        deployed = Deployment("", history, store, sim, routing, [])
        for crm, objects in OBJECTS.items():
            deployed.pipeline_run(crm, lambda p, objects=objects: [
                p.sweep(obj, full=True) for obj in objects])
        deployed.flush()
        # As `serve` runs in service mode: the app opens the history at
        # ACCOUNT_ROUTER_DATABASE_URL itself.
        settings = Settings.model_validate({
            "api_token": TOKEN, "config": str(EXAMPLE), "hubspot_portal_id": PORTAL,
            "redis_url": redis_server, "database_url": database})
        app = create_app(settings, store,
                         lambda crm, obj, ids, trigger: deployed.enqueued.append(
                             (crm, obj, list(ids), trigger)),
                         metrics=LocalMetrics())
        try:
            with served(app) as deployed.url:
                yield deployed
        finally:
            store.close()
            history.close()


def sign_in(page: Page, url: str, token: str = TOKEN) -> None:
    page.goto(url + "/")
    page.fill("#token", token)
    page.click("button[type=submit]")


NAV = {"Overview": "overview", "Balance": "balance", "Reps": "reps", "Decisions": "decisions",
       "Failed writes": "failed"}


def go(page: Page, name: str) -> None:
    """Follow the navigation link `name` and wait for that page, loaded with its stylesheet:
    reads that do not wait on their own (`locator.all()`) then see the new page."""
    page.click(f"nav a:has-text('{name}')")
    page.wait_for_url(f"**/dashboard/{NAV[name]}")
    page.wait_for_load_state("load")


def window() -> tuple[datetime, datetime]:
    """The 7-day window as the app sees it (every decision here is minutes old)."""
    now = datetime.now(UTC)
    return now - timedelta(days=7), now + timedelta(minutes=5)


def cells(page: Page, selector: str, column: int) -> dict[str, int]:
    """{row key: the number in `column`} for rows matching `selector` (`tr[data-x]`)."""
    attr = re.search(r"tr\[data-([a-z]+)\]$", selector)
    assert attr is not None
    out = {}
    for row in page.locator(selector).all():
        key = row.get_attribute(f"data-{attr[1]}")
        assert key is not None
        out[key] = int(row.locator("td").nth(column).inner_text().replace(",", "").split()[0])
    return out


def test_given_a_wrong_password_when_signing_in_then_the_error_shows(
        deployment: Deployment, page: Page) -> None:
    # The refusal is a 401, which Chromium reports on the console: expected here, and only here.
    expect_console_error(page, r"status of 401 .*/dashboard/signin")
    sign_in(page, deployment.url, "not-the-token")
    expect(page.locator("p.error")).to_contain_text("not the API token")
    expect(page.locator("#token")).to_be_visible()
    screenshot(page, "signin-error")


def test_given_the_routed_demo_when_signed_in_then_every_page_shows_the_historys_numbers(
        deployment: Deployment, page: Page) -> None:
    sign_in(page, deployment.url)
    expect(page).to_have_url(re.compile(r"/dashboard/overview$"))
    since, until = window()
    outcomes = deployment.history.outcome_counts(since, until)
    assert sum(outcomes.values()) > 300
    shown = cells(page, "tr[data-outcome]", 1)
    assert {k: v for k, v in shown.items() if v} == {k: v for k, v in outcomes.items() if v}
    assert cells(page, "#rules tr[data-rule]", 1) == deployment.history.rule_hits(since, until)
    # The script ran: times in the viewer's timezone, the UTC text kept as the tooltip.
    expect(page.locator("p.period time").first).to_have_attribute("title", re.compile("UTC"))
    expect(page.locator("svg.chart circle.dot.p50").first).to_be_visible()
    screenshot(page, "overview")  # docs/screenshots/overview.png is a copy of this one
    page.locator("#speed").evaluate("t => t.closest('details').open = true")
    speed = deployment.history.speed_to_lead(since, until, 28)
    records = [int(c.replace(",", "")) for c in
               page.locator("#speed tbody tr td:nth-child(2)").all_inner_texts()]
    assert sum(records) == sum(p.count for p in speed) > 0
    # Sorting a table by a header click.
    page.locator("#rules th", has_text="Decisions").locator("button").click()
    counts = [int(c.replace(",", "")) for c in
              page.locator("#rules tbody tr td:nth-child(2)").all_inner_texts()]
    assert counts == sorted(counts)

    go(page, "Balance")
    load = deployment.history.load(since, until)
    for pool in deployment.routing.pools:
        turns = {r.rep: r.count for r in load if r.pool == pool and r.outcome == "assigned"}
        shown = cells(page, f"table[data-pool='{pool}'] tr[data-rep]", 1)
        assert {k: v for k, v in shown.items() if v} == turns, pool
    per_rep: dict[str, int] = {}
    for r in load:
        per_rep[r.rep] = per_rep.get(r.rep, 0) + r.count
    assert cells(page, "#per-rep-table tr[data-rep]", 3) == per_rep
    screenshot(page, "balance")

    go(page, "Reps")
    expect(page.locator("tr[data-rep='gus'] .pill")).to_have_text("Inactive")
    screenshot(page, "reps")
    go(page, "Decisions")
    expect(page.locator("#decisions tbody tr")).to_have_count(50)
    screenshot(page, "decisions")
    go(page, "Failed writes")
    expect(page.locator("h1")).to_have_text("Failed writes")

    # A phone: nothing wider than the screen (wide tables scroll inside their card).
    page.set_viewport_size({"width": 390, "height": 844})
    for name in ("Overview", "Balance", "Reps", "Decisions"):
        go(page, name)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, name
        screenshot(page, f"{name.lower()}-phone")


def test_given_a_record_when_searching_it_then_its_decision_and_trace_show(
        deployment: Deployment, page: Page) -> None:
    record = deployment.history.decision_ids(rule="enterprise-size", limit=1)[0][1]
    sign_in(page, deployment.url)
    go(page, "Decisions")
    page.fill("input[name=record]", record.record_id)
    page.click("form.search button[type=submit]")
    rows = page.locator("#decisions tbody tr")
    expect(rows).to_have_count(1)
    rows.locator("a.record").click()
    expect(page.locator("[data-testid=record-id]")).to_have_text(record.record_id)
    expect(page.locator("#trace tr.won")).to_contain_text("enterprise-size")
    expect(page.locator("[data-testid=reason]")).to_have_text(record.reason)
    if record.crm == "hubspot":
        expect(page.locator("a", has_text="Open in HubSpot")).to_have_attribute(
            "href", re.compile(rf"app\.hubspot\.com/contacts/{PORTAL}/record/0-2/"))
    screenshot(page, "decision")


def test_given_a_pools_next_rep_when_paused_on_the_reps_page_then_the_next_record_skips_them(
        deployment: Deployment, page: Page) -> None:
    created = deployment.sim.hubspot_create("companies", {
        "name": "Tiny Browser Co", "domain": "tiny-browser-co.example", "numberofemployees": 12,
        "industry": "Retail"})
    record_id = str(created)
    would = deployment.pipeline_run(
        "hubspot", lambda p: p.explain("companies", record_id))
    assert would.rule == "everyone-else" and would.owner in ("cara", "dev", "eli")
    paused = would.owner

    sign_in(page, deployment.url)
    go(page, "Reps")
    page.locator(f"tr[data-rep='{paused}'] button", has_text="Pause").click()
    expect(page.locator("p.notice")).to_have_text(f"Paused {paused}.")
    expect(page.locator(f"tr[data-rep='{paused}'] .pill")).to_have_text("Paused")
    screenshot(page, "reps-paused")

    deployment.pipeline_run(
        "hubspot", lambda p: p.route_ids("companies", [record_id], trigger="webhook"))
    deployment.flush()
    routed = deployment.history.decisions(record_id=record_id)
    assert len(routed) == 1
    assert routed[0].owner in ("cara", "dev", "eli") and routed[0].owner != paused

    go(page, "Decisions")
    page.fill("input[name=record]", record_id)
    page.click("form.search button[type=submit]")
    expect(page.locator("#decisions tbody tr")).to_have_count(1)
    expect(page.locator("#decisions tbody tr td").nth(4)).to_have_text(routed[0].owner or "")

    go(page, "Reps")
    page.locator(f"tr[data-rep='{paused}'] button", has_text="Resume").click()
    expect(page.locator("p.notice")).to_have_text(f"Resumed {paused}.")


def test_given_a_failed_write_when_retried_from_the_failed_page_then_it_is_written(
        deployment: Deployment, page: Page) -> None:
    lead = deployment.sim.salesforce_create("Lead", {
        "Company": "Locked Row Co", "LastName": "Ng", "Email": "ng@locked-row.example",
        "NumberOfEmployees": 8})
    # Salesforce answers UNABLE_TO_LOCK_ROW to every write: retried, then left for later.
    deployment.sim.configure_faults(lock_error_rate=1.0)
    try:
        deployment.pipeline_run(
            "salesforce", lambda p: p.route_ids("Lead", [lead], trigger="webhook"))
    finally:
        deployment.sim.clear_faults()
    deployment.flush()
    assert deployment.store.failed("salesforce", "Lead") == [lead]

    sign_in(page, deployment.url)
    go(page, "Failed writes")
    group = page.locator("section[data-crm='salesforce'][data-object='Lead']")
    expect(group.locator("tbody tr")).to_have_count(1)
    expect(group.locator("tbody tr")).to_contain_text(lead)
    expect(group.locator("tbody tr")).to_contain_text("UNABLE_TO_LOCK_ROW")
    screenshot(page, "failed")
    page.once("dialog", lambda dialog: dialog.accept())  # "retry all" asks first
    group.locator("button", has_text="Retry all").click()
    expect(page.locator("p.notice")).to_have_text("Retry started for 1 records.")
    assert deployment.enqueued == [("salesforce", "Lead", [lead], "reprocess")]

    # What a worker does with the hand-over; then nothing waits any more.
    deployment.pipeline_run(
        "salesforce", lambda p: p.route_ids("Lead", [lead], trigger="reprocess"))
    deployment.flush()
    assert deployment.sim.owner_of("salesforce", "Lead", lead) is not None
    page.reload()
    expect(page.locator("p.empty")).to_contain_text("Nothing waits")


def test_given_no_javascript_when_reading_the_pages_then_numbers_show_and_times_are_utc(
        deployment: Deployment, browser: Browser) -> None:
    context = browser.new_context(viewport=VIEWPORT, java_script_enabled=False)
    page = context.new_page()
    guard = PageGuard(page)
    try:
        sign_in(page, deployment.url)
        expect(page).to_have_url(re.compile(r"/dashboard/overview$"))
        since, until = window()
        shown = cells(page, "tr[data-outcome]", 1)
        outcomes = deployment.history.outcome_counts(since, until)
        assert {k: v for k, v in shown.items() if v} == {k: v for k, v in outcomes.items() if v}
        expect(page.locator("p.period time").first).to_have_text(re.compile(r" UTC$"))
        expect(page.locator("svg.chart")).to_have_count(2)
        go(page, "Decisions")
        expect(page.locator("#decisions tbody tr").first.locator("time").first).to_have_text(
            re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
        screenshot(page, "decisions-no-js")
    finally:
        context.close()
    assert not guard.problems, guard.problems


def test_given_a_viewer_in_new_york_when_pausing_until_a_local_time_then_the_instant_is_right(
        deployment: Deployment, browser: Browser) -> None:
    context = browser.new_context(viewport=VIEWPORT, timezone_id="America/New_York",
                                  locale="en-US")
    page = context.new_page()
    guard = PageGuard(page)
    try:
        sign_in(page, deployment.url)
        # Times show in the viewer's zone, the UTC text kept on hover.
        period = page.locator("p.period time").first
        expect(period).to_have_text(re.compile(r"EST$"))
        expect(period).to_have_attribute("title", re.compile(r"UTC$"))
        go(page, "Reps")
        row = page.locator("tr[data-rep='maya']")
        expect(row.locator(".until-zone")).to_have_text("until (your time, optional)")
        row.locator("input[type=datetime-local]").fill("2030-01-02T09:30")
        row.locator("button", has_text="Pause").click()
        expect(page.locator("p.notice")).to_have_text("Paused maya.")
        assert deployment.store.pauses(datetime.now(UTC))["maya"] == \
            datetime(2030, 1, 2, 14, 30, tzinfo=UTC)
        expect(page.locator("tr[data-rep='maya'] time")).to_contain_text("9:30")
        page.locator("tr[data-rep='maya'] button", has_text="Resume").click()
        expect(page.locator("p.notice")).to_have_text("Resumed maya.")
    finally:
        context.close()
    assert not guard.problems, guard.problems


def test_given_first_touch_events_when_viewing_the_overview_then_speed_per_rep_and_rule_shows(
        deployment: Deployment, page: Page) -> None:
    # What `sla-check` records (sync/sla_watch.py): touches with their seconds, a breach
    # re-routed away from its rep, and one escalated.
    now = datetime.now(UTC) - timedelta(minutes=1)
    events = [HistoryEvent(id=event_id("touched", f"browser-{i}"), decision_id=None,
                           record_id=f"sla-{i}", crm="hubspot", object="account",
                           kind="touched", at=now,
                           data={"rep": "cara", "rule": "everyone-else", "seconds": s})
              for i, s in enumerate([120.0, 300.0, 900.0])]
    events += [
        HistoryEvent(id=event_id("sla_breach", "browser-b1"), decision_id=None,
                     record_id="sla-b1", crm="hubspot", object="account", kind="sla_breach",
                     at=now, data={"rep": "dev", "rule": "everyone-else", "action": "reroute"}),
        HistoryEvent(id=event_id("rerouted", "browser-b1"), decision_id=None,
                     record_id="sla-b1", crm="hubspot", object="account", kind="rerouted",
                     at=now, data={"from": "dev", "to": "eli", "rule": "everyone-else"}),
        HistoryEvent(id=event_id("sla_breach", "browser-b2"), decision_id=None,
                     record_id="sla-b2", crm="hubspot", object="account", kind="sla_breach",
                     at=now, data={"rep": "eli", "rule": "everyone-else",
                                   "action": "notify_manager"}),
    ]
    deployment.history.record_events(events)
    since, until = window()
    rows = deployment.history.first_touch(since, until)

    sign_in(page, deployment.url)

    table = page.locator("#first-touch")
    expect(table.locator("tbody tr")).to_have_count(len(rows))
    cara = table.locator("tr[data-rep='cara'][data-rule='everyone-else']")
    expect(cara.locator("td").nth(2)).to_have_text("3")
    expect(cara.locator("td.p50")).to_have_text("5.0 min")
    expect(cara.locator("td.p95")).to_have_text("14.0 min")  # 300 + 0.9 * 600 s
    dev = table.locator("tr[data-rep='dev'][data-rule='everyone-else']")
    expect(dev.locator("td.breaches")).to_have_text("1")
    expect(dev.locator("td.reroutes")).to_have_text("1")
    expect(page.locator("[data-testid=breaches]")).to_have_text(
        str(sum(r.breaches for r in rows)))
    expect(page.locator("[data-testid=reroutes]")).to_have_text(
        str(sum(r.reroutes for r in rows)))
    # Each row links to the rep's decisions.
    dev.locator("td").first.locator("a").click()
    page.wait_for_url(re.compile(r"/dashboard/decisions\?rep=dev"))
    screenshot(page, "overview-first-touch")
