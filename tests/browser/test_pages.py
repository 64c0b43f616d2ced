"""The web app in a real browser, over `cef up`: the sign-in page, each role's way in, the pages
without JavaScript, the security headers, and a role refused another role's page."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from browser_support import (
    DEMO_ORG,
    HOME,
    CefUp,
    Watch,
    axe_check,
    new_context,
    shot,
    sign_in,
    sign_out,
    watched_page,
)
from playwright.sync_api import Browser, Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

ROLES = list(HOME)


def test_the_sign_in_page_renders_and_is_accessible(page: Page) -> None:
    response = page.goto("/")
    assert response is not None
    # Not signed in: the service's front door leads to the sign-in page.
    assert page.url.endswith("/sign-in")
    assert response.status == 200
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    expect(page).to_have_title("Sign in – Controlled Environment for Finance – NHS")
    for role in ROLES:
        expect(page.locator(f"input[name=role][value={role}]")).to_have_count(1)
    expect(page.get_by_label("Organisation code")).to_be_visible()
    shot(page, "sign-in")
    axe_check(page, "the sign-in page")


def test_a_sign_in_with_no_role_is_refused_on_the_form(page: Page) -> None:
    page.goto("/sign-in")
    page.locator("#org").fill("RTR")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_title("Error: Sign in – Controlled Environment for Finance – NHS")
    summary = page.locator(".nhsuk-error-summary")
    expect(summary).to_contain_text("Select the role you are signing in as")
    # What the person typed is kept.
    expect(page.locator("#org")).to_have_value("RTR")
    shot(page, "sign-in-error")


@pytest.mark.parametrize("role", ROLES)
def test_a_development_sign_in_leads_to_the_role_home(page: Page, role: str) -> None:
    sign_in(page, role, name="Alex Morgan")
    assert urlsplit(page.url).path == HOME[role]
    response = page.goto(HOME[role])
    assert response is not None
    assert response.status == 200, f"{HOME[role]} answered {response.status}"
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    header = page.locator("header")
    expect(header.get_by_role("button", name="Sign out")).to_be_visible()
    shown = f"Alex Morgan ({DEMO_ORG[role]})" if DEMO_ORG[role] else "Alex Morgan"
    expect(header).to_contain_text(shown)
    shot(page, f"{role}-home")
    axe_check(page, f"the {role} home page")
    sign_out(page)
    expect(page.get_by_role("heading", level=1)).to_have_text("You have signed out")
    # Signed out means signed out: the home page now asks for a sign-in.
    page.goto(HOME[role])
    assert "/sign-in" in page.url


@pytest.mark.parametrize("role", ROLES)
def test_every_role_signs_in_and_reaches_home_without_javascript(
    browser: Browser, system: CefUp, role: str
) -> None:
    context = new_context(browser, system.web, javascript=False)
    watch = Watch()
    try:
        page = watched_page(context, watch)
        sign_in(page, role)
        assert page.url == system.web + HOME[role]
        response = page.goto(HOME[role])
        assert response is not None
        assert response.status == 200
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        # The sign-out button is a plain form: it works without JavaScript too.
        sign_out(page)
        expect(page.get_by_role("heading", level=1)).to_have_text("You have signed out")
    finally:
        context.close()
    watch.assert_no_csp_violations()


def test_every_page_is_sent_with_the_security_headers(page: Page, watch: Watch) -> None:
    for path in ("/sign-in", "/accessibility"):
        response = page.goto(path)
        assert response is not None
        headers = response.headers
        policy = headers.get("content-security-policy", "")
        assert "script-src 'self'" in policy, policy
        assert "style-src 'self'" in policy, policy
        assert "frame-ancestors 'none'" in policy, policy
        assert "unsafe-inline" not in policy, policy
        assert headers.get("x-frame-options") == "DENY"
        assert headers.get("x-content-type-options") == "nosniff"
        assert headers.get("referrer-policy") == "no-referrer"
        assert headers.get("cache-control") == "no-store"
    # A tour of every role's home: no page breaks its own policy (no inline script or style).
    for role in ROLES:
        sign_in(page, role)
        page.goto(HOME[role])
        sign_out(page)
    assert watch.csp_violations == []


def test_the_csp_watch_sees_a_violation(browser: Browser, system: CefUp) -> None:
    # The check the other tests rely on can fail: an inline script on a real page is refused by
    # the page's policy, and the watch reports it.
    context = new_context(browser, system.web)
    watch = Watch()
    try:
        page = watched_page(context, watch)
        page.goto("/sign-in")
        page.evaluate(
            "() => { const s = document.createElement('script'); s.textContent = 'window.ran = 1';"
            " document.body.append(s); }"
        )
        page.wait_for_timeout(200)
        assert page.evaluate("() => window.ran") is None
    finally:
        context.close()
    assert watch.csp_violations, watch.errors
    with pytest.raises(AssertionError, match="Content-Security-Policy violations"):
        watch.assert_no_csp_violations()


REFUSALS = [(role, ROLES[(i + 1) % len(ROLES)]) for i, role in enumerate(ROLES)]


@pytest.mark.parametrize(("role", "other"), REFUSALS)
def test_a_role_is_refused_another_roles_page(page: Page, role: str, other: str) -> None:
    sign_in(page, role)
    response = page.goto(HOME[other])
    assert response is not None
    assert response.status == 403, f"{role} on {HOME[other]}: {response.status}"
    expect(page.get_by_role("heading", level=1)).to_have_text("You cannot use this page")
    expect(page.locator("main")).to_contain_text("ask your organisation's CEF administrator")
    if role == ROLES[0]:
        shot(page, "refused")
        axe_check(page, "the refusal page")
