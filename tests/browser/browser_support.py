"""Support for the web app's real-browser tests: `cef up` on free ports, Debian's Chromium driven by
Playwright, the development sign-in, axe-core accessibility checks and screenshots.

Nothing here downloads a browser: the tests use the Chromium the machine has (/usr/bin/chromium)
and skip without it, except in CI (env CI set), where a missing browser or npm is a failure."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Route, ViewportSize

from cef_common.testing import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCREENSHOTS = ROOT / "docs" / "screenshots"
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
# The WCAG 2.2 AA success criteria axe-core can test, and those of the earlier versions it includes.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
CEF = [sys.executable, "-m", "cef_cli.main"]
SERVICES = {
    "web": "CEF_WEB_PORT",
    "cef-api": "CEF_API_PORT",
    "audit": "CEF_AUDIT_PORT",
    "tokeniser": "CEF_TOKENISER_PORT",
}
UP_TIMEOUT = 180.0
# The organisation each role signs in with in the demo world (demo/README.md); auditors have none.
DEMO_ORG = {"provider": "RTR", "staff": "00C", "finance": "00C", "board": "00C", "auditor": ""}
HOME = {
    "provider": "/provider/invoices",
    "staff": "/staff/queue",
    "finance": "/finance/approved",
    "board": "/board/reports",
    "auditor": "/auditor/events",
}


def unavailable(reason: str) -> NoReturn:
    """Skips a test that needs something this machine lacks; in CI, where it must be there, fails."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser tests must run there)")
    pytest.skip(reason)


def require_chromium() -> None:
    if not CHROMIUM.is_file():
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium); the browser tests need it")


def ensure_axe() -> Path:
    """axe-core from tests/browser/package-lock.json, installed with `npm ci` when it is missing."""
    if AXE.is_file():
        return AXE
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed: it installs axe-core for the accessibility checks")
    done = subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0 or not AXE.is_file():
        unavailable(f"`npm ci` in {HERE} failed: {(done.stdout + done.stderr)[-1500:]}")
    return AXE


@dataclass
class CefUp:
    """One `cef up` run: its process, data directory, ports and log."""

    process: subprocess.Popen[str]
    data_dir: Path
    ports: dict[str, int]
    env: dict[str, str]
    log: Path

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def web(self) -> str:
        return self.url("web")


def _ports_env(ports: dict[str, int]) -> dict[str, str]:
    # None of the CEF_* settings of the shell running the tests: they would point elsewhere.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEF_")}
    env.update({SERVICES[name]: str(port) for name, port in ports.items()})
    env["COLUMNS"] = "200"
    return env


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _start(tmp: Path) -> CefUp | None:
    """One `cef up` until it says it is up; None when it gave up because its services were slower
    to start than it waits for (a machine busy with other work), so a second try is worthwhile."""
    ports = {name: free_port() for name in SERVICES}
    env = _ports_env(ports)
    tmp.mkdir(parents=True, exist_ok=True)
    data_dir = tmp / "var"
    log = tmp / "up.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [*CEF, "up", "--data-dir", str(data_dir)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp,
        )
    system = CefUp(process, data_dir, ports, env, log)
    deadline = time.monotonic() + UP_TIMEOUT
    try:
        # Up means what a user sees: the banner printed and every service answering /readyz.
        while not ("CEF is up" in log.read_text() and all(_ready(system.url(s)) for s in ports)):
            if process.poll() is not None:
                said = log.read_text()
                if "not ready after" in said:
                    return None
                raise AssertionError(f"cef up exited early:\n{said[-3000:]}")
            assert time.monotonic() < deadline, (
                f"cef up not ready in {UP_TIMEOUT:.0f} s:\n{log.read_text()[-3000:]}"
            )
            time.sleep(0.3)
    except BaseException:
        stop(system)
        raise
    return system


def stop(system: CefUp) -> None:
    """Stops `cef up` as a user does, with Ctrl-C."""
    if system.process.poll() is None:
        system.process.send_signal(signal.SIGINT)
        try:
            system.process.wait(60)
        except subprocess.TimeoutExpired:
            system.process.kill()
            system.process.wait()


@contextmanager
def cef_up(tmp: Path, attempts: int = 2) -> Iterator[CefUp]:
    """`cef up` on free ports over a new data directory (so the demo world is loaded), until the
    block ends; then stopped."""
    for attempt in range(1, attempts + 1):
        system = _start(tmp / f"try-{attempt}")
        if system is not None:
            break
    else:
        raise AssertionError(f"cef up was not ready in {attempts} tries: see {tmp}/try-*/up.log")
    try:
        yield system
    finally:
        stop(system)


def launch(playwright_chromium: Any) -> Browser:
    """Debian's Chromium, headless, with nothing of its own talking to the network."""
    browser: Browser = playwright_chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    return browser


CSP_WORDS = re.compile(r"content security policy", re.IGNORECASE)


@dataclass
class Watch:
    """What the browser said while a test ran: console errors, and those a Content-Security-Policy
    refusal caused (a page that breaks its own policy: inline script or style, a foreign origin)."""

    errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"{message.location.get('url', '')}: {message.text}")

    @property
    def csp_violations(self) -> list[str]:
        return [e for e in self.errors + self.page_errors if CSP_WORDS.search(e)]

    def assert_no_csp_violations(self) -> None:
        assert not self.csp_violations, "Content-Security-Policy violations:\n" + "\n".join(
            self.csp_violations
        )


def _only_the_web_app(base_url: str) -> Any:
    def route(r: Route) -> None:
        # Nothing leaves the machine: the NHS.UK font host, say, is refused, and the pages must
        # still work (the fonts fall back to Arial).
        if r.request.url.startswith(base_url):
            r.continue_()
        else:
            r.abort()

    return route


def new_context(
    browser: Browser, base_url: str, *, javascript: bool = True, **options: Any
) -> BrowserContext:
    """A fresh browser profile at the usual desktop width, that reaches the web app and nothing else."""
    context = browser.new_context(
        base_url=base_url,
        viewport=VIEWPORT,
        java_script_enabled=javascript,
        locale="en-GB",
        timezone_id="Europe/London",
        **options,
    )
    context.set_default_timeout(20_000)
    context.route("**/*", _only_the_web_app(base_url))
    return context


def watched_page(context: BrowserContext, watch: Watch) -> Page:
    page = context.new_page()
    page.on("console", watch.on_console)
    page.on("pageerror", lambda error: watch.page_errors.append(str(error)))
    return page


def sign_in(page: Page, role: str, org: str | None = None, name: str | None = None) -> None:
    """The development sign-in, as a person uses it: the form, then its button; ends on the page
    the sign-in leads to (the role's home)."""
    org = DEMO_ORG[role] if org is None else org
    page.goto("/sign-in")
    page.locator(f"input[name=role][value={role}]").check()
    page.locator("#org").fill(org)
    if name is not None:
        page.locator("#name").fill(name)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in", exact=True).click()


def sign_out(page: Page) -> None:
    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()


def shot(page: Page, name: str) -> Path:
    """A full-page screenshot of what the person sees, kept as docs/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.set_viewport_size(VIEWPORT)
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    return path


def _described(violations: list[dict[str, Any]]) -> str:
    lines = []
    for v in violations:
        lines.append(f"- {v['id']} ({v.get('impact')}): {v['help']} — {v.get('helpUrl', '')}")
        for node in v.get("nodes", [])[:8]:
            target = " ".join(str(t) for t in node.get("target", []))
            lines.append(f"    at {target}: {node.get('html', '')[:200]}")
            summary = node.get("failureSummary")
            if summary:
                lines.extend(f"      {line}" for line in summary.splitlines())
    return "\n".join(lines)


def _tolerated(violation: dict[str, Any], tolerate: dict[str, str]) -> bool:
    only_on = tolerate.get(violation["id"])
    return only_on is not None and all(node.get("target") == [only_on] for node in violation["nodes"])


def axe_check(page: Page, label: str | None = None, *, tolerate: dict[str, str] | None = None) -> None:
    """Runs axe-core's WCAG 2.2 AA checks over the page now shown, and fails with each violation
    (rule, elements, what to fix) when there are any."""
    found = axe_findings(page, label, tolerate=tolerate)
    assert not found, found


def axe_findings(page: Page, label: str | None = None, *, tolerate: dict[str, str] | None = None) -> str:
    """axe-core's WCAG 2.2 AA violations on the page now shown, described for a person to fix (the
    rule, the elements, what to change); empty when there are none.

    `tolerate` maps a rule to the one element (its axe target, a CSS selector) on which a finding of
    that rule is known and explained at the call site; the rule still applies to every other
    element, and a finding there still fails.

    The page's Content-Security-Policy forbids the inline script add_script_tag makes, so axe runs
    in a second profile that bypasses CSP only for it, signed in as the same person (the cookies
    are copied) and showing the same address; the page under test keeps its policy, so the tests'
    CSP checks stay true."""
    axe = ensure_axe()
    context = page.context
    browser = context.browser
    assert browser is not None
    url = page.url
    checker = browser.new_context(
        viewport=VIEWPORT,
        bypass_csp=True,
        storage_state=context.storage_state(),
        locale="en-GB",
        timezone_id="Europe/London",
    )
    origin = re.match(r"^https?://[^/]+", url)
    assert origin is not None, url
    checker.route("**/*", _only_the_web_app(origin.group(0)))
    try:
        view = checker.new_page()
        view.goto(url)
        view.add_script_tag(path=str(axe))
        results: dict[str, Any] = view.evaluate(
            """async (tags) => await axe.run(document, {runOnly: {type: 'tag', values: tags}})""",
            AXE_TAGS,
        )
    finally:
        checker.close()
    violations = [v for v in results["violations"] if not _tolerated(v, tolerate or {})]
    if not violations:
        return ""
    return f"axe-core: {len(violations)} accessibility violation(s) on {label or url}:\n" + _described(
        violations
    )


def demo_invoice(stem: str) -> tuple[dict[str, Any], Path, Path]:
    """A demo invoice's header (its JSON) and the paths of its JSON and CSV files."""
    json_path = ROOT / "demo" / "invoices" / f"{stem}.json"
    csv_path = json_path.with_suffix(".csv")
    header: dict[str, Any] = json.loads(json_path.read_text())
    return header, json_path, csv_path
