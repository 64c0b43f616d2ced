"""The Jinja environment: this app's templates over the NHS.UK frontend's (nhsuk-frontend-jinja)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import (
    ChainableUndefined,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    select_autoescape,
)
from starlette.responses import HTMLResponse

from cef_common import redact
from cef_web.auth import current_person, web_session
from cef_web.roles import ROLES

TEMPLATES = Path(__file__).parent / "templates"


def pounds(pennies: Any) -> str:
    """Pennies as pounds: 123456 → '£1,234.56', -5 → '−£0.05'; '' for none."""
    if pennies is None or pennies == "":
        return ""
    try:
        value = int(pennies)
    except (TypeError, ValueError):
        return str(pennies)
    sign = "−" if value < 0 else ""
    whole, part = divmod(abs(value), 100)
    return f"{sign}£{whole:,}.{part:02d}"


def pennies_of(amount: Any) -> int | None:
    """An amount as the services answer it (pounds, "1510.38") in pennies; None when there is none
    or it is not a number."""
    if amount is None or amount == "":
        return None
    try:
        return int((Decimal(str(amount)) * 100).to_integral_value())
    except (InvalidOperation, ValueError):
        return None


def when(value: Any) -> str:
    """An ISO date-time as '3 Dec 2026 16:20' (UTC), a date as '3 Dec 2026'."""
    if not value:
        return ""
    try:
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, date):
            return f"{value.day} {value:%b %Y}"
        else:
            text = str(value)
            if len(text) == 10:
                day = date.fromisoformat(text)
                return f"{day.day} {day:%b %Y}"
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    return f"{moment.day} {moment:%b %Y %H:%M}"


def number(value: Any) -> str:
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return "" if value is None else str(value)


def safe_text(value: Any) -> str:
    """Free text a provider typed, for a page title: withheld when it is shaped like an identifier."""
    text = "" if value is None else str(value)
    return "(withheld)" if redact.carries_identifier(text) else text


def sentence(value: Any) -> str:
    """A service's message as a sentence: its first letter capitalised, a full stop at the end."""
    text = "" if value is None else str(value).strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def environment() -> Environment:
    env = Environment(
        loader=ChoiceLoader([FileSystemLoader(TEMPLATES), PackageLoader("nhsuk_frontend_jinja")]),
        undefined=ChainableUndefined,
        autoescape=select_autoescape(("html", "jinja", "xml"), default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pounds=pounds, when=when, number=number, safe_text=safe_text, sentence=sentence)
    env.globals["ROLES"] = ROLES
    return env


templates = Jinja2Templates(env=environment())


def flash(request: Request, message: str) -> None:
    """A message for the next page this browser shows (after a form's redirect): "Payment recorded"."""
    session = web_session(request)
    if session is None:
        return
    store = request.app.state.sessions
    store.set_pending(session, {**session.pending, "flash": message[:500]})


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page, with what every page needs: the person, their roles, the form's CSRF token, and the
    message a form left for it (shown once)."""
    session = web_session(request)
    person = current_person(request)
    message = None
    if session is not None and "flash" in session.pending:
        pending = dict(session.pending)
        message = pending.pop("flash")
        request.app.state.sessions.set_pending(session, pending)
    base = {
        "flash": message,
        "person": person,
        "csrf_token": session.csrf_token if session else "",
        "settings": request.app.state.settings,
        "path": request.url.path,
    }
    response = templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)
    assert isinstance(response, HTMLResponse)
    return response
