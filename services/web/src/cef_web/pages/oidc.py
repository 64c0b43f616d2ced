"""Signing in through the organisation's OpenID provider (NHS CIS2 in production), and out of it.

`POST /sign-in/oidc` starts a sign-in (state, nonce and PKCE code verifier kept in the browser's
server-side session) and sends the browser to the provider; `GET /auth/callback` is where the
provider sends it back. The protocol itself is `cef_web.oidc`."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from cef_common.auth import Principal
from cef_web import events
from cef_web.auth import Person, web_session
from cef_web.config import Settings
from cef_web.errors import safe_next
from cef_web.oidc import KNOWN_ERRORS, PENDING_KEY, PENDING_SECONDS, VerifiedSignIn, oidc_client, refused
from cef_web.pages.signin import NAME, ORG_CODE
from cef_web.roles import roles_of
from cef_web.security import session_for_form
from cef_web.sessions import SessionStore, WebSession, constant_time_equal
from cef_web.templating import render

router = APIRouter()


def _not_configured(request: Request) -> Response:
    return render(
        request,
        "error.html",
        status_code=404,
        title="Page not found",
        detail="Signing in with an NHS account is not set up here.",
        status=404,
    )


@router.post("/sign-in/oidc")
async def sign_in_oidc(request: Request, next: Annotated[str, Form()] = "/") -> Response:
    """Starts a sign-in at the provider: what is needed to check its answer stays in the session."""
    settings: Settings = request.app.state.settings
    if not settings.oidc_issuer:
        return _not_configured(request)
    authorization = await oidc_client(request).begin(safe_next(next))
    store: SessionStore = request.app.state.sessions
    session = await run_in_threadpool(session_for_form, request)
    # One sign-in at a time per browser: starting another replaces the one pending.
    await run_in_threadpool(store.set_pending, session, {PENDING_KEY: authorization.pending})
    return RedirectResponse(authorization.url, status_code=303)


def _pending(session: WebSession | None) -> dict[str, Any] | None:
    found = session.pending.get(PENDING_KEY) if session is not None else None
    if not isinstance(found, dict):
        return None
    if not all(isinstance(found.get(k), str) for k in ("state", "nonce", "code_verifier")):
        return None
    return found


def _org(claims: dict[str, Any]) -> str | None:
    org = claims.get("org")
    if not isinstance(org, str):
        return None
    org = org.strip().upper()
    return org if ORG_CODE.match(org) else None


def _name(claims: dict[str, Any]) -> str | None:
    name = claims.get("name")
    if not isinstance(name, str):
        return None
    name = " ".join(name.split())
    # Shown on pages and recorded in the audit log: only a name-shaped name, never an identifier.
    return name if NAME.match(name) else None


@router.get("/auth/callback")
async def callback(
    request: Request,
    state: str | None = None,
    code: str | None = None,
    error: str | None = None,
    iss: str | None = None,
) -> Response:
    """The provider's answer: checked against the pending sign-in, then the person is signed in
    to a new session (the one used to sign in ends)."""
    settings: Settings = request.app.state.settings
    if not settings.oidc_issuer:
        return _not_configured(request)
    client = oidc_client(request)
    store: SessionStore = request.app.state.sessions
    session = web_session(request)
    pending = _pending(session)
    if session is not None and session.pending:
        # A pending sign-in is used once, whatever happens next: a refused answer cannot be retried
        # and a code cannot be presented twice through this session.
        await run_in_threadpool(store.set_pending, session, {})
    if pending is None:
        raise refused(
            "There is no sign-in waiting to finish in this browser (it may have finished already, or "
            "been started in another browser)",
            "oidc-no-pending-sign-in",
        )
    started = pending.get("started_at")
    if not isinstance(started, int) or time.time() - started > PENDING_SECONDS:
        raise refused("The sign-in took too long", "oidc-sign-in-expired")
    if state is None or not constant_time_equal(state, pending["state"]):
        raise refused("This sign-in did not start in this browser", "oidc-state-mismatch")
    metadata = await client.metadata()
    # RFC 9207: an answer naming another issuer is from another provider (a mix-up attack).
    if (iss is not None or metadata.iss_parameter_supported) and iss != metadata.issuer:
        raise refused("This sign-in came back from another sign-in service", "oidc-issuer-mismatch")
    if error is not None:
        # The provider's error code, when it is a known one; its description is not shown.
        reason = error if error in KNOWN_ERRORS else "an unknown error"
        if error == "access_denied":
            raise refused(
                "The NHS sign-in service did not let you sign in (access denied)", "oidc-access-denied"
            )
        raise refused(f"The NHS sign-in service could not sign you in ({reason})", "oidc-provider-error")
    if not code:
        raise refused("The NHS sign-in service sent no authorization code", "oidc-no-code")
    verified = await client.complete(pending, code)
    return await _sign_in(request, session, verified, pending, issuer=metadata.issuer)


async def _sign_in(
    request: Request,
    session: WebSession | None,
    verified: VerifiedSignIn,
    pending: dict[str, Any],
    *,
    issuer: str,
) -> Response:
    org = _org(verified.claims)
    roles = roles_of(verified.scopes)
    # The session keeps the scopes that make this app's roles; openid, profile and org were only
    # for signing in.
    scopes = frozenset(r.scope for r in roles)
    # From here the provider has said who this is: a refusal's audit event names them.
    request.state.principal = Principal(sub=verified.sub, issuer=issuer, scopes=scopes, org=org, client="web")
    if not roles:
        raise refused(
            "Your NHS account does not give you a role in this service: ask your organisation's CEF "
            "administrator for one",
            "oidc-no-role",
        )
    if org is None and any(r.org_kind is not None for r in roles):
        raise refused(
            "Your NHS account does not say which organisation you work for: ask your organisation's "
            "CEF administrator",
            "oidc-no-organisation",
        )
    name = _name(verified.claims)
    store: SessionStore = request.app.state.sessions
    new = await run_in_threadpool(
        lambda: store.sign_in(
            session,
            sub=verified.sub,
            name=name,
            org=org,
            scopes=scopes,
            issuer=issuer,
            tokens=verified.tokens,
        )
    )
    request.state.web_session = new
    request.state.new_session = new
    person = Person(sub=verified.sub, name=name or verified.sub, org=org, scopes=scopes, issuer=issuer)
    await events.record(
        request,
        type="web.sign_in",
        action="execute",
        outcome="success",
        principal=person.principal(),
        detail={"method": "oidc"},
    )
    target = safe_next(pending.get("next") if isinstance(pending.get("next"), str) else None)
    return RedirectResponse(roles[0].home if target == "/" else target, status_code=303)


async def provider_sign_out_url(request: Request, session: WebSession | None) -> str | None:
    """Where to send the browser after signing out here, to sign out at the provider too: its
    end-session URL (id_token_hint, post_logout_redirect_uri `{public_base_url}/signed-out`) when
    `session` came from this app's OpenID provider; None otherwise (or when the provider has no
    end-session endpoint). Call it BEFORE ending the session: it reads the session's sealed tokens."""
    settings: Settings = request.app.state.settings
    if session is None or not session.signed_in or not settings.oidc_issuer:
        return None
    if session.issuer != settings.oidc_issuer:
        return None
    store: SessionStore = request.app.state.sessions
    tokens = await run_in_threadpool(store.tokens, session)
    id_token = tokens.get("id_token")
    return await oidc_client(request).end_session_url(id_token if isinstance(id_token, str) else None)


@router.get("/signed-out")
async def signed_out(request: Request) -> Response:
    """Where the provider sends the browser back after signing out there."""
    return render(request, "signed_out.html", title="You have signed out")
