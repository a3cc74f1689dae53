"""The Overlap page's matrix for 30 days of history equals `account-router overlaps` over the
same records with the same file: through route-file, through `route_batch`, over HTTP and in
Chromium."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Page, expect

from connectors.settings import Settings
from sync.compiler import load_routing
from sync.engine import route_batch
from sync.history import History
from sync.models import Outcome
from sync.overlaps import OverlapCounter, rule_matches
from sync.state import open_store
from sync.state.sqlite import SqliteStateStore
from tasks.dashboard.territory import WINDOW, matched_overlaps
from tasks.http import create_app
from tests.builders import rec
from tests.servers.browser import screenshot
from tests.servers.served import served
from tests.sync.history.test_contract import decision
from tests.tasks.dashboard.conftest import NOW, TOKEN, RecordingEnqueue, sign_in
from tests.tasks.dashboard.test_pages import number, rows
from tests.tasks.test_cli_overlaps import ROUTING, book
from tests.tasks.test_cli_simulate import invoke

ROUTED = NOW - timedelta(hours=5)  # inside the page's 30 days
OLD = 3  # decisions recorded without their matched rules (before the set was kept)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ACCOUNT_ROUTER_CONFIG", "ACCOUNT_ROUTER_STATE_URL", "ACCOUNT_ROUTER_REDIS_URL",
                 "ACCOUNT_ROUTER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class Routed:
    config: Path
    state: str  # the route-file run's state URL: its history
    report: dict[str, object]  # `overlaps --json` over the same file


@pytest.fixture
def routed(tmp_path: Path) -> Routed:
    config = tmp_path / "routing.yaml"
    config.write_text(ROUTING)
    data = book(tmp_path / "book.csv")
    state = f"sqlite:///{tmp_path / 'state.db'}"
    result = invoke("route-file", "--config", config, "--input", data, "--output",
                    tmp_path / "out.csv", "--now", ROUTED.isoformat(), "--state", state,
                    "--quiet")
    assert result.exit_code == 1, result.output  # the malformed and duplicate rows
    report = invoke("overlaps", "--config", config, "--input", data, "--now",
                    ROUTED.isoformat(), "--json")
    assert report.exit_code == 0, report.output
    return Routed(config, state, json.loads(report.stdout))


def test_given_route_file_history_when_counting_30_days_then_it_equals_the_overlaps_cli(
        routed: Routed) -> None:
    with History(routed.state) as history:
        found, unknown = matched_overlaps(history, load_routing(routed.config),
                                          NOW - WINDOW, NOW)

    assert found is not None and unknown == 0
    assert found.to_dict() == routed.report
    # The file has the cases that matter: a rule that loses to an earlier one, a dead rule.
    rules = {r["rule"]: r for r in routed.report["rules"]}  # type: ignore[attr-defined]
    assert rules["us"]["lost_to"].get("big", 0) > 0 and rules["never"]["dead"]
    assert routed.report["pairs"]


def test_given_decisions_by_route_batch_when_counting_then_they_equal_the_overlap_counter(
        tmp_path: Path) -> None:
    """The generic path (webhooks, sweeps): conditions evaluated in `decide`, not precomputed."""
    config = tmp_path / "routing.yaml"
    config.write_text(ROUTING)
    routing = load_routing(config)
    with (book(tmp_path / "book.csv")).open(newline="") as fh:
        read = [rec(**{k: v for k, v in row.items() if v}) for row in csv.DictReader(fh)
                if row["id"]]
    seen: set[str] = set()
    records = [r for r in read if not (r.id in seen or seen.add(r.id))]  # each id once
    store = SqliteStateStore(tmp_path / "state.db")
    try:
        decisions = []
        for at in range(0, len(records), 100):
            decisions += route_batch(records[at:at + 100], routing, store, ROUTED,
                                     trigger="sweep")
    finally:
        store.close()
    expected = OverlapCounter(routing)
    expected.add_many((rule_matches(routing, r), d)
                      for r, d in zip(records, decisions, strict=True))

    with History(f"sqlite:///{tmp_path / 'state.db'}") as history:
        found, unknown = matched_overlaps(history, routing, NOW - WINDOW, NOW)

    assert found is not None and unknown == 0
    assert found == expected.result()
    assert any(d.outcome == Outcome.KEPT_EXISTING for d in decisions)


@dataclass
class Env:
    client: TestClient
    app: object
    report: dict[str, object]


@pytest.fixture
def env(routed: Routed) -> Iterator[Env]:
    store = open_store(routed.state)
    history = History(routed.state)
    # Decisions of an older version (no matched set), and one outside the window.
    history.record([(10_000 + i, decision(f"old{i}", rule="big", at=NOW - timedelta(days=2)))
                    for i in range(OLD)])
    history.record([(20_000, decision("ancient", rule="us", at=NOW - timedelta(days=31))
                     ._replace(matched=("us", "never")))])
    settings = Settings.model_validate({"api_token": TOKEN, "config": str(routed.config)})
    app = create_app(settings, store, RecordingEnqueue(), clock=lambda: NOW.timestamp(),
                     history=history)
    try:
        yield Env(TestClient(app), app, routed.report)
    finally:
        history.close()
        store.close()


def test_given_the_page_when_opened_then_matches_wins_lost_to_and_pairs_equal_the_cli(
        env: Env) -> None:
    sign_in(env.client)
    page = env.client.get("/dashboard/overlaps")

    assert page.status_code == 200
    table = rows(page.text, "match")
    report_rules = env.report["rules"]
    assert isinstance(report_rules, list)
    assert list(table) == [r["rule"] for r in report_rules]
    for r in report_rules:
        _, matches, wins, lost, status = table[r["rule"]]
        assert (number(matches), number(wins)) == (r["matches"], r["wins"])
        shown = dict(re.findall(r"(\S+(?: \S+)*?) (\d+)(?:, |$)", lost)) if lost != "-" else {}
        assert {k: int(v) for k, v in shown.items()} == r["lost_to"]
        assert status == ("never wins" if r["dead"] else "wins")
    pairs = rows(page.text, "pair")
    assert {tuple(k.split("|")): number(v[2]) for k, v in pairs.items()} == {
        (p["a"], p["b"]): p["both"] for p in env.report["pairs"]}  # type: ignore[attr-defined]
    assert f'<span data-testid="counted">{env.report["records"]}</span>' in page.text
    assert f'<span data-testid="unknown-count">{OLD}</span>' in page.text
    # The CLI's own heat map, inline: a cell per pair of rules.
    assert page.text.count('<rect x="') == len(report_rules) ** 2


def test_given_the_page_in_chromium_then_the_matrix_and_lost_to_read_and_link(
        env: Env, page: Page) -> None:
    rules = {r["rule"]: r for r in env.report["rules"]}  # type: ignore[attr-defined]
    with served(env.app) as url:
        page.goto(url + "/")
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        expect(page).to_have_url(re.compile(r"/dashboard/overview$"))
        page.goto(url + "/dashboard/overlaps")

        expect(page.locator("#overlap tbody tr")).to_have_count(len(rules))
        us = page.locator("tr[data-match='us'] td")
        expect(us.nth(1)).to_have_text(f"{rules['us']['matches']:,}")
        expect(us.nth(3)).to_contain_text(f"big {rules['us']['lost_to']['big']:,}")
        expect(page.locator("tr[data-match='never']")).to_contain_text("never wins")
        expect(page.locator("[data-testid=heat-map] svg rect")).to_have_count(len(rules) ** 2)
        expect(page.locator("#pairs tbody tr")).to_have_count(len(env.report["pairs"]))  # type: ignore[arg-type]
        expect(page.get_by_test_id("unknown")).to_contain_text(f"{OLD} left out")
        screenshot(page, "territory-overlap-matrix")
        page.locator("tr[data-match='us'] td a", has_text="big").click()
        page.wait_for_url("**/dashboard/decisions?rule=big")
