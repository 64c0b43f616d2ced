"""Fixtures of the real-browser tests: one `cef up` per session (on free ports, over a new data
directory with the demo world), Debian's Chromium per module, and a fresh profile per test whose
console is watched for Content-Security-Policy violations."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

sys.path.insert(0, str(Path(__file__).parent))

from browser_support import (  # noqa: E402
    CefUp,
    Watch,
    cef_up,
    ensure_axe,
    launch,
    new_context,
    require_chromium,
    watched_page,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives the web app in a real browser (Chromium, Playwright)")


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CefUp]:
    """The whole system as a user starts it: `cef up` with the demo world loaded."""
    require_chromium()
    with cef_up(tmp_path_factory.mktemp("cef-up")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Per module, not per session: Playwright's synchronous API keeps an event loop of its own, which
    # must not outlive these tests into the asynchronous ones that run after them in the same process.
    require_chromium()
    ensure_axe()
    with sync_playwright() as playwright:
        chromium = launch(playwright.chromium)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def watch() -> Watch:
    return Watch()


@pytest.fixture
def context(browser: Browser, system: CefUp) -> Iterator[BrowserContext]:
    ctx = new_context(browser, system.web)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext, watch: Watch) -> Iterator[Page]:
    """A page in a fresh profile; whatever the test did, no page may have broken its own CSP."""
    p = watched_page(context, watch)
    yield p
    watch.assert_no_csp_violations()
