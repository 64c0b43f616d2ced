"""Development sign-in, sessions, sign-out, and the headers every answer carries."""

from __future__ import annotations

from fastapi.testclient import TestClient
from web_support import Stack, csrf_of, sign_in


def test_a_page_sends_someone_not_signed_in_to_sign_in(web: TestClient) -> None:
    r = web.get("/provider/invoices")
    assert r.status_code == 303
    assert r.headers["location"] == "/sign-in?next=/provider/invoices"


def test_signing_in_as_a_provider_leads_to_their_invoices(web: TestClient) -> None:
    sign_in(web, "provider", "rxp", name="Pat Finance")
    r = web.get("/")
    assert r.status_code == 303
    assert r.headers["location"] == "/provider/invoices"


def test_the_cookie_holds_only_a_session_id_and_is_http_only_and_lax(web: TestClient) -> None:
    page = web.get("/sign-in")
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    r = web.post(
        "/sign-in/dev", data={"csrf_token": csrf_of(page), "role": "staff", "org": "00C", "next": "/"}
    )
    new_cookie = r.headers["set-cookie"]
    # Signing in replaces the session: the id used before is no longer the one in use.
    assert new_cookie.split(";")[0] != cookie.split(";")[0]
    assert "00C" not in new_cookie
    assert "staff" not in new_cookie


def test_outside_development_the_cookie_is_secure_and_host_only(stack: Stack) -> None:
    with stack.web(cookie_secure=None) as client:
        cookie = client.get("/sign-in").headers["set-cookie"]
    assert cookie.startswith("__Host-cef_session=")
    assert "Secure" in cookie


def test_a_form_without_its_csrf_token_is_refused(web: TestClient) -> None:
    web.get("/sign-in")
    r = web.post("/sign-in/dev", data={"role": "provider", "org": "RXP", "next": "/"})
    assert r.status_code == 403
    assert "form has expired" in r.text
    r = web.post("/sign-in/dev", data={"csrf_token": "forged", "role": "provider", "org": "RXP"})
    assert r.status_code == 403


def test_a_form_from_another_site_is_refused(web: TestClient) -> None:
    page = web.get("/sign-in")
    r = web.post(
        "/sign-in/dev",
        data={"csrf_token": csrf_of(page), "role": "provider", "org": "RXP"},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status_code == 403


def test_a_refused_sign_in_keeps_what_was_typed_and_says_what_to_fix(web: TestClient) -> None:
    page = web.get("/sign-in")
    r = web.post(
        "/sign-in/dev", data={"csrf_token": csrf_of(page), "role": "provider", "org": "R!", "name": "Pat"}
    )
    assert r.status_code == 422
    assert "nhsuk-error-summary" in r.text
    assert 'href="#org"' in r.text
    assert 'value="R!"' in r.text
    assert 'value="Pat"' in r.text
    assert "<title>Error: Sign in" in r.text


def test_signing_out_ends_the_session(web: TestClient) -> None:
    sign_in(web, "finance", "00C")
    home = web.get("/finance/approved")
    r = web.post("/sign-out", data={"csrf_token": csrf_of(home)})
    assert r.status_code == 200
    assert "You have signed out" in r.text
    assert web.get("/").headers["location"] == "/sign-in"


def test_every_page_has_strict_headers(web: TestClient) -> None:
    r = web.get("/sign-in")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"
    assert "<script>" not in r.text
    assert " style=" not in r.text


def test_production_refuses_the_development_sign_in(stack: Stack) -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="development token issuer"):
        stack.web_settings(environment="production")


def test_an_unknown_page_is_an_nhs_page_not_found(web: TestClient) -> None:
    r = web.get("/no/such/page")
    assert r.status_code == 404
    assert "Page not found" in r.text
    assert "Traceback" not in r.text
