"""Who is using the page: the person of the session, the roles their scopes give, and the
short-lived tokens the web app signs for them to call the CEF API and the audit service.

The web app is a backend for the browser: tokens never reach the browser. For each call it signs a
token with its own key (issuer `web`), for the person's subject and organisation and only the
scopes the person holds for that service; the services trust the web app's key for exactly those
scopes (`allowed_scopes`), so a page can never do more than its user may."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from cef_common.auth import Principal, TokenSigner
from cef_common.errors import Forbidden
from cef_web.roles import ROLES, SCOPES_FOR, Role, roles_of
from cef_web.sessions import WebSession

TOKEN_TTL_SECONDS = 120


class SignInRequired(Exception):
    """Raised by a page that needs a signed-in person; answered with a redirect to sign in."""


@dataclass(frozen=True)
class Person:
    sub: str
    name: str
    org: str | None
    scopes: frozenset[str]
    issuer: str

    @property
    def roles(self) -> list[Role]:
        return roles_of(self.scopes)

    def has(self, role: str) -> bool:
        return ROLES[role].scope in self.scopes

    def principal(self) -> Principal:
        """How the web app names this person in its own audit events."""
        return Principal(sub=self.sub, issuer=self.issuer, scopes=self.scopes, org=self.org, client="web")


class DelegatedTokens:
    """Tokens the web app signs for one person at a time, cached until near expiry."""

    def __init__(self, signer: TokenSigner) -> None:
        self.signer = signer
        self._cache: dict[tuple[str, str, str | None, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def for_person(self, person: Person, audience: str) -> str:
        scopes = sorted(person.scopes & frozenset(SCOPES_FOR.get(audience, ())))
        key = (person.sub, audience, person.org, " ".join(scopes))
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and hit[1] - now > 30:
                return hit[0]
            token = self.signer.mint(
                sub=person.sub,
                audience=audience,
                scopes=scopes,
                ttl_seconds=TOKEN_TTL_SECONDS,
                org=person.org,
                client="web",
                extra={"idp": person.issuer},
            )
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (token, now + TOKEN_TTL_SECONDS)
            return token


def web_session(request: Request) -> WebSession | None:
    found = getattr(request.state, "web_session", None)
    return found if isinstance(found, WebSession) else None


def current_person(request: Request) -> Person | None:
    session = web_session(request)
    if session is None or not session.signed_in:
        return None
    assert session.sub is not None
    return Person(
        sub=session.sub,
        name=session.name or session.sub,
        org=session.org,
        scopes=session.scopes,
        issuer=session.issuer or "web",
    )


def signed_in(request: Request) -> Person:
    """Dependency: the signed-in person; anyone else is sent to the sign-in page."""
    person = current_person(request)
    if person is None:
        raise SignInRequired()
    request.state.principal = person.principal()
    return person


SignedIn = Annotated[Person, Depends(signed_in)]


def require_role(role: str) -> Any:
    """Dependency: the signed-in person, when they hold `role` (403, audited, otherwise)."""
    wanted = ROLES[role]

    def _guard(person: SignedIn) -> Person:
        if not person.has(role):
            raise Forbidden(
                f"this page is for {wanted.label}: your sign-in does not give you that role",
                code="role-refused",
            )
        return person

    return Depends(_guard)


ProviderUser = Annotated[Person, require_role("provider")]
StaffUser = Annotated[Person, require_role("staff")]
FinanceUser = Annotated[Person, require_role("finance")]
BoardUser = Annotated[Person, require_role("board")]
AuditorUser = Annotated[Person, require_role("auditor")]
