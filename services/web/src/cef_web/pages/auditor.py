"""The auditor pages: search the audit log, follow an entity's history, find re-identifications,
verify the chain and export what a search found.

Every page calls the audit service as the signed-in auditor (`audit_api`); the service records each
query as an event of its own. The search filters travel in the page's GET query, so anything an
auditor types that is shaped like an NHS number, a date or a postcode is refused here, before any
service is called; a patient token is looked up by a POST form, never through a URL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, get_args
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from cef_common.audit import AuditAction, AuditOutcome
from cef_common.redact import carries_identifier, is_uuid
from cef_web.api import ApiProblem, audit_api, download
from cef_web.auth import AuditorUser
from cef_web.templating import render

router = APIRouter(prefix="/auditor")

PAGE_SIZE = 50
OUTCOMES: tuple[str, ...] = get_args(AuditOutcome)
ACTIONS: tuple[str, ...] = get_args(AuditAction)
# The NHS.UK tag colour of each outcome.
OUTCOME_COLOURS = {"success": "green", "failure": "orange", "denied": "red"}
# The free-text filters of the search, in the order of the form: (field id, service parameter).
TEXT_FILTERS = (
    ("type", "type"),
    ("source", "source"),
    ("actor", "actor"),
    ("org", "org"),
    ("entity_type", "entity_type"),
    ("entity", "entity"),
)
# An event type, a producing service, a subject, an organisation or an entity: printable, one line.
FILTER_TEXT = re.compile(r"^[^\x00-\x1f\x7f]{1,255}$")
# What a path segment of an entity link may be: a simple name or a UUID (an invoice line's id holds
# its line_ref, which never goes in a URL: a line links to its invoice's history instead).
SIMPLE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# A patient token as the tokeniser issues them ("N1." and URL-safe base64 of a keyed hash): it
# starts with a letter, so an NHS number or a date typed in its place is refused.
PATIENT_TOKEN = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{7,63}$")
NO_IDENTIFIER = (
    "must not hold anything shaped like an NHS number, a date or a postcode: search by a person's "
    "subject, an organisation code, an event type or an entity's id"
)


@dataclass(frozen=True)
class Search:
    """The event search as the auditor asked it: what the form shows back, and what the audit
    service is sent once every value has passed the checks."""

    values: dict[str, str]
    params: dict[str, Any]
    errors: dict[str, str]

    def query(self, **extra: str) -> str:
        """The page's own query string for these filters (and a cursor): for paging and export."""
        pairs = [(k, v) for k, v in self.values.items() if v]
        pairs += [(k, v) for k, v in extra.items() if v]
        return urlencode(pairs)


def _day(values: dict[str, str], prefix: str, label: str, errors: dict[str, str]) -> date | None:
    """A day typed into the NHS.UK date input `prefix` (day, month, year fields), or None when
    all three are empty; a refusal in `errors` otherwise."""
    parts = [values.get(f"{prefix}-{p}", "") for p in ("day", "month", "year")]
    if not any(parts):
        return None
    if not all(p.isdigit() and len(p) <= 4 for p in parts):
        errors[prefix] = f"{label} must be a real date, such as 27 3 2026"
        return None
    day, month, year = (int(p) for p in parts)
    try:
        chosen = date(year, month, day)
    except ValueError:
        errors[prefix] = f"{label} must be a real date, such as 27 3 2026"
        return None
    if year < 2000:
        errors[prefix] = f"{label} must be in the year 2000 or later"
        return None
    return chosen


def read_search(query: dict[str, str]) -> Search:
    """The event filters from the page's query string, checked: nothing shaped like an identifier,
    only known outcomes and actions, and real dates."""
    values: dict[str, str] = {}
    params: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for field, param in TEXT_FILTERS:
        text = query.get(field, "").strip()
        values[field] = text
        if not text:
            continue
        if not FILTER_TEXT.match(text):
            errors[field] = "must be one line of at most 255 characters"
        elif carries_identifier(text):
            errors[field] = NO_IDENTIFIER
        else:
            # The type filter takes several types at once, separated by commas (patient.*, invoice.*).
            params[param] = [t.strip() for t in text.split(",") if t.strip()] if field == "type" else text
    for field, allowed in (("outcome", OUTCOMES), ("action", ACTIONS)):
        choice = query.get(field, "").strip()
        values[field] = choice
        if choice and choice not in allowed:
            errors[field] = f"Select one of {', '.join(allowed)}, or any"
        elif choice:
            params[field] = [choice]
    for prefix in ("since", "until"):
        for part in ("day", "month", "year"):
            values[f"{prefix}-{part}"] = query.get(f"{prefix}-{part}", "").strip()
    since = _day(values, "since", "The date from", errors)
    until = _day(values, "until", "The date to", errors)
    if since is not None and until is not None and until < since:
        errors["until"] = "The date to must be the same as or after the date from"
    if since is not None:
        params["since"] = f"{since.isoformat()}T00:00:00Z"
    if until is not None:
        # "To" a day includes that day: the service's until is exclusive.
        params["until"] = f"{(until + timedelta(days=1)).isoformat()}T00:00:00Z"
    # The prefix before the message names the field in the error summary.
    labels = {
        "type": "Event type",
        "source": "Source",
        "actor": "Person (subject)",
        "org": "Organisation",
        "entity_type": "Entity type",
        "entity": "Entity id",
    }
    errors = {k: (f"{labels[k]} {v}" if k in labels else v) for k, v in errors.items()}
    return Search(values=values, params=params, errors=errors)


def entity_href(entity_type: Any, entity_id: Any) -> str | None:
    """The history page of an entity an event names, or None when it has no page whose address
    could hold it: an invoice's parts (lines, challenges, payments: "{invoice id}/…") link to the
    invoice's history, since a line's id holds its line_ref, which must not go in a URL."""
    if not isinstance(entity_type, str) or not isinstance(entity_id, str):
        return None
    head, _, rest = entity_id.partition("/")
    if rest and entity_type.startswith("invoice") and is_uuid(head):
        return f"/auditor/entities/invoice/{head}"
    if not SIMPLE_SEGMENT.match(entity_type) or carries_identifier(entity_type):
        return None
    if is_uuid(entity_id) or (SIMPLE_SEGMENT.match(entity_id) and not carries_identifier(entity_id)):
        return f"/auditor/entities/{quote(entity_type, safe='')}/{quote(entity_id, safe='')}"
    return None


def moment(stamp: Any) -> str:
    """A log time to the second, as auditors compare them: "3 Dec 2026 16:20:05" (UTC)."""
    if not isinstance(stamp, str):
        return ""
    try:
        at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return f"{at.day} {at:%b %Y %H:%M:%S}"


def event_row(event: dict[str, Any]) -> dict[str, Any]:
    """What a table row shows of one event."""
    actor = event.get("actor") or {}
    entity = event.get("entity") or {}
    outcome = str(event.get("outcome") or "")
    entity_id = entity.get("id")
    return {
        "seq": event.get("seq"),
        "recorded_at": moment(event.get("recorded_at")),
        "type": event.get("type") or "",
        "subtype": event.get("subtype"),
        "action": event.get("action") or "",
        "outcome": outcome,
        "colour": OUTCOME_COLOURS.get(outcome, "grey"),
        "actor_sub": actor.get("sub") or "",
        "actor_org": actor.get("org"),
        "source": event.get("source") or "",
        "entity_type": entity.get("type"),
        "entity_id": entity_id if isinstance(entity_id, str) else None,
        "entity_count": entity.get("count"),
        "entity_href": entity_href(entity.get("type"), entity_id),
        "purpose": event.get("purpose"),
    }


async def _summary(request: Request, person: AuditorUser) -> dict[str, Any] | None:
    """The log's counts for the top of the home page; None when the service refused them (the
    search below still works)."""
    try:
        summary: dict[str, Any] = await audit_api(request).get(person, "/v1/summary")
    except ApiProblem as problem:
        if problem.status >= 500:
            raise
        return None
    return summary


@router.get("/events")
async def events_page(request: Request, person: AuditorUser, cursor: str | None = None) -> Response:
    search = read_search(dict(request.query_params))
    context: dict[str, Any] = {
        "title": "Audit events",
        "values": search.values,
        "outcomes": OUTCOMES,
        "actions": ACTIONS,
        "export_href": f"/auditor/events.csv?{search.query()}".rstrip("?"),
    }
    if search.errors:
        # Refused before any call: a value shaped like an identifier never reaches the service.
        return render(
            request,
            "auditor/events.html",
            status_code=422,
            errors=search.errors,
            summary=None,
            rows=None,
            **context,
        )
    client = audit_api(request)
    summary = await _summary(request, person)
    params = {**search.params, "limit": PAGE_SIZE, "order": "desc", "cursor": cursor}
    try:
        page = await client.get(person, "/v1/events", **params)
    except ApiProblem as problem:
        if problem.status != 400 and problem.status != 422:
            raise
        # The service's refusal of a filter (a cursor it did not issue, a bad type): said in words.
        return render(
            request,
            "auditor/events.html",
            status_code=422,
            errors={"type": problem.detail},
            summary=summary,
            rows=None,
            **context,
        )
    next_cursor = page.get("next_cursor")
    return render(
        request,
        "auditor/events.html",
        errors={},
        summary=summary,
        rows=[event_row(e) for e in page.get("items", [])],
        filtered=bool(search.params),
        previous_href=f"/auditor/events?{search.query()}".rstrip("?") if cursor else None,
        next_href=f"/auditor/events?{search.query(cursor=next_cursor)}" if next_cursor else None,
        **context,
    )


@router.get("/events.csv")
async def export_events(request: Request, person: AuditorUser) -> Response:
    search = read_search(dict(request.query_params))
    if search.errors:
        return render(
            request,
            "auditor/events.html",
            status_code=422,
            title="Audit events",
            errors=search.errors,
            values=search.values,
            outcomes=OUTCOMES,
            actions=ACTIONS,
            export_href=None,
            summary=None,
            rows=None,
        )
    return await download(
        audit_api(request),
        person,
        "/v1/events/export",
        {**search.params, "format": "csv"},
        filename="audit-events.csv",
    )


@router.get("/entities/{entity_type}/{entity_id}")
async def entity_page(
    request: Request, person: AuditorUser, entity_type: str, entity_id: str, cursor: str | None = None
) -> Response:
    if (
        not SIMPLE_SEGMENT.match(entity_type)
        or not FILTER_TEXT.match(entity_id)
        or carries_identifier(entity_type)
        or carries_identifier(entity_id)
    ):
        # An address typed by hand: never passed on, never echoed.
        return render(
            request,
            "error.html",
            status_code=404,
            title="Page not found",
            detail="There is no history at this address: follow an entity's link from the audit events.",
            status=404,
        )
    path = f"/v1/entities/{quote(entity_type, safe='')}/{quote(entity_id, safe='')}/events"
    page = await audit_api(request).get(person, path, limit=PAGE_SIZE, cursor=cursor)
    next_cursor = page.get("next_cursor")
    here = f"/auditor/entities/{quote(entity_type, safe='')}/{quote(entity_id, safe='')}"
    return render(
        request,
        "auditor/entity.html",
        title=f"History of {entity_type} {entity_id}",
        entity_type=entity_type,
        entity_id=entity_id,
        rows=[event_row(e) for e in page.get("items", [])],
        with_parts=entity_type == "invoice",
        previous_href=here if cursor else None,
        next_href=f"{here}?{urlencode({'cursor': next_cursor})}" if next_cursor else None,
    )


def reidentification_row(event: dict[str, Any]) -> dict[str, Any]:
    """What a table row shows of one re-identification (a `patient.reidentify` event)."""
    detail = event.get("detail") or {}
    actor = event.get("actor") or {}
    invoice_id = detail.get("invoice_id")
    line_ref = detail.get("line_ref")
    outcome = str(event.get("outcome") or "")
    # A refused attempt at a line that does not exist records what was asked as a digest (a dict).
    known_invoice = isinstance(invoice_id, str) and is_uuid(invoice_id)
    return {
        "recorded_at": moment(event.get("recorded_at")),
        "actor_sub": actor.get("sub") or "",
        "actor_org": actor.get("org"),
        "invoice_id": invoice_id if known_invoice else None,
        "invoice_href": f"/auditor/entities/invoice/{invoice_id}" if known_invoice else None,
        "line_ref": line_ref if isinstance(line_ref, str) else None,
        "patient_token": detail.get("patient_token")
        if isinstance(detail.get("patient_token"), str)
        else None,
        "purpose": event.get("purpose") or detail.get("purpose"),
        "outcome": outcome,
        "colour": OUTCOME_COLOURS.get(outcome, "grey"),
        "reason": detail.get("reason")
        if outcome != "success" and isinstance(detail.get("reason"), str)
        else None,
    }


def _reidentification_errors(person_sub: str, patient_token: str) -> dict[str, str]:
    errors: dict[str, str] = {}
    if person_sub and (not FILTER_TEXT.match(person_sub) or carries_identifier(person_sub)):
        errors["person"] = (
            "Person (subject) must be one line, and must not hold anything shaped like an NHS number, "
            "a date or a postcode"
        )
    if patient_token and not PATIENT_TOKEN.match(patient_token):
        errors["patient_token"] = (
            "Patient token must be the token as the audit log shows it (such as N1. followed by "
            "letters and digits), not an NHS number"
        )
    return errors


async def _reidentifications(
    request: Request,
    person: AuditorUser,
    *,
    person_sub: str = "",
    patient_token: str = "",
    cursor: str = "",
    searched: bool,
) -> Response:
    values = {"person": person_sub, "patient_token": patient_token}
    errors = _reidentification_errors(person_sub, patient_token)
    if errors:
        return render(
            request,
            "auditor/reidentifications.html",
            status_code=422,
            title="Re-identifications",
            values=values,
            errors=errors,
            rows=None,
            searched=searched,
        )
    params = {
        "person": person_sub,
        "patient_token": patient_token,
        "cursor": cursor,
        "limit": PAGE_SIZE,
        "order": "desc",
    }
    try:
        # By `request`: the service's parameter `person` would collide with get()'s own.
        response = await audit_api(request).request(person, "GET", "/v1/reidentifications", params=params)
        page = response.json()
    except ApiProblem as problem:
        if problem.status not in (400, 422):
            raise
        return render(
            request,
            "auditor/reidentifications.html",
            status_code=422,
            title="Re-identifications",
            values=values,
            errors={"person": problem.detail},
            rows=None,
            searched=searched,
        )
    return render(
        request,
        "auditor/reidentifications.html",
        title="Re-identifications",
        values=values,
        errors={},
        rows=[reidentification_row(e) for e in page.get("items", [])],
        next_cursor=page.get("next_cursor"),
        continued=bool(cursor),
        searched=searched,
    )


@router.get("/reidentifications")
async def reidentifications_page(request: Request, person: AuditorUser) -> Response:
    # Unfiltered: the latest re-identifications by anyone, newest first.
    return await _reidentifications(request, person, searched=False)


@router.post("/reidentifications")
async def reidentifications_search(
    request: Request,
    person: AuditorUser,
    person_sub: Annotated[str, Form(alias="person")] = "",
    patient_token: Annotated[str, Form()] = "",
    cursor: Annotated[str, Form()] = "",
) -> Response:
    # A search, not a change: its answer is the page itself (a patient token must not be in a URL,
    # so there is nothing to redirect to).
    return await _reidentifications(
        request,
        person,
        person_sub=person_sub.strip(),
        patient_token=patient_token.strip(),
        cursor=cursor.strip(),
        searched=True,
    )


def age_of(stamp: Any, now: datetime) -> str | None:
    """How long ago an ISO time was, in words: "4 minutes ago"; None when it cannot be read."""
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = max(0, int((now - moment).total_seconds()))
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'} ago"
    return "less than a minute ago"


@router.get("/verification")
async def verification_page(request: Request, person: AuditorUser) -> Response:
    client = audit_api(request)
    report: dict[str, Any] = await client.get(person, "/v1/verify")
    checkpoint: dict[str, Any] | None
    try:
        checkpoint = await client.get(person, "/v1/checkpoints")
    except ApiProblem as problem:
        if problem.status != 404:
            raise
        # None is signed yet: the first follows the first events.
        checkpoint = None
    return render(
        request,
        "auditor/verification.html",
        title="Verify the audit log",
        report=report,
        checkpoint=checkpoint,
        checkpoint_age=age_of(checkpoint.get("issued_at"), datetime.now(UTC)) if checkpoint else None,
    )
