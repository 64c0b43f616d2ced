"""Signing in and out, and the home page that leads each person to their role's pages.

In development (`DEV_ISSUER_ENABLED`) a form picks a role and an organisation; production refuses
that setting and signs in through OpenID Connect (`cef_web.oidc`)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from cef_web import events
from cef_web.auth import Person, current_person, web_session
from cef_web.config import Settings
from cef_web.errors import safe_next
from cef_web.pages import oidc
from cef_web.roles import ROLES
from cef_web.security import session_for_form
from cef_web.sessions import SessionStore
from cef_web.templating import render

router = APIRouter()

ORG_CODE = re.compile(r"^[A-Z0-9]{3,10}$")
# A name shown on pages and recorded as the subject: letters, spaces and a little punctuation, so
# nothing shaped like an identifier can be typed into it.
NAME = re.compile(r"^[A-Za-z][A-Za-z .'-]{0,59}$")
DEV_ISSUER_NAME = "web-dev"


@router.get("/")
async def home(request: Request) -> Response:
    person = current_person(request)
    if person is None:
        return RedirectResponse("/sign-in", status_code=303)
    if len(person.roles) == 1:
        return RedirectResponse(person.roles[0].home, status_code=303)
    return render(request, "home.html", title="Your work", roles=person.roles)


@router.get("/sign-in")
async def sign_in_page(request: Request, next: str | None = None) -> Response:
    settings: Settings = request.app.state.settings
    if current_person(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    await run_in_threadpool(session_for_form, request)
    return render(
        request,
        "sign_in.html",
        title="Sign in",
        next=safe_next(next),
        dev=settings.dev_issuer_enabled,
        oidc=bool(settings.oidc_issuer),
        values={},
        errors={},
    )


def _dev_errors(role: str, org: str, name: str) -> dict[str, str]:
    errors: dict[str, str] = {}
    if role not in ROLES:
        errors["role"] = "Select the role you are signing in as"
    if ROLES.get(role) is not None and ROLES[role].org_kind is not None:
        if not org:
            errors["org"] = (
                f"Enter your organisation's code ({ROLES[role].org_kind} code, such as RXP or 00L)"
            )
        elif not ORG_CODE.match(org):
            errors["org"] = "The organisation code must be 3 to 10 letters and numbers, such as RXP or 00L"
    if name and not NAME.match(name):
        errors["name"] = (
            "Your name must start with a letter and use only letters, spaces, hyphens and apostrophes"
        )
    return errors


@router.post("/sign-in/dev")
async def sign_in_dev(
    request: Request,
    role: Annotated[str, Form()] = "",
    org: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    settings: Settings = request.app.state.settings
    if not settings.dev_issuer_enabled:
        return render(
            request,
            "error.html",
            status_code=404,
            title="Page not found",
            detail="Development sign-in is turned off here: use the organisation's sign-in.",
            status=404,
        )
    org = org.strip().upper()
    name = " ".join(name.split())
    errors = _dev_errors(role, org, name)
    if errors:
        return render(
            request,
            "sign_in.html",
            status_code=422,
            title="Sign in",
            next=safe_next(next),
            dev=True,
            oidc=bool(settings.oidc_issuer),
            values={"role": role, "org": org, "name": name},
            errors=errors,
        )
    chosen = ROLES[role]
    org_code = org if chosen.org_kind is not None else None
    sub = f"{org_code}-{role}" if org_code else role
    store: SessionStore = request.app.state.sessions
    session = await run_in_threadpool(
        lambda: store.sign_in(
            web_session(request),
            sub=sub,
            name=name or None,
            org=org_code,
            scopes=frozenset({chosen.scope}),
            issuer=DEV_ISSUER_NAME,
        )
    )
    request.state.web_session = session
    request.state.new_session = session
    person = Person(
        sub=sub, name=name or sub, org=org_code, scopes=frozenset({chosen.scope}), issuer=DEV_ISSUER_NAME
    )
    await events.record(
        request,
        type="web.sign_in",
        action="execute",
        outcome="success",
        principal=person.principal(),
        detail={"method": "development", "role": role},
    )
    target = safe_next(next)
    return RedirectResponse(chosen.home if target == "/" else target, status_code=303)


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    session = web_session(request)
    person = current_person(request)
    # Signed in through the identity provider: signed out there too (its tokens are read before
    # the session that seals them ends).
    provider_url = await oidc.provider_sign_out_url(request, session)
    if session is not None:
        store: SessionStore = request.app.state.sessions
        await run_in_threadpool(store.end, session)
        request.state.web_session = None
        request.state.session_ended = True
    if person is not None:
        await events.record(
            request,
            type="web.sign_out",
            action="execute",
            outcome="success",
            principal=person.principal(),
        )
    if provider_url is not None:
        return RedirectResponse(provider_url, status_code=303)
    return render(request, "signed_out.html", title="You have signed out")


@router.get("/accessibility")
async def accessibility(request: Request) -> Response:
    return render(request, "accessibility.html", title="Accessibility statement")
