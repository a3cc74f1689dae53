"""The review queue page in Chromium: held records listed, approve and reassign with the CSRF
token and a confirmation, over `serve`'s app (uvicorn on loopback), embedded state and the CRM
simulator."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from connectors import registry
from connectors.settings import Settings
from connectors.simulator import Simulator, serve
from sync.compiler import CompiledRouting, load_routing
from sync.pipeline import Pipeline
from sync.state.sqlite import SqliteStateStore
from tasks.http import create_app
from tasks.metrics import LocalMetrics
from tests.servers.browser import screenshot
from tests.servers.served import served as served_app

TOKEN = "review-browser-token"
ROUTING = """version: 1
reps:
  - {id: ana, crm_ids: {hubspot: '101'}}
  - {id: bo, crm_ids: {hubspot: '102'}}
  - {id: cy, crm_ids: {hubspot: '103'}}
pools: {team: {members: [ana, bo], strategy: round_robin}}
rules: [{name: everyone, assign: {pool: team}, review: true}]
"""


@dataclass
class Served:
    url: str
    sim: Simulator
    store: SqliteStateStore
    routing: CompiledRouting
    settings: Settings

    def held(self, name: str) -> str:
        """A new company routed (held for review): its record id."""
        record = str(self.sim.hubspot_create("companies", {"name": name,
                                                           "domain": f"{name}.example"}))
        connector = registry.create_for("hubspot", self.routing, self.settings)
        try:
            Pipeline(connector, self.routing, self.store).route_ids("companies", [record])
        finally:
            connector.close()
        return record


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    sim = Simulator(seed=9)
    sim.seed(companies=0, contacts=0, accounts=0, leads=0, days=0)
    config = tmp_path / "routing.yaml"
    config.write_text(ROUTING)
    with serve(sim) as running:
        for name, value in running.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("ACCOUNT_ROUTER_REDIS_URL", raising=False)
        settings = Settings.model_validate({"api_token": TOKEN, "config": str(config)})
        store = SqliteStateStore(tmp_path / "state.db")
        app = create_app(settings, store, lambda *_: None, metrics=LocalMetrics())
        try:
            with served_app(app) as url:
                yield Served(url, sim, store, load_routing(config), settings)
        finally:
            store.close()


def open_queue(page: Page, url: str) -> None:
    page.goto(url + "/")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/dashboard/overview$"))
    page.click("nav a:has-text('Review queue')")
    page.wait_for_url("**/dashboard/review")


def test_given_held_records_when_approved_and_reassigned_in_the_browser_then_each_is_written(
        served: Served, page: Page) -> None:
    first = served.held("approve-me")
    second = served.held("reassign-me")
    [one, two] = sorted(served.store.reviews(), key=lambda i: i.record_id == second)

    open_queue(page, served.url)
    rows = page.locator("tr[data-item]")
    expect(rows).to_have_count(2)
    expect(page.locator(f"tr[data-item='{one.id}']")).to_contain_text("ana")
    expect(page.locator(f"tr[data-item='{two.id}']")).to_contain_text("bo")
    screenshot(page, "review-queue")

    # Dismissing the confirmation sends nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator(f"tr[data-item='{one.id}'] button", has_text="Approve").click()
    expect(rows).to_have_count(2)
    assert served.sim.owner_of("hubspot", "companies", first) is None

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f"tr[data-item='{one.id}'] button", has_text="Approve").click()
    expect(page.locator("p.notice")).to_have_text(f"Approved: wrote {first} (ana).")
    assert served.sim.owner_of("hubspot", "companies", first) == "101"

    row = page.locator(f"tr[data-item='{two.id}']")
    row.locator("select[name=rep]").select_option("cy")
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button", has_text="Reassign").click()
    expect(page.locator("p.notice")).to_have_text(f"Reassigned: wrote {second} (cy).")
    assert served.sim.owner_of("hubspot", "companies", second) == "103"
    expect(page.locator("p.empty")).to_have_text("Nothing waits for review.")
    expect(page.locator("table:not(.review) tbody tr")).to_have_count(2)  # recently decided
    assert served.sim.stats("hubspot")["records_updated"] == 2
    screenshot(page, "review-decided")


def test_given_a_form_without_its_csrf_token_when_posted_then_refused_and_nothing_written(
        served: Served, page: Page) -> None:
    record = served.held("forged")
    [item] = served.store.reviews()
    open_queue(page, served.url)

    # The signed-in browser's cookie goes along, but not the page's CSRF token.
    response = page.request.post(f"{served.url}/dashboard/review/{item.id}/approve",
                                 form={"csrf": "forged"})

    assert response.status == 403
    assert served.sim.owner_of("hubspot", "companies", record) is None
    assert served.store.reviews() == [item]
