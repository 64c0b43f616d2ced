"""The provider pages: a trust's finance officer submits invoices, follows their validation, reads
each line's outcome and answers the commissioner's challenges.

Every call goes to the CEF API as the signed-in person, whose token names their trust: the API
answers with that trust's invoices only, and answers another trust's invoice as one that does not
exist. Nothing identifying goes in an address: line references, messages and amounts travel in
POST bodies; addresses hold invoice ids (UUIDs), outcome and reason codes, and opaque cursors."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.datastructures import FormData, UploadFile
from starlette.responses import RedirectResponse, Response

from cef_common.redact import identifiers_in, identifiers_in_free_text
from cef_web.api import ApiProblem, ServiceClient, Unavailable, cef_api, download
from cef_web.auth import Person, ProviderUser
from cef_web.errors import error_page
from cef_web.templating import flash, pennies_of, pounds, render, safe_text

router = APIRouter(prefix="/provider")

# Rows of a table page; the API's cursors carry on from the last row shown.
PAGE_INVOICES = 25
PAGE_LINES = 50
PAGE_CHALLENGES = 20
# The reasons chart counts the reasons of every line that is not valid (valid lines carry none),
# read in the API's largest pages, up to this many lines: beyond it the page says what it counted.
REASON_PAGE = 5000
REASON_LINES_CAP = 100_000
# A reason filter is applied here (the API filters lines by outcome only): API pages are read until a
# page of the table is full, up to this many of them per request, then "Next" carries on.
REASON_SCAN_PAGES = 20

OUTCOMES = ("valid", "query", "rejected")
VALIDATING = ("received", "validating")
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
CODE = re.compile(r"^[A-Z0-9]{3,10}$")
REASON_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,63}$")
AMOUNT = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,2})?$")
DATE_FIELDS = {
    "invoice_date": "Invoice date",
    "period_start": "Start of the period",
    "period_end": "End of the period",
}

STATUS_COLOURS = {
    "received": "blue",
    "validating": "blue",
    "validated": "aqua-green",
    "approved": "green",
    "part-approved": "green",
    "part-paid": "purple",
    "paid": "green",
    "rejected": "red",
    "failed": "red",
    "withdrawn": "grey",
}
OUTCOME_COLOURS = {"valid": "green", "query": "yellow", "rejected": "red"}


def money(amount: Any) -> str:
    """An amount as the API answers it (pounds, '1510.38') as the pages show money: '£1,510.38'."""
    pennies = pennies_of(amount)
    if pennies is None:
        return "" if amount is None else str(amount)
    return pounds(pennies)


def status_tag(status: str) -> dict[str, str]:
    """An invoice's status as an NHS.UK tag: its words and colour."""
    return {
        "text": status.replace("-", " ").capitalize(),
        "classes": f"nhsuk-tag--{STATUS_COLOURS.get(status, 'grey')}",
    }


def outcome_tag(outcome: str) -> dict[str, str]:
    return {"text": outcome.capitalize(), "classes": f"nhsuk-tag--{OUTCOME_COLOURS.get(outcome, 'grey')}"}


def _helpers() -> dict[str, Any]:
    """What every provider template uses to show the API's values."""
    return {"money": money, "status_tag": status_tag, "outcome_tag": outcome_tag}


def _href(path: str, **params: str | None) -> str:
    """A page's own address with its filters and cursor (codes and opaque cursors only)."""
    query = {k: v for k, v in params.items() if v}
    return f"{path}?{urlencode(query)}" if query else path


def _bad_cursor(request: Request, problem: ApiProblem) -> Response:
    """A cursor the API did not take (edited, or from an older page): say so, and start again."""
    if problem.status == 400:
        return error_page(
            request, 400, "this page of the list is no longer available: go back to its first page"
        )
    raise problem


# --- the list of invoices --------------------------------------------------------------------------


@router.get("/invoices")
async def invoices(request: Request, person: ProviderUser, cursor: str | None = None) -> Response:
    api = cef_api(request)
    try:
        page = await api.get(person, "/v1/invoices", limit=PAGE_INVOICES, cursor=cursor)
    except ApiProblem as problem:
        return _bad_cursor(request, problem)
    return render(
        request,
        "provider/invoices.html",
        title="Your invoices",
        invoices=page["items"],
        previous_href="/provider/invoices" if cursor else None,
        next_href=_href("/provider/invoices", cursor=page.get("next_cursor"))
        if page.get("next_cursor")
        else None,
        **_helpers(),
    )


# --- submitting an invoice -------------------------------------------------------------------------


@dataclass
class Submission:
    """What the submission form holds: the typed values (kept when refused) and what to fix."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    header: dict[str, str] = field(default_factory=dict)
    upload: UploadFile | None = None


def _typed_date(form: FormData, name: str) -> dict[str, str]:
    return {part: str(form.get(f"{name}[{part}]") or "").strip() for part in ("day", "month", "year")}


def _date_of(typed: Mapping[str, str]) -> date | None:
    try:
        return date(int(typed["year"]), int(typed["month"]), int(typed["day"]))
    except (KeyError, ValueError):
        return None


def read_submission(form: FormData, person: Person) -> Submission:
    """The submission form checked as far as the web app can (the API checks the rest): the typed
    values, the errors keyed by field id, and the invoice's JSON header when there are none."""
    sub = Submission()
    number = " ".join(str(form.get("invoice_number") or "").split())
    commissioner = str(form.get("commissioner_code") or "").strip().upper()
    sub.values = {"invoice_number": number, "commissioner_code": commissioner}
    if not number:
        sub.errors["invoice_number"] = "Enter the invoice number, your own reference such as RTR-201904-0001"
    elif len(number) > 64:
        sub.errors["invoice_number"] = "The invoice number must be 64 characters or fewer"
    elif identifiers_in(number):
        sub.errors["invoice_number"] = (
            "The invoice number must not hold an NHS number, a date or a postcode: use your own reference"
        )
    if not commissioner:
        sub.errors["commissioner_code"] = "Enter the commissioner's code, such as 00C"
    elif not CODE.match(commissioner):
        sub.errors["commissioner_code"] = "The commissioner's code must be 3 to 10 letters and numbers"
    dates: dict[str, date] = {}
    for name, label in DATE_FIELDS.items():
        typed = _typed_date(form, name)
        sub.values[name] = typed
        if not any(typed.values()):
            sub.errors[f"{name}-day"] = f"Enter the {label.lower()}"
            continue
        found = _date_of(typed)
        if found is None:
            sub.errors[f"{name}-day"] = f"{label} must be a real date, such as 30 4 2019"
        else:
            dates[name] = found
    if "period_start" in dates and "period_end" in dates and dates["period_end"] < dates["period_start"]:
        sub.errors["period_end-day"] = "The end of the period must be the same as or after its start"
    upload = form.get("backing_data")
    if not isinstance(upload, UploadFile) or not upload.filename or upload.size == 0:
        sub.errors["backing_data"] = "Choose the backing data file (CSV) of the invoice"
    else:
        sub.upload = upload
    if not sub.errors:
        sub.header = {
            "invoice_number": number,
            "provider_code": person.org or "",
            "commissioner_code": commissioner,
            **{name: dates[name].isoformat() for name in DATE_FIELDS},
        }
    return sub


# Where the API's refusal of a header field is shown on the form.
API_FIELDS = {
    "invoice_number": "invoice_number",
    "commissioner_code": "commissioner_code",
    "invoice_date": "invoice_date-day",
    "period_start": "period_start-day",
    "period_end": "period_end-day",
}


def refusal_errors(problem: ApiProblem) -> dict[str, str]:
    """The API's refusal of a submission as the form's errors: on the field it names, else on the
    file (the backing data, or the whole submission)."""
    detail = problem.detail
    if problem.code == "duplicate-invoice":
        return {"invoice_number": f"{detail[:1].upper()}{detail[1:]}"}
    errors: dict[str, str] = {}
    for error in problem.errors:
        where = API_FIELDS.get(str(error.get("field", "")).split(".")[-1])
        if where and where not in errors:
            errors[where] = f"{detail[:1].upper()}{detail[1:]}" if not errors else str(error.get("message"))
    if not errors:
        errors["backing_data"] = f"{detail[:1].upper()}{detail[1:]}"
    return errors


def _submit_form(request: Request, sub: Submission, status_code: int = 200) -> Response:
    return render(
        request,
        "provider/submit.html",
        status_code=status_code,
        title="Submit an invoice",
        values=sub.values,
        errors=sub.errors,
        date_fields=DATE_FIELDS,
        refused=status_code != 200,
    )


@router.get("/invoices/new")
async def submit_page(request: Request, person: ProviderUser) -> Response:
    return _submit_form(request, Submission())


@router.post("/invoices")
async def submit(request: Request, person: ProviderUser) -> Response:
    form = await request.form()
    sub = read_submission(form, person)
    if sub.errors or sub.upload is None:
        return _submit_form(request, sub, 422)
    api = cef_api(request)
    upload = sub.upload
    await upload.seek(0)
    files = {
        "invoice": ("invoice.json", json.dumps(sub.header).encode(), "application/json"),
        # The file as the browser sent it (spooled to disk by the form parser), streamed on.
        "backing_data": (upload.filename or "backing.csv", upload.file, "text/csv"),
    }
    try:
        response = await api.request(person, "POST", "/v1/invoices", files=files, ok=(201, 202))
    except Unavailable:
        raise
    except ApiProblem as problem:
        if problem.status not in (400, 403, 409, 413, 422):
            raise
        sub.errors = refusal_errors(problem)
        return _submit_form(request, sub, 422)
    invoice = response.json()
    if response.status_code == 202:
        flash(request, "Invoice received: it is being checked, which can take a few minutes for a large file")
    else:
        flash(request, f"Invoice submitted: {invoice['summary']['lines']:,} lines checked")
    return RedirectResponse(f"/provider/invoices/{invoice['id']}", status_code=303)


# --- one invoice -----------------------------------------------------------------------------------


@dataclass
class ReasonCounts:
    """How many lines carry each reason, over every line that is not valid (up to the cap)."""

    counts: Counter[str] = field(default_factory=Counter)
    explained: dict[str, dict[str, str]] = field(default_factory=dict)
    lines_read: int = 0
    complete: bool = True


async def count_reasons(api: ServiceClient, person: Person, invoice_id: str) -> ReasonCounts:
    found = ReasonCounts()
    for outcome in ("query", "rejected"):
        cursor: str | None = None
        while True:
            if found.lines_read >= REASON_LINES_CAP:
                found.complete = False
                return found
            page = await api.get(
                person,
                f"/v1/invoices/{invoice_id}/lines",
                outcome=outcome,
                limit=REASON_PAGE,
                cursor=cursor,
            )
            for line in page["items"]:
                found.counts.update(line["reasons"])
            found.lines_read += len(page["items"])
            for reason in page.get("reasons_explained") or []:
                found.explained.setdefault(reason["code"], reason)
            cursor = page.get("next_cursor")
            if not cursor:
                break
    return found


async def lines_page(
    api: ServiceClient,
    person: Person,
    invoice_id: str,
    *,
    outcome: str | None,
    reason: str | None,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the lines table and the cursor of the next. With a reason, whole API pages are
    read and filtered here until the table has a page of lines, so no line is ever skipped."""
    path = f"/v1/invoices/{invoice_id}/lines"
    if not reason:
        page = await api.get(person, path, outcome=outcome, limit=PAGE_LINES, cursor=cursor)
        return page["items"], page.get("next_cursor")
    rows: list[dict[str, Any]] = []
    for _ in range(REASON_SCAN_PAGES):
        page = await api.get(person, path, outcome=outcome, limit=PAGE_LINES, cursor=cursor)
        rows += [line for line in page["items"] if reason in line["reasons"]]
        cursor = page.get("next_cursor")
        if not cursor or len(rows) >= PAGE_LINES:
            break
    return rows, cursor


def _invoice_id(invoice_id: str) -> str | None:
    return invoice_id.lower() if UUID.match(invoice_id) else None


def _not_found(request: Request) -> Response:
    return error_page(request, 404, "there is no invoice of yours at this address: check it is correct")


@router.get("/invoices/{invoice_id}")
async def invoice_page(
    request: Request,
    invoice_id: str,
    person: ProviderUser,
    outcome: str | None = None,
    reason: str | None = None,
    cursor: str | None = None,
) -> Response:
    found = _invoice_id(invoice_id)
    if found is None:
        return _not_found(request)
    api = cef_api(request)
    invoice = await api.get(person, f"/v1/invoices/{found}")
    context: dict[str, Any] = {"invoice": invoice, **_helpers()}
    # The number is the provider's own text: withheld from the title should it look like an identifier.
    title = f"Invoice {safe_text(invoice['invoice_number'])}"
    if invoice["status"] in VALIDATING or invoice["status"] == "failed":
        response = render(request, "provider/invoice.html", title=title, **context)
        if invoice["status"] in VALIDATING:
            # A browser without script reloads the page until validation ends (the page's meta says
            # the same for those that read it there).
            response.headers["Refresh"] = "5"
        return response
    reasons = await count_reasons(api, person, found)
    chosen_outcome = outcome if outcome in OUTCOMES else None
    # Only a code that is on this invoice can be chosen: the select offers no other.
    chosen_reason = reason if reason and REASON_CODE.match(reason) and reason in reasons.counts else None
    try:
        rows, next_cursor = await lines_page(
            api, person, found, outcome=chosen_outcome, reason=chosen_reason, cursor=cursor
        )
    except ApiProblem as problem:
        return _bad_cursor(request, problem)
    here = f"/provider/invoices/{found}"
    summary = invoice["summary"]
    return render(
        request,
        "provider/invoice.html",
        title=title,
        outcome_rows=[
            ("Valid", summary["valid"]),
            ("Query", summary["query"]),
            ("Rejected", summary["rejected"]),
        ],
        reason_rows=reasons.counts.most_common(),
        reasons_explained=[
            reasons.explained[c] for c, _ in reasons.counts.most_common() if c in reasons.explained
        ],
        reasons_complete=reasons.complete,
        reasons_lines_read=reasons.lines_read,
        lines=rows,
        outcome=chosen_outcome,
        reason=chosen_reason,
        outcomes=OUTCOMES,
        filtered=bool(chosen_outcome or chosen_reason),
        previous_href=_href(here, outcome=chosen_outcome, reason=chosen_reason) if cursor else None,
        next_href=_href(here, outcome=chosen_outcome, reason=chosen_reason, cursor=next_cursor)
        if next_cursor
        else None,
        csv_href=_href(f"{here}/lines.csv", outcome=chosen_outcome),
        can_withdraw=invoice["status"] == "validated",
        withdraw_errors={},
        withdraw_values={},
        **context,
    )


@router.get("/invoices/{invoice_id}/lines.csv")
async def lines_csv(
    request: Request, invoice_id: str, person: ProviderUser, outcome: str | None = None
) -> Response:
    found = _invoice_id(invoice_id)
    if found is None:
        return _not_found(request)
    return await download(
        cef_api(request),
        person,
        f"/v1/invoices/{found}/lines",
        {"outcome": outcome if outcome in OUTCOMES else None},
        filename="invoice-lines.csv",
    )


@router.post("/invoices/{invoice_id}/withdraw")
async def withdraw(request: Request, invoice_id: str, person: ProviderUser) -> Response:
    found = _invoice_id(invoice_id)
    if found is None:
        return _not_found(request)
    form = await request.form()
    confirmed = form.get("confirm") == "yes"
    why = " ".join(str(form.get("withdraw_reason") or "").split())
    errors: dict[str, str] = {}
    if not confirmed:
        errors["confirm"] = "Confirm that you want to withdraw this invoice"
    if len(why) > 500:
        errors["withdraw_reason"] = "The reason must be 500 characters or fewer"
    elif identifiers_in_free_text(why):
        errors["withdraw_reason"] = "The reason must not hold an NHS number, a date or a postcode"
    api = cef_api(request)
    if not errors:
        try:
            await api.post(
                person, f"/v1/invoices/{found}/withdraw", {"reason": why} if why else {}, ok=(200,)
            )
        except ApiProblem as problem:
            if problem.status not in (409, 422):
                raise
            errors["confirm"] = f"{problem.detail[:1].upper()}{problem.detail[1:]}"
        else:
            flash(request, "Invoice withdrawn")
            return RedirectResponse(f"/provider/invoices/{found}", status_code=303)
    invoice = await api.get(person, f"/v1/invoices/{found}")
    return render(
        request,
        "provider/withdraw.html",
        status_code=422,
        title=f"Withdraw invoice {safe_text(invoice['invoice_number'])}",
        invoice=invoice,
        errors=errors,
        withdraw_errors=errors,
        withdraw_values={"withdraw_reason": why, "confirm": confirmed},
        **_helpers(),
    )


# --- challenges --------------------------------------------------------------------------------------


def read_response(form: FormData) -> tuple[str, dict[str, Any], dict[str, str], dict[str, Any]]:
    """The answer to one challenge: its id, what was typed, what to fix, and the API's body."""
    challenge_id = str(form.get("challenge_id") or "").strip().lower()
    message = str(form.get("message") or "").strip()
    typed_amount = str(form.get("corrected_amount") or "").strip()
    values = {"message": message, "corrected_amount": typed_amount}
    errors: dict[str, str] = {}
    ids = {"message": f"message-{challenge_id}", "corrected_amount": f"corrected_amount-{challenge_id}"}
    if not message:
        errors[ids["message"]] = "Enter your answer to the challenge"
    elif len(message) > 2000:
        errors[ids["message"]] = "Your answer must be 2,000 characters or fewer"
    elif identifiers_in_free_text(message):
        errors[ids["message"]] = (
            "Your answer must not hold an NHS number, a date or a postcode: "
            "refer to the line by its reference"
        )
    body: dict[str, Any] = {"message": message}
    if typed_amount:
        # Pounds as people write them: "£1,234.5" is 1234.50; the API takes pounds and pence.
        plain = typed_amount.replace("£", "").replace(",", "").strip()
        if not AMOUNT.match(plain):
            errors[ids["corrected_amount"]] = (
                "Enter the corrected amount in pounds and pence, such as 798.05, below £1,000,000,000"
            )
        else:
            body["corrected_amount"] = f"{Decimal(plain):.2f}"
    return challenge_id, values, errors, body


async def _challenges_page(
    request: Request,
    person: Person,
    *,
    cursor: str | None = None,
    answering: str | None = None,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    api = cef_api(request)
    try:
        page = await api.get(person, "/v1/challenges", status="open", limit=PAGE_CHALLENGES, cursor=cursor)
    except ApiProblem as problem:
        return _bad_cursor(request, problem)
    return render(
        request,
        "provider/challenges.html",
        status_code=status_code,
        title="Challenges to answer",
        challenges=page["items"],
        reasons_explained=page.get("reasons_explained") or [],
        answering=answering,
        values=values or {},
        errors=errors or {},
        previous_href="/provider/challenges" if cursor else None,
        next_href=_href("/provider/challenges", cursor=page.get("next_cursor"))
        if page.get("next_cursor")
        else None,
        **_helpers(),
    )


@router.get("/challenges")
async def challenges(request: Request, person: ProviderUser, cursor: str | None = None) -> Response:
    return await _challenges_page(request, person, cursor=cursor)


@router.post("/challenges/respond")
async def respond(request: Request, person: ProviderUser) -> Response:
    form = await request.form()
    challenge_id, values, errors, body = read_response(form)
    if not UUID.match(challenge_id):
        return error_page(request, 404, "there is no challenge of yours to answer with this form")
    if not errors:
        try:
            await cef_api(request).post(
                person, f"/v1/challenges/{challenge_id}/response", body, ok=(200, 201)
            )
        except ApiProblem as problem:
            if problem.status == 404:
                return error_page(request, 404, "there is no challenge of yours to answer with this form")
            if problem.status not in (400, 409, 422):
                raise
            detail = f"{problem.detail[:1].upper()}{problem.detail[1:]}"
            amount_refused = any("amount" in str(e.get("field", "")) for e in problem.errors)
            errors[f"{'corrected_amount' if amount_refused else 'message'}-{challenge_id}"] = detail
        else:
            flash(request, "Response sent")
            return RedirectResponse("/provider/challenges", status_code=303)
    return await _challenges_page(
        request, person, answering=challenge_id, values=values, errors=errors, status_code=422
    )
