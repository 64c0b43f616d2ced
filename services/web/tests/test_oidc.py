"""Signing in with OpenID Connect (authorization code, PKCE) against a real OpenID provider:
panva's oidc-provider (tests/oidc/provider.mjs), driven as a browser would drive it."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import anyio
import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from starlette.requests import Request
from web_support import Stack, csrf_of

from cef_common import db
from cef_common.errors import Forbidden
from cef_web.main import MIGRATIONS as WEB_MIGRATIONS
from cef_web.main import create_app as create_web
from cef_web.oidc import PENDING_KEY, OidcClient
from cef_web.pages import oidc as oidc_pages
from cef_web.sessions import SessionStore, WebSession, web_session

PROVIDER_DIR = Path(__file__).parent / "oidc"
CLIENT_ID = "cef-web"
WEB = "http://testserver"
# The accounts the provider knows: the login is the sub; the scopes are the roles it grants.
ACCOUNTS = {
    "pat-validator": {"name": "Pat Validator", "org": "00C", "scopes": ["invoices:validate"]},
    "robin-reader": {"name": "Robin O'Reader", "org": "00C", "scopes": ["invoices:read", "reports:read"]},
    "sam-no-role": {"name": "Sam Norole", "org": "00C", "scopes": []},
    "kim-no-org": {"name": "Kim Noorg", "org": "not a code!", "scopes": ["invoices:validate"]},
}


@dataclass
class Provider:
    issuer: str
    client_secret: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unavailable(reason: str) -> None:
    # On CI the provider is part of the suite: its absence fails the run instead of skipping.
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """oidc-provider on a free loopback port, its packages installed from the lock file."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("Node.js and npm are needed to run the test OpenID provider (tests/oidc)")
    assert node is not None
    assert npm is not None
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=PROVIDER_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if installed.returncode != 0:
            pytest.fail(f"npm ci in {PROVIDER_DIR} failed:\n{installed.stdout}\n{installed.stderr}")
    port = _free_port()
    secret = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "OIDC_PORT": str(port),
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": secret,
        "OIDC_REDIRECT_URI": f"{WEB}/auth/callback",
        "OIDC_POST_LOGOUT_URI": f"{WEB}/signed-out",
        "OIDC_ACCOUNTS": json.dumps(ACCOUNTS),
    }
    log_path = tmp_path_factory.mktemp("oidc") / "provider.log"
    issuer = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [node, "provider.mjs"], cwd=PROVIDER_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    pytest.fail(f"the OpenID provider stopped:\n{log_path.read_text()}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    pytest.fail(f"the OpenID provider did not start:\n{log_path.read_text()}")
                time.sleep(0.2)
            yield Provider(issuer=issuer, client_secret=secret)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def oidc_web(stack: Stack, provider: Provider, **overrides: Any) -> Iterator[TestClient]:
    """The web app signing in through the test provider, as `stack.web` makes it."""
    settings = stack.web_settings(
        oidc_issuer=provider.issuer,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=provider.client_secret,
        public_url=WEB,
        **overrides,
    )
    db.upgrade(WEB_MIGRATIONS, settings.effective_database_url)
    with TestClient(create_web(settings), base_url=WEB, follow_redirects=False) as client:
        yield client


@pytest.fixture
def web(stack: Stack, provider: Provider) -> Iterator[TestClient]:
    with oidc_web(stack, provider) as client:
        yield client


def another_browser(web: TestClient) -> TestClient:
    """A second browser on the same web app (its own cookies)."""
    return TestClient(web.app, base_url=WEB, follow_redirects=False)


class _Form(HTMLParser):
    """The first form of a page: its action and its fields' values."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._id: str | None = None
        self._in_form = False
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "form" and not self._done:
            self._in_form = True
            self.action = found.get("action", "")
            self._id = found.get("id")
        elif tag in ("input", "button") and found.get("name"):
            # A field belongs to the form it is in, or to the one its `form` attribute names
            # (the provider's sign-out page puts its "Yes, sign me out" button outside the form).
            ours = self._in_form or (self._id is not None and found.get("form") == self._id)
            if ours and found["name"] not in self.fields:
                self.fields[found["name"]] = found.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._in_form:
            self._in_form = False
            self._done = True


def through_provider(start: str, login: str, browser: httpx.Client) -> str:
    """Follows the provider's pages from the authorization URL as a person would: the login form
    (any password), and a consent form if one is shown. Returns where the provider sends the
    browser back to the web app (its callback URL, with code and state)."""
    url = start
    for _ in range(12):
        if url.startswith(WEB):
            return url
        r = browser.get(url)
        if r.is_redirect:
            url = urljoin(url, r.headers["location"])
            continue
        assert r.status_code == 200, r.text
        form = _Form()
        form.feed(r.text)
        assert form.action, f"the provider showed a page without a form:\n{r.text}"
        data = dict(form.fields)
        if "login" in data:
            data.update(login=login, password="any password")
        r = browser.post(urljoin(url, form.action), data=data)
        assert r.is_redirect, r.text
        url = urljoin(url, r.headers["location"])
    raise AssertionError("the provider did not send the browser back")


def start_sign_in(web: TestClient, next_path: str = "/") -> str:
    """Presses "Sign in with your NHS account": the provider's authorization URL."""
    page = web.get("/sign-in")
    assert "Sign in with your NHS account" in page.text
    r = web.post("/sign-in/oidc", data={"csrf_token": csrf_of(page), "next": next_path})
    assert r.status_code == 303, r.text
    return r.headers["location"]


def provider_callback(web: TestClient, login: str, next_path: str = "/") -> str:
    """A sign-in started in `web` and completed at the provider: the callback URL, not yet visited."""
    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        return through_provider(start_sign_in(web, next_path), login, browser)


def local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def with_params(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
    params.update(changes)
    return f"{parts.path}?{urlencode(params)}"


def session_of(web: TestClient) -> WebSession | None:
    store: SessionStore = web.app.state.sessions  # type: ignore[attr-defined]
    cookie = web.cookies.get("cef_session")
    return store.get(cookie)


def signed_in(web: TestClient) -> bool:
    return web.get("/").headers.get("location") != "/sign-in"


def audit_events(stack: Stack, type_: str, wanted: Any, *, wait: float = 20.0) -> list[dict[str, Any]]:
    """The web app's events of this type in the audit service that `wanted` picks (waiting for
    the outbox relay to deliver them)."""
    deadline = time.monotonic() + wait
    while True:
        with httpx.Client(base_url=stack.audit_url, timeout=30) as audit:
            r = audit.get(
                "/v1/events",
                params={"type": type_, "limit": 200, "order": "desc"},
                headers=stack.audit_headers(),
            )
        assert r.status_code == 200, r.text
        found = [e for e in r.json()["items"] if e["source"] == "web" and wanted(e)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def refusals(stack: Stack, code: str, *, sub: str | None = None) -> list[dict[str, Any]]:
    """The audit service's refusal events of the web app with this code (its subtype)."""
    return audit_events(
        stack,
        "access.refused",
        lambda e: e.get("subtype") == code and (sub is None or e["actor"]["sub"] == sub),
    )


def test_signing_in_through_the_provider_gives_the_granted_role_and_organisation(
    web: TestClient, provider: Provider, stack: Stack
) -> None:
    callback = provider_callback(web, "pat-validator")
    assert callback.startswith(f"{WEB}/auth/callback?")
    r = web.get(local(callback))
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/staff/queue"
    # The app asked for every role's scope; the provider granted this person one: one role.
    assert web.get("/").headers["location"] == "/staff/queue"
    session = session_of(web)
    assert session is not None
    assert session.sub == "pat-validator"
    assert session.org == "00C"
    assert session.scopes == frozenset({"invoices:validate"})
    assert session.issuer == provider.issuer
    assert session.name == "Pat Validator"
    # Signed in as this person, the pages call the CEF API for them.
    page = web.get("/staff/queue")
    assert page.status_code == 200, page.text
    assert "Pat Validator" in page.text
    signed = audit_events(
        stack, "web.sign_in", lambda e: e["actor"]["sub"] == "pat-validator" and e["outcome"] == "success"
    )
    assert signed, "the sign-in is not in the audit log"
    assert signed[0]["detail"] == {"method": "oidc"}
    assert signed[0]["actor"]["org"] == "00C"
    assert signed[0]["actor"]["issuer"] == provider.issuer


def test_a_sign_in_returns_to_the_page_it_was_started_from_and_keeps_every_granted_role(
    web: TestClient,
) -> None:
    r = web.get(local(provider_callback(web, "robin-reader", next_path="/board/reports")))
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/board/reports"
    session = session_of(web)
    assert session is not None
    assert session.scopes == frozenset({"invoices:read", "reports:read"})
    # Two roles: the home page lists them instead of choosing.
    home = web.get("/")
    assert home.status_code == 200
    # An apostrophe is a name's letter, so the provider's name is kept.
    assert session.name == "Robin O'Reader"


def test_the_cookie_holds_no_token_and_the_tokens_are_sealed_server_side(web: TestClient) -> None:
    r = web.get(local(provider_callback(web, "pat-validator")))
    assert r.status_code == 303
    session = session_of(web)
    assert session is not None
    store: SessionStore = web.app.state.sessions  # type: ignore[attr-defined]
    tokens = store.tokens(session)
    assert tokens["access_token"]
    assert tokens["id_token"]
    cookie = r.headers["set-cookie"]
    assert cookie.split(";")[0] == f"cef_session={session.id}"
    for value in (tokens["access_token"], tokens["id_token"], *tokens["id_token"].split(".")):
        assert value not in cookie
        assert value not in r.text
    assert "pat-validator" not in cookie
    # In the database they are sealed: the row does not hold them readable.
    with store.engine.connect() as conn:
        blob = conn.execute(
            sa.select(web_session.c.tokens).where(web_session.c.sub == "pat-validator")
        ).scalars()
        for sealed in blob:
            assert tokens["id_token"].encode() not in sealed
            assert tokens["access_token"].encode() not in sealed


def test_a_changed_state_is_refused_and_audited(web: TestClient, stack: Stack) -> None:
    callback = provider_callback(web, "pat-validator")
    r = web.get(with_params(callback, state=secrets.token_urlsafe(32)))
    assert r.status_code == 403
    assert "did not start in this browser" in r.text
    assert not signed_in(web)
    # The pending sign-in was used up by the refused answer: the real one cannot follow it.
    r = web.get(local(callback))
    assert r.status_code == 403
    assert not signed_in(web)
    events = refusals(stack, "oidc-state-mismatch")
    assert events, "the refused callback is not in the audit log"
    assert events[0]["outcome"] == "denied"
    assert events[0]["detail"]["route"] == "/auth/callback"
    # Nothing the browser sent (the code, the state) is in the event.
    code = parse_qs(urlsplit(callback).query)["code"][0]
    assert code not in json.dumps(events)


def test_a_replayed_code_is_refused(web: TestClient, provider: Provider) -> None:
    callback = provider_callback(web, "pat-validator")
    session = session_of(web)
    assert session is not None
    pending = dict(session.pending)
    assert web.get(local(callback)).status_code == 303
    # The same answer again, in the session it signed in: nothing is pending any more.
    assert web.get(local(callback)).status_code == 403
    # Even with the state and code verifier of the first sign-in (copied into another browser's
    # session), the provider will not exchange a code twice.
    other = another_browser(web)
    other.get("/sign-in")
    other_session = session_of(other)
    assert other_session is not None
    store: SessionStore = web.app.state.sessions  # type: ignore[attr-defined]
    store.set_pending(other_session, pending)
    r = other.get(local(callback))
    assert r.status_code == 403
    assert "did not accept this sign-in" in r.text
    assert not signed_in(other)


def test_a_code_from_another_browsers_sign_in_is_refused(web: TestClient, stack: Stack) -> None:
    # Someone else's answer from the provider (code and state) lands in this browser, which has a
    # sign-in of its own pending: its state does not match.
    theirs = another_browser(web)
    their_callback = provider_callback(theirs, "sam-no-role")
    start_sign_in(web)
    r = web.get(local(their_callback))
    assert r.status_code == 403
    assert not signed_in(web)
    # Their code with this browser's own state: the state matches, but the code was issued for
    # their code challenge, so this browser's code verifier does not redeem it (PKCE).
    start_sign_in(web)
    session = session_of(web)
    assert session is not None
    mine = session.pending[PENDING_KEY]["state"]
    r = web.get(with_params(their_callback, state=mine))
    assert r.status_code == 403
    assert "did not accept this sign-in" in r.text
    assert not signed_in(web)
    assert refusals(stack, "oidc-code-refused")


def test_an_id_token_for_another_nonce_is_refused(web: TestClient, stack: Stack) -> None:
    callback = provider_callback(web, "pat-validator")
    # The pending sign-in's nonce is no longer the one the provider put in the ID token (as when
    # the token was obtained for another authorization request); state and verifier still match.
    session = session_of(web)
    assert session is not None
    pending = dict(session.pending[PENDING_KEY])
    pending["nonce"] = secrets.token_urlsafe(32)
    store: SessionStore = web.app.state.sessions  # type: ignore[attr-defined]
    store.set_pending(session, {PENDING_KEY: pending})
    r = web.get(local(callback))
    assert r.status_code == 403
    assert "nonce" in r.text
    assert not signed_in(web)
    assert refusals(stack, "oidc-nonce-mismatch")


def test_an_account_without_a_role_is_refused_and_named_in_the_audit_log(
    web: TestClient, stack: Stack
) -> None:
    r = web.get(local(provider_callback(web, "sam-no-role")))
    assert r.status_code == 403
    assert "does not give you a role" in r.text
    assert not signed_in(web)
    events = refusals(stack, "oidc-no-role", sub="sam-no-role")
    assert events
    assert events[0]["actor"]["org"] == "00C"


def test_a_role_that_needs_an_organisation_is_refused_without_one(web: TestClient) -> None:
    r = web.get(local(provider_callback(web, "kim-no-org")))
    assert r.status_code == 403
    assert "which organisation" in r.text
    assert not signed_in(web)


def test_an_error_from_the_provider_is_refused(web: TestClient, provider: Provider) -> None:
    start_sign_in(web)
    session = session_of(web)
    assert session is not None
    state = session.pending[PENDING_KEY]["state"]
    query = urlencode(
        {"error": "access_denied", "error_description": "9434765919", "state": state, "iss": provider.issuer}
    )
    r = web.get(f"/auth/callback?{query}")
    assert r.status_code == 403
    assert "access denied" in r.text
    # The provider's free text is not shown.
    assert "9434765919" not in r.text


def test_a_callback_without_a_sign_in_is_refused(web: TestClient) -> None:
    r = web.get("/auth/callback?code=abc&state=def")
    assert r.status_code == 403
    assert not signed_in(web)


def test_the_id_token_is_verified_for_this_client_and_signature(web: TestClient, provider: Provider) -> None:
    web.get(local(provider_callback(web, "pat-validator")))
    session = session_of(web)
    assert session is not None
    store: SessionStore = web.app.state.sessions  # type: ignore[attr-defined]
    id_token = store.tokens(session)["id_token"]
    header, payload, signature = id_token.split(".")
    settings = web.app.state.settings  # type: ignore[attr-defined]
    client = OidcClient(settings)

    async def verify(token: str, verifier: OidcClient, nonce: str) -> dict[str, Any]:
        return await verifier.verify_id_token(token, nonce=nonce)

    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    nonce = claims["nonce"]
    assert anyio.run(verify, id_token, client, nonce)["sub"] == "pat-validator"
    # Another client of the same provider may not use it (audience).
    someone_else = OidcClient(settings.model_copy(update={"oidc_client_id": "another-client"}))
    with pytest.raises(Forbidden) as refused:
        anyio.run(verify, id_token, someone_else, nonce)
    assert refused.value.code == "oidc-id-token-claims"
    # A changed payload under the provider's signature does not verify.
    forged = dict(claims, sub="someone-else")
    forged_payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(Forbidden) as refused:
        anyio.run(verify, f"{header}.{forged_payload}.{signature}", client, nonce)
    assert refused.value.code == "oidc-id-token-signature"
    # Unsigned (alg none) is never accepted.
    none_header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    with pytest.raises(Forbidden):
        anyio.run(verify, f"{none_header}.{payload}.", client, nonce)


def test_signing_out_at_the_provider(web: TestClient, provider: Provider) -> None:
    with httpx.Client(follow_redirects=False, timeout=30) as browser:
        callback = through_provider(start_sign_in(web), "pat-validator", browser)
        web.get(local(callback))
        session = session_of(web)
        request = Request({"type": "http", "app": web.app, "headers": [], "method": "POST", "path": "/"})

        async def logout_url() -> str | None:
            return await oidc_pages.provider_sign_out_url(request, session)

        url = anyio.run(logout_url)
        assert url is not None
        assert url.startswith(f"{provider.issuer}/")
        params = parse_qs(urlsplit(url).query)
        assert params["post_logout_redirect_uri"] == [f"{WEB}/signed-out"]
        assert params["id_token_hint"]
        # The provider accepts it (its id_token_hint and registered return address), asks to
        # confirm, and sends the browser back to the web app's signed-out page.
        back = through_provider(url, "pat-validator", browser)
    assert back == f"{WEB}/signed-out"
    page = web.get(local(back))
    assert page.status_code == 200
    assert "You have signed out" in page.text


def test_a_development_session_has_no_provider_sign_out(web: TestClient) -> None:
    page = web.get("/sign-in")
    web.post("/sign-in/dev", data={"csrf_token": csrf_of(page), "role": "staff", "org": "00C", "next": "/"})
    session = session_of(web)
    assert session is not None
    assert session.signed_in
    request = Request({"type": "http", "app": web.app, "headers": [], "method": "POST", "path": "/"})

    async def logout_url() -> str | None:
        return await oidc_pages.provider_sign_out_url(request, session)

    assert anyio.run(logout_url) is None


def test_an_unreachable_provider_gives_a_clear_page(stack: Stack) -> None:
    unreachable = Provider(issuer=f"http://127.0.0.1:{_free_port()}", client_secret="unused")
    with oidc_web(stack, unreachable) as client:
        r = client.post("/sign-in/oidc", data={"csrf_token": csrf_of(client.get("/sign-in")), "next": "/"})
    assert r.status_code == 503
    assert "could not be reached" in r.text
