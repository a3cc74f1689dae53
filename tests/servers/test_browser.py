"""The browser fixtures: Debian's Chromium renders loopback pages, and the guard catches console
errors, uncaught exceptions and requests leaving loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.servers.browser import SCREENSHOTS, PageGuard, screenshot

ROOT = Path(__file__).resolve().parents[2]
PAGES = {
    "clean.html": "<!doctype html><title>clean</title><link rel=icon href=data:,>"
    "<h1 id=greeting>Hello</h1><script>document.title = 'ready';</script>",
    "console.html": "<!doctype html><link rel=icon href=data:,>"
    "<script>console.error('boom from console');</script>",
    "throws.html": "<!doctype html><link rel=icon href=data:,>"
    "<script>throw new Error('uncaught boom');</script>",
    "external.html": "<!doctype html><link rel=icon href=data:,>"
    "<img src='http://example.com/tracker.png'>",
}


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A loopback http.server over a few test pages: its base URL."""
    root = tmp_path_factory.mktemp("site")
    for name, html in PAGES.items():
        (root / name).write_text(html)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _problems_on(browser: Browser, url: str) -> list[str]:
    context = browser.new_context()
    try:
        opened = context.new_page()
        guard = PageGuard(opened)
        opened.goto(url)
        opened.wait_for_load_state("load")
        return guard.problems
    finally:
        context.close()


def test_given_a_clean_loopback_page_when_visited_then_it_renders_and_a_screenshot_is_saved(
    page: Page, site: str
) -> None:
    page.goto(f"{site}/clean.html")

    assert page.title() == "ready"
    assert page.locator("#greeting").inner_text() == "Hello"
    assert page.viewport_size == {"width": 1280, "height": 800}
    path = screenshot(page, "browser-self-test")
    assert path == SCREENSHOTS / "browser-self-test.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_given_a_console_error_when_visited_then_the_guard_records_it(
    browser: Browser, site: str
) -> None:
    problems = _problems_on(browser, f"{site}/console.html")
    assert any("console error: boom from console" in p for p in problems), problems


def test_given_an_uncaught_exception_when_visited_then_the_guard_records_it(
    browser: Browser, site: str
) -> None:
    problems = _problems_on(browser, f"{site}/throws.html")
    assert any("page error: uncaught boom" in p for p in problems), problems


def test_given_a_request_beyond_loopback_when_visited_then_it_is_aborted_and_recorded(
    browser: Browser, site: str
) -> None:
    problems = _problems_on(browser, f"{site}/external.html")
    assert "request to a non-loopback address: http://example.com/tracker.png" in problems


def test_given_a_hostile_screenshot_name_when_saving_then_it_is_refused(page: Page) -> None:
    with pytest.raises(ValueError, match="screenshot name"):
        screenshot(page, "../../escape")
    assert not (Path(SCREENSHOTS).parent.parent / "escape.png").exists()


def test_given_a_test_whose_page_logs_an_error_when_run_then_that_test_fails(
    tmp_path: Path, site: str
) -> None:
    # The fixture's verdict itself, seen from outside: run a one-test session in a subprocess.
    (tmp_path / "conftest.py").write_text("from tests.servers.browser import browser, page\n")
    (tmp_path / "test_noisy.py").write_text(
        "def test_noisy(page):\n"
        f"    page.goto('{site}/console.html')\n"
        "    page.wait_for_load_state('load')\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(tmp_path), str(tmp_path / "test_noisy.py")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the page misbehaved" in done.stdout and "boom from console" in done.stdout
