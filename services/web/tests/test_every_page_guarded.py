"""No page of a role answers anyone but a signed-in person with that role, now or after a new page
is added: every route under a role's prefix is tried anonymously and as each other role."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from web_support import Stack, csrf_of, sign_in

from cef_web.roles import ROLES

# Pages anyone may open: signing in and out, the statement, health and the app's public key.
PUBLIC = {
    "/",
    "/sign-in",
    "/sign-in/dev",
    "/sign-in/oidc",
    "/auth/callback",
    "/sign-out",
    "/signed-out",
    "/accessibility",
    "/healthz",
    "/readyz",
    "/.well-known/jwks.json",
    "/openapi.json",
    "/docs",
    "/redoc",
}
ORG = {"provider": "RTR", "staff": "00C", "finance": "00C", "board": "00C", "auditor": None}


def _pages(client: TestClient) -> Iterator[tuple[str, str, str]]:
    """(method, concrete path, owning role) of every route of the app."""
    for route in client.app.routes:  # type: ignore[attr-defined]
        if not isinstance(route, APIRoute):
            continue
        path = re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), route.path)
        role = route.path.split("/")[1]
        for method in sorted(route.methods - {"HEAD"}):
            yield method, path, role


def test_every_route_is_public_or_belongs_to_a_role(web: TestClient) -> None:
    strays = [
        f"{method} {path}"
        for method, path, role in _pages(web)
        if role not in ROLES and not any(path.startswith(p) and len(p) > 1 for p in PUBLIC) and path != "/"
    ]
    assert strays == [], "routes outside a role's prefix: add them to PUBLIC only if anyone may use them"


def test_no_role_page_answers_someone_not_signed_in(web: TestClient) -> None:
    web.get("/sign-in")  # a session, so that a form post is judged on the person, not the token
    for method, path, role in _pages(web):
        if role not in ROLES:
            continue
        r = web.request(method, path, data={"csrf_token": "none"} if method == "POST" else None)
        if method == "GET":
            assert r.status_code == 303, f"{method} {path}: {r.status_code}"
            assert r.headers["location"].startswith("/sign-in"), f"{method} {path}"
        else:
            assert r.status_code in (303, 403), f"{method} {path}: {r.status_code}"


@pytest.mark.parametrize("who", list(ROLES))
def test_no_role_page_answers_another_role(stack: Stack, who: str) -> None:
    with stack.web() as web:
        sign_in(web, who, ORG[who])
        # Every page of a signed-in person carries the sign-out form, and so the session's token.
        token = csrf_of(web.get("/accessibility"))
        for method, path, role in _pages(web):
            if role not in ROLES or role == who:
                continue
            r = web.request(method, path, data={"csrf_token": token} if method == "POST" else None)
            assert r.status_code == 403, f"{who} {method} {path}: {r.status_code}"
            assert "You cannot use this page" in r.text


def test_refusals_are_audited(stack: Stack) -> None:
    with stack.web() as web:
        sign_in(web, "finance", "00C", name="Refused Person")
        assert web.get("/auditor/events").status_code == 403
    found: list[dict[str, object]] = []
    for _attempt in range(100):
        r = httpx.get(
            f"{stack.audit_url}/v1/events",
            params={"type": "access.refused", "source": "web", "actor": "00C-finance", "order": "desc"},
            headers=stack.audit_headers(),
        )
        assert r.status_code == 200, r.text
        found = r.json()["items"]
        if found:
            break
        time.sleep(0.1)
    assert found, "the web app's refusal never reached the audit log"
    assert found[0]["subtype"] == "role-refused"
    assert found[0]["detail"] == {
        "route": "/auditor/events",
        "method": "GET",
        "status": 403,
        "code": "role-refused",
        "reason": "role-refused",
    }
