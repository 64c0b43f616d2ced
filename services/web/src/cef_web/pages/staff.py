"""The CEF staff pages: the commissioner's query queue, one invoice's query lines with the forms that
resolve them (challenge, decide, decide many, approve), and re-identifying one line's patient.

Line refs and every typed text travel in POST bodies only; the one page that shows a patient's
identifiers is the answer to a POST, never reachable by GET, and is not cached (the app answers every
page with `Cache-Control: no-store`; this page says so itself as well)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from cef_common import redact
from cef_web.api import ApiProblem, ServiceClient, cef_api
from cef_web.auth import Person, StaffUser
from cef_web.errors import error_page
from cef_web.templating import flash, pennies_of, pounds, render, safe_text, sentence

router = APIRouter(prefix="/staff")

# A query line waits for a decision in these states (the API's default selection of the queue).
UNDECIDED = ("query", "challenged", "responded")
LINE_STATES = (*UNDECIDED, "accepted", "rejected")
# The purposes the API accepts for a re-identification, as staff read them.
PURPOSES = {
    "resolve-query": "To resolve a query on this line",
    "provider-challenge": "The provider disputes the line's outcome",
    "audit-request": "An auditor asked about this line",
}
QUEUE_PAGE = 20
LINES_PAGE = 50
# The API's largest page: one call counts a commissioner's whole queue in all but the biggest cases.
MAX_PAGE = 5000
MESSAGE_MIN, MESSAGE_MAX = 10, 2000
NOTE_MAX = 900
REIDENTIFY_REASON_MIN, REIDENTIFY_REASON_MAX = 10, 1000
AMOUNT = re.compile(r"^\d{1,12}(\.\d{1,2})?$")


def _is_invoice_id(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _echo(text: str) -> str:
    """Typed text to put back in a refused form: withheld when it seems to hold an identifier (the
    person typed it, but no staff page but the re-identification page may show one)."""
    return "" if redact.identifiers_in_free_text(text) else text


def _not_found(request: Request) -> Response:
    return error_page(request, 404, "There is no invoice at this address among your commissioner's.")


# --- the queue -------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What one invoice has left to decide."""

    undecided: int = 0
    challenged: int = 0
    overdue: int = 0
    claimed: int = 0
    expected: int = 0
    reasons: set[str] = field(default_factory=set)

    def add(self, item: dict[str, Any]) -> None:
        self.undecided += 1
        challenge = item.get("challenge") or {}
        if challenge.get("status") == "open":
            self.challenged += 1
            if challenge.get("overdue"):
                self.overdue += 1
        self.claimed += pennies_of(item.get("claimed_amount")) or 0
        self.expected += pennies_of(item.get("expected_amount")) or 0
        self.reasons.update(item.get("reasons") or [])


async def _queue_items(
    api: ServiceClient, person: Person, *, invoice_id: str | None = None, limit: int = MAX_PAGE
) -> tuple[list[dict[str, Any]], str | None]:
    page = await api.get(person, "/v1/queries", invoice_id=invoice_id, limit=limit)
    return list(page.get("items") or []), page.get("next_cursor")


async def _all_undecided(api: ServiceClient, person: Person, invoice_id: str) -> list[dict[str, Any]]:
    """Every undecided query line of one invoice, every page of it."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await api.get(person, "/v1/queries", invoice_id=invoice_id, limit=MAX_PAGE, cursor=cursor)
        items.extend(page.get("items") or [])
        cursor = page.get("next_cursor")
        if not cursor:
            return items


async def _tallies(api: ServiceClient, person: Person, invoice_ids: list[str]) -> dict[str, Tally]:
    """What each invoice of a queue page has left to decide: one read of the whole queue, and a read
    of an invoice's own lines only when that one read could not cover it."""
    tallies = {invoice_id: Tally() for invoice_id in invoice_ids}
    if not invoice_ids:
        return tallies
    items, more = await _queue_items(api, person)
    seen: list[str] = []
    for item in items:
        if not seen or seen[-1] != item["invoice_id"]:
            seen.append(item["invoice_id"])
        if item["invoice_id"] in tallies:
            tallies[item["invoice_id"]].add(item)
    # The queue is in invoice order: when it was cut short, only the invoices it went past are whole.
    whole = set(seen[:-1]) if more else set(invoice_ids)
    for invoice_id in invoice_ids:
        if invoice_id not in whole:
            tally = Tally()
            for item in await _all_undecided(api, person, invoice_id):
                tally.add(item)
            tallies[invoice_id] = tally
    return tallies


@router.get("/queue")
async def queue(request: Request, person: StaffUser, cursor: str | None = None) -> Response:
    """Staff's home: the commissioner's validated invoices, oldest first, with what each has left."""
    api = cef_api(request)
    page = await api.get(person, "/v1/invoices", status="validated", limit=QUEUE_PAGE, cursor=cursor)
    invoices: list[dict[str, Any]] = list(page.get("items") or [])
    tallies = await _tallies(api, person, [i["id"] for i in invoices])
    rows = [
        {
            "invoice": invoice,
            "tally": tallies[invoice["id"]],
            "claimed_total": pennies_of((invoice.get("summary") or {}).get("claimed_amount")),
        }
        for invoice in invoices
    ]
    next_cursor = page.get("next_cursor")
    return render(
        request,
        "staff/queue.html",
        title="Query queue",
        rows=rows,
        waiting=sum(1 for tally in tallies.values() if tally.undecided),
        previous_href="/staff/queue" if cursor else None,
        next_href=f"/staff/queue?{urlencode({'cursor': next_cursor})}" if next_cursor else None,
    )


# --- one invoice's query lines ---------------------------------------------------------------------


@dataclass
class View:
    """Which query lines the invoice page shows: a reason, a state (undecided by default), a page."""

    reason: str = ""
    state: str = ""
    cursor: str = ""

    def query(self, *, cursor: str | None = None) -> str:
        params = {"reason": self.reason, "state": self.state, "cursor": cursor or ""}
        kept = {k: v for k, v in params.items() if v}
        return f"?{urlencode(kept)}" if kept else ""


async def _catalogue(api: ServiceClient, person: Person) -> list[dict[str, Any]]:
    return list((await api.get(person, "/v1/reasons")).get("items") or [])


def _clean_view(view: View, catalogue: list[dict[str, Any]]) -> View:
    """The view with any filter the API would refuse dropped (a hand-edited address)."""
    query_codes = {c["code"] for c in catalogue if c.get("outcome") == "query"}
    return View(
        reason=view.reason if view.reason in query_codes else "",
        state=view.state if view.state in LINE_STATES else "",
        cursor=view.cursor,
    )


async def _invoice_page(
    request: Request,
    person: StaffUser,
    invoice_id: str,
    view: View,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    """The invoice page; a refused form renders it again with its errors and what was typed."""
    if not _is_invoice_id(invoice_id):
        return _not_found(request)
    api = cef_api(request)
    invoice = await api.get(person, f"/v1/invoices/{invoice_id}")
    catalogue = await _catalogue(api, person)
    view = _clean_view(view, catalogue)
    lines: list[dict[str, Any]] = []
    explained: list[dict[str, Any]] = []
    next_cursor: str | None = None
    if invoice.get("status") == "validated":
        page = await api.get(
            person,
            "/v1/queries",
            invoice_id=invoice_id,
            reason=view.reason,
            state=view.state,
            limit=LINES_PAGE,
            cursor=view.cursor,
        )
        lines = list(page.get("items") or [])
        explained = list(page.get("reasons_explained") or [])
        next_cursor = page.get("next_cursor")
    # How many are left to decide is known from this page alone when it shows every undecided line.
    undecided_left: int | None = None
    if not view.reason and not view.state and not view.cursor and invoice.get("status") == "validated":
        undecided_left = None if next_cursor else len(lines)
    actionable = [
        line for line in lines if line.get("state") in UNDECIDED and line.get("line_ref") is not None
    ]
    base = f"/staff/invoices/{invoice_id}"
    return render(
        request,
        "staff/invoice.html",
        status_code=status_code,
        title=f"Query lines of invoice {safe_text(invoice.get('invoice_number'))}",
        invoice=invoice,
        lines=lines,
        actionable=actionable,
        explained=explained,
        catalogue=catalogue,
        query_reasons=[c for c in catalogue if c.get("outcome") == "query"],
        states=LINE_STATES,
        view=view,
        undecided_left=undecided_left,
        base=base,
        previous_href=f"{base}{view.query()}" if view.cursor else None,
        next_href=f"{base}{view.query(cursor=next_cursor)}" if next_cursor else None,
        errors=errors or {},
        values=values or {},
        pennies=pennies_of,
    )


@router.get("/invoices/{invoice_id}")
async def invoice_lines(
    request: Request,
    invoice_id: str,
    person: StaffUser,
    reason: str = "",
    state: str = "",
    cursor: str = "",
) -> Response:
    return await _invoice_page(request, person, invoice_id, View(reason.strip().upper(), state, cursor))


def _back(invoice_id: str, view: View) -> str:
    return f"/staff/invoices/{invoice_id}{View(view.reason, view.state).query()}"


def _field_errors(problem: ApiProblem, fields: dict[str, tuple[str, str]], default: str) -> dict[str, str]:
    """A refusal of the API as form errors. `fields` maps a field of the API's body to the form's
    field and what it is called there: each field the API names gets its message on that field
    ("Your question must not contain an NHS number."); anything else, the API's detail on `default`."""
    errors: dict[str, str] = {}
    for error in problem.errors:
        name = str(error.get("field") or "").rsplit(".", 1)[-1]
        if name not in fields or fields[name][0] in errors:
            continue
        target, subject = fields[name]
        # Pydantic's wording ("Value error, must ...") is the service's, not the page's.
        said = str(error.get("message") or "").removeprefix("Value error, ").strip()
        errors[target] = sentence(f"{subject} {said}" if said.startswith("must") else said or problem.detail)
    return errors or {default: sentence(problem.detail)}


def _decision_reason(reason_code: str, note: str) -> str | None:
    """What the API keeps as the decision's reason: the catalogue's code, then the note."""
    parts = [p for p in (reason_code, note) if p]
    return ": ".join(parts) if parts else None


def _check_reason(
    errors: dict[str, str],
    prefix: str,
    *,
    rejecting: bool,
    reason_code: str,
    note: str,
    codes: set[str],
) -> None:
    if reason_code and reason_code not in codes:
        errors[f"{prefix}-reason"] = "Select a reason from the list"
    elif rejecting and not reason_code:
        errors[f"{prefix}-reason"] = "Select the reason for rejecting"
    if len(note) > NOTE_MAX:
        errors[f"{prefix}-note"] = f"The note must be {NOTE_MAX} characters or fewer"


@router.post("/invoices/{invoice_id}/challenge")
async def challenge(
    request: Request,
    invoice_id: str,
    person: StaffUser,
    line_ref: Annotated[str, Form()] = "",
    message: Annotated[str, Form()] = "",
    due_day: Annotated[str, Form(alias="due-day")] = "",
    due_month: Annotated[str, Form(alias="due-month")] = "",
    due_year: Annotated[str, Form(alias="due-year")] = "",
    view_reason: Annotated[str, Form()] = "",
    view_state: Annotated[str, Form()] = "",
) -> Response:
    """Ask the provider about one query line."""
    if not _is_invoice_id(invoice_id):
        return _not_found(request)
    view = View(view_reason, view_state)
    message = message.strip()
    values = {
        "challenge_line": line_ref,
        "challenge_message": _echo(message),
        "due_day": due_day.strip(),
        "due_month": due_month.strip(),
        "due_year": due_year.strip(),
    }
    errors: dict[str, str] = {}
    if not line_ref:
        errors["challenge-line"] = "Select the line to challenge"
    if not message:
        errors["challenge-message"] = "Enter your question to the provider"
    elif len(message) < MESSAGE_MIN:
        errors["challenge-message"] = f"Your question must be at least {MESSAGE_MIN} characters"
    elif len(message) > MESSAGE_MAX:
        errors["challenge-message"] = f"Your question must be {MESSAGE_MAX} characters or fewer"
    due: date | None = None
    parts = (values["due_day"], values["due_month"], values["due_year"])
    if any(parts):
        try:
            due = date(int(parts[2]), int(parts[1]), int(parts[0]))
        except ValueError:
            errors["challenge-due"] = "The answer-by date must be a real date, for example 31 12 2026"
    if errors:
        return await _invoice_page(
            request, person, invoice_id, view, errors=errors, values=values, status_code=422
        )
    body: dict[str, Any] = {"message": message}
    if due is not None:
        body["due_date"] = due.isoformat()
    api = cef_api(request)
    try:
        raised = await api.post(
            person, f"/v1/invoices/{invoice_id}/lines/{_segment(line_ref)}/challenge", body
        )
    except ApiProblem as problem:
        if problem.status not in (404, 409, 422):
            raise
        errors = _field_errors(
            problem,
            {
                "message": ("challenge-message", "Your question"),
                "due_date": ("challenge-due", "The answer-by date"),
            },
            "challenge-line",
        )
        return await _invoice_page(
            request, person, invoice_id, view, errors=errors, values=values, status_code=422
        )
    flash(
        request,
        f"Line {safe_text(raised.get('line_ref'))} challenged: {raised.get('provider_code')} "
        f"is asked to answer by {raised.get('due_date')}",
    )
    return RedirectResponse(_back(invoice_id, view), status_code=303)


def _segment(line_ref: str) -> str:
    """A line ref as one path segment of the API's address (it may hold '/', '?' or spaces)."""
    return quote(line_ref, safe="")


def _amount(text: str) -> str | None:
    """Pounds as the API takes them ("1234.50"), or None when it is not an amount."""
    cleaned = text.strip().removeprefix("£").replace(",", "")
    return cleaned if AMOUNT.match(cleaned) else None


@router.post("/invoices/{invoice_id}/decide")
async def decide(
    request: Request,
    invoice_id: str,
    person: StaffUser,
    line_ref: Annotated[str, Form()] = "",
    decision: Annotated[str, Form()] = "",
    amount: Annotated[str, Form()] = "",
    reason_code: Annotated[str, Form()] = "",
    note: Annotated[str, Form()] = "",
    view_reason: Annotated[str, Form()] = "",
    view_state: Annotated[str, Form()] = "",
) -> Response:
    """Accept one query line at an amount, or reject it with a reason."""
    if not _is_invoice_id(invoice_id):
        return _not_found(request)
    view = View(view_reason, view_state)
    note = note.strip()
    values = {
        "decide_line": line_ref,
        "decide_decision": decision,
        "decide_amount": amount.strip(),
        "decide_reason": reason_code,
        "decide_note": _echo(note),
    }
    api = cef_api(request)
    codes = {c["code"] for c in await _catalogue(api, person)}
    errors: dict[str, str] = {}
    if not line_ref:
        errors["decide-line"] = "Select the line to decide"
    if decision not in ("accept", "reject"):
        errors["decide-decision"] = "Select whether to accept or reject the line"
    to_pay: str | None = None
    if decision == "accept":
        if not amount.strip():
            errors["decide-amount"] = "Enter the amount to pay, such as 123.45"
        else:
            to_pay = _amount(amount)
            if to_pay is None:
                errors["decide-amount"] = "Enter the amount in pounds and pence, such as 123.45"
    _check_reason(
        errors, "decide", rejecting=decision == "reject", reason_code=reason_code, note=note, codes=codes
    )
    if errors:
        return await _invoice_page(
            request, person, invoice_id, view, errors=errors, values=values, status_code=422
        )
    body: dict[str, Any] = {"decision": decision}
    if to_pay is not None:
        body["amount"] = to_pay
    reason = _decision_reason(reason_code, note)
    if reason is not None:
        body["reason"] = reason
    try:
        line = await api.post(person, f"/v1/invoices/{invoice_id}/lines/{_segment(line_ref)}/decision", body)
    except ApiProblem as problem:
        if problem.status not in (404, 409, 422):
            raise
        errors = _field_errors(
            problem,
            {"amount": ("decide-amount", "The amount"), "reason": ("decide-note", "The reason and note")},
            "decide-line",
        )
        return await _invoice_page(
            request, person, invoice_id, view, errors=errors, values=values, status_code=422
        )
    said = f"accepted at {_money(line.get('decided_amount'))}" if decision == "accept" else "rejected"
    flash(request, f"Line {safe_text(line.get('line_ref'))} {said}")
    return RedirectResponse(_back(invoice_id, view), status_code=303)


def _money(amount: Any) -> str:
    return pounds(pennies_of(amount))


BULK_DECISIONS = {
    "accept-claimed": ("accept", "claimed"),
    "accept-expected": ("accept", "expected"),
    "reject": ("reject", None),
}


def _plan(checked: list[str], undecided: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """How to decide exactly the checked lines: the reason codes whose every undecided line is
    checked (each decided at once by the API's bulk decision, all or none), and the lines left over,
    decided one by one."""
    remaining = set(checked)
    carrying: dict[str, set[str]] = {}
    for item in undecided:
        for code in item.get("reasons") or []:
            carrying.setdefault(code, set()).add(item["line_ref"])
    codes: list[str] = []
    done: set[str] = set()
    # Biggest groups first: the fewest calls, and the most lines decided together.
    for code in sorted(carrying, key=lambda c: (-len(carrying[c] & remaining), c)):
        left = carrying[code] - done
        if len(left) >= 2 and left <= remaining:
            codes.append(code)
            done |= left
            remaining -= left
    order = [item["line_ref"] for item in undecided]
    return codes, sorted(remaining, key=order.index)


@router.post("/invoices/{invoice_id}/decide-bulk")
async def decide_bulk(
    request: Request,
    invoice_id: str,
    person: StaffUser,
    line_ref: Annotated[list[str] | None, Form()] = None,
    decision: Annotated[str, Form()] = "",
    reason_code: Annotated[str, Form()] = "",
    note: Annotated[str, Form()] = "",
    view_reason: Annotated[str, Form()] = "",
    view_state: Annotated[str, Form()] = "",
) -> Response:
    """One decision for every checked line."""
    view = View(view_reason, view_state)
    checked = list(dict.fromkeys(r for r in (line_ref or []) if r))
    note = note.strip()
    values = {
        "bulk_lines": checked,
        "bulk_decision": decision,
        "bulk_reason": reason_code,
        "bulk_note": _echo(note),
    }
    if not _is_invoice_id(invoice_id):
        return _not_found(request)
    api = cef_api(request)
    codes = {c["code"] for c in await _catalogue(api, person)}
    errors: dict[str, str] = {}
    if not checked:
        errors["bulk-lines"] = "Select the lines to decide"
    if decision not in BULK_DECISIONS:
        errors["bulk-decision"] = "Select the decision for the selected lines"
    _check_reason(
        errors, "bulk", rejecting=decision == "reject", reason_code=reason_code, note=note, codes=codes
    )
    undecided = await _all_undecided(api, person, invoice_id) if not errors else []
    by_ref = {item["line_ref"]: item for item in undecided if item.get("line_ref") is not None}
    if not errors:
        gone = [ref for ref in checked if ref not in by_ref]
        if gone:
            errors["bulk-lines"] = (
                f"{len(gone)} of the selected lines no longer wait for a decision (decided since the "
                "page was shown): select the lines again"
            )
    verb, basis = BULK_DECISIONS.get(decision, ("", None))
    if not errors and basis is not None:
        missing = [ref for ref in checked if by_ref[ref].get(f"{basis}_amount") is None]
        if missing:
            errors["bulk-decision"] = (
                f"{len(missing)} of the selected lines have no {basis} amount: accept them at their "
                f"{'claimed' if basis == 'expected' else 'expected'} amount or decide them one by one"
            )
    if errors:
        return await _invoice_page(
            request, person, invoice_id, view, errors=errors, values=values, status_code=422
        )
    reason = _decision_reason(reason_code, note)
    groups, singles = _plan(checked, [by_ref[r] for r in by_ref])
    decided = 0
    try:
        for code in groups:
            body: dict[str, Any] = {"reason_code": code, "decision": verb}
            if basis is not None:
                body["amount"] = basis
            if reason is not None:
                body["reason"] = reason
            done = await api.post(person, f"/v1/invoices/{invoice_id}/queries/decision", body)
            decided += int(done.get("lines") or 0)
        for ref in singles:
            one: dict[str, Any] = {"decision": verb}
            if basis is not None:
                one["amount"] = by_ref[ref][f"{basis}_amount"]
            if reason is not None:
                one["reason"] = reason
            await api.post(person, f"/v1/invoices/{invoice_id}/lines/{_segment(ref)}/decision", one)
            decided += 1
    except ApiProblem as problem:
        if problem.status not in (404, 409, 422):
            raise
        errors = _field_errors(problem, {"reason": ("bulk-note", "The reason and note")}, "bulk-lines")
        if decided:
            first = next(iter(errors))
            errors[first] = f"{decided} line(s) were decided before this: {errors[first]}"
        return await _invoice_page(
            request, person, invoice_id, view, errors=errors, values=values, status_code=422
        )
    flash(request, f"{decided} line(s) {'accepted' if verb == 'accept' else 'rejected'}")
    return RedirectResponse(_back(invoice_id, view), status_code=303)


@router.post("/invoices/{invoice_id}/approve")
async def approve(request: Request, invoice_id: str, person: StaffUser) -> Response:
    """Approve the invoice once every query line is decided; the API's refusal says what is left."""
    if not _is_invoice_id(invoice_id):
        return _not_found(request)
    api = cef_api(request)
    try:
        approved = await api.post(person, f"/v1/invoices/{invoice_id}/approve")
    except ApiProblem as problem:
        if problem.status not in (409, 422):
            raise
        return await _invoice_page(
            request,
            person,
            invoice_id,
            View(),
            errors={"approve": sentence(problem.detail)},
            status_code=422,
        )
    flash(
        request,
        f"Invoice {safe_text(approved.get('invoice_number'))} approved: "
        f"{_money(approved.get('approved_amount'))} to pay",
    )
    return RedirectResponse(f"/staff/invoices/{invoice_id}", status_code=303)


# --- re-identifying one line's patient ------------------------------------------------------------


async def _purpose_page(
    request: Request,
    person: StaffUser,
    invoice_id: str,
    line_ref: str,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    invoice = await cef_api(request).get(person, f"/v1/invoices/{invoice_id}")
    return render(
        request,
        "staff/reidentify.html",
        status_code=status_code,
        title="Why you need this patient's identity",
        invoice=invoice,
        line_ref=line_ref,
        purposes=PURPOSES,
        errors=errors or {},
        values=values or {},
    )


@router.post("/invoices/{invoice_id}/reidentify")
async def reidentify(
    request: Request,
    invoice_id: str,
    person: StaffUser,
    line_ref: Annotated[str, Form()] = "",
) -> Response:
    """Asks why the patient of one line must be re-identified (nothing is re-identified yet)."""
    if not _is_invoice_id(invoice_id):
        return _not_found(request)
    if not line_ref:
        return error_page(request, 400, "Choose the line from the invoice's query lines.")
    return await _purpose_page(request, person, invoice_id, line_ref)


@router.post("/invoices/{invoice_id}/reidentify/confirm")
async def reidentify_confirm(
    request: Request,
    invoice_id: str,
    person: StaffUser,
    line_ref: Annotated[str, Form()] = "",
    purpose: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Re-identifies the line's patient through the CEF API (audited there, with the purpose and the
    reason) and shows the identifiers once."""
    if not _is_invoice_id(invoice_id):
        return _not_found(request)
    if not line_ref:
        return error_page(request, 400, "Choose the line from the invoice's query lines.")
    reason = reason.strip()
    values = {"purpose": purpose, "reason": _echo(reason)}
    errors: dict[str, str] = {}
    if purpose not in PURPOSES:
        errors["purpose"] = "Select why you need the patient's identity"
    if not reason:
        errors["reason"] = "Enter what you need the patient's identity for"
    elif len(reason) < REIDENTIFY_REASON_MIN:
        errors["reason"] = (
            f"What you need the identity for must be at least {REIDENTIFY_REASON_MIN} characters"
        )
    elif len(reason) > REIDENTIFY_REASON_MAX:
        errors["reason"] = (
            f"What you need the identity for must be {REIDENTIFY_REASON_MAX} characters or fewer"
        )
    if errors:
        return await _purpose_page(
            request, person, invoice_id, line_ref, errors=errors, values=values, status_code=422
        )
    api = cef_api(request)
    try:
        response = await api.request(
            person,
            "POST",
            f"/v1/invoices/{invoice_id}/lines/{_segment(line_ref)}/reidentify",
            json={"purpose": purpose, "reason": reason},
        )
    except ApiProblem as problem:
        if problem.status not in (404, 409, 410, 422, 429):
            raise
        errors = _field_errors(
            problem,
            {
                "reason": ("reason", "What you need the identity for"),
                "purpose": ("purpose", "The purpose"),
            },
            "reason",
        )
        return await _purpose_page(
            request, person, invoice_id, line_ref, errors=errors, values=values, status_code=422
        )
    found: dict[str, Any] = response.json()
    page = render(
        request,
        "staff/reidentified.html",
        title="Patient details",
        invoice_id=invoice_id,
        line_ref=found.get("line_ref") or line_ref,
        purpose=PURPOSES.get(str(found.get("purpose")), purpose),
        patient=found,
    )
    # The app answers every page so; this one must never be kept, whatever changes there.
    page.headers["Cache-Control"] = "no-store"
    page.headers["Pragma"] = "no-cache"
    return page
