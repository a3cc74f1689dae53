"""Playwright fixtures over Debian's Chromium: a page that fails the test on console errors,
page errors and any request leaving loopback, and a screenshot helper."""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Error,
    Page,
    Route,
    ViewportSize,
    sync_playwright,
)

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SCREENSHOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,80}")
# Laptop size the issue asks the dashboard to be usable at.
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}


class PageGuard:
    """Watches one page: console errors, uncaught page errors, and requests to a host other than
    loopback (aborted, so a test never reaches the internet, and recorded)."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        # Console errors a test causes on purpose (`expect_console_error`): pattern -> seen.
        self.expected: dict[re.Pattern[str], bool] = {}
        page.on("console", self._on_console)
        page.on("pageerror", self._on_pageerror)
        page.route("**/*", self._on_route)
        _GUARDS[page] = self

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            location = message.location
            text = f"{message.text} ({location.get('url')}:{location.get('lineNumber')})"
            for pattern in self.expected:
                if pattern.search(text):
                    self.expected[pattern] = True
                    return
            self.problems.append(f"console error: {text}")

    def unmet(self) -> list[str]:
        return [f"expected console error never logged: {p.pattern}"
                for p, seen in self.expected.items() if not seen]

    def _on_pageerror(self, error: Error) -> None:
        self.problems.append(f"page error: {error.message}")

    def _on_route(self, route: Route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname in LOOPBACK_HOSTS:
            route.continue_()
            return
        if parts.scheme in ("data", "blob", "about"):
            route.continue_()  # in-page content: no host involved
            return
        self.problems.append(f"request to a non-loopback address: {url}")
        route.abort("blockedbyclient")


_GUARDS: weakref.WeakKeyDictionary[Page, PageGuard] = weakref.WeakKeyDictionary()


def expect_console_error(page: Page, pattern: str) -> None:
    """Declare a console error the test causes on purpose (Chromium logs every 4xx document as
    "Failed to load resource", e.g. the 401 of a refused sign-in): it must then be logged, and
    it does not fail the test. Any other console error still does."""
    _GUARDS[page].expected[re.compile(pattern)] = False


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, driven by Playwright, for the whole session."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} not found; the browser tests use Debian's Chromium (not Playwright's "
            "download): run `bash .ci/dev test` once (it runs `apt-get install -y chromium`)",
            pytrace=False,
        )
    # Chromium's sandbox cannot start as root (containers, CI); as a normal user keep it.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=args
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page (own cookies) at 1280x800; the test fails if the page logged a console
    error, threw, or asked for anything beyond loopback."""
    context = browser.new_context(viewport=VIEWPORT)
    opened = context.new_page()
    guard = PageGuard(opened)
    try:
        yield opened
    finally:
        context.close()
    problems = guard.problems + guard.unmet()
    if problems:
        pytest.fail("the page misbehaved:\n  " + "\n  ".join(problems), pytrace=False)


def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as tests/artifacts/screenshots/NAME.png (gitignored): its path."""
    if not SCREENSHOT_NAME.fullmatch(name):
        raise ValueError(f"screenshot name {name!r} is not [A-Za-z0-9_.-]+")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
