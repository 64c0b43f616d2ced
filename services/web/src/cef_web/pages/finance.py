"""The finance pages: the commissioner's invoices approved to pay, those paid, recording a payment,
and the approved-to-pay list as CSV for the ledger.

Finance holds invoices:read of its commissioner: the API gives it invoice amounts and payments,
never lines or patients, so these pages show amounts only."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime
from typing import Any, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from cef_web.api import ApiProblem, cef_api, download
from cef_web.auth import FinanceUser, Person
from cef_web.templating import flash, pennies_of, pounds, render, sentence

router = APIRouter(prefix="/finance")

PAGE_SIZE: Final = 50
# Statuses with money approved and (possibly) still to pay: the API's approved-to-pay list.
PAYABLE: Final = ("approved", "part-approved", "part-paid")
# Pounds as a person types them: optional £, thousands commas in their places, at most 2 decimals.
POUNDS: Final = re.compile(r"^£?\s*(?P<whole>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.(?P<part>[0-9]{1,2}))?$")
# The API's payment amounts: at most 9 digits of pounds.
MAX_WHOLE_POUNDS: Final = 999_999_999
# The ledger's payment reference, as the API takes it (PaymentReference in cef_api).
REFERENCE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 /._-]{0,63}$")
# The date input's first box: where the error summary leads for the payment's date.
DATE_FIELD: Final = "paid_on-day"
# API refusal codes and the form field each one is about.
FIELD_OF_CODE: Final = {
    "payment-exceeds-unpaid": "amount",
    "payment-amount-invalid": "amount",
    "amount-too-large": "amount",
    "payment-date-invalid": DATE_FIELD,
    "reference-contains-identifier": "reference",
    "payment-reference-reused": "reference",
}
# The API's names of the payment's fields and the page's field ids.
FORM_FIELDS: Final = {"amount": "amount", "reference": "reference", "paid_on": DATE_FIELD}


def parse_pounds(typed: str) -> tuple[int | None, str | None]:
    """Pennies of an amount typed in pounds, or why it is not one (a sentence for the error summary)."""
    text = typed.strip()
    if not text:
        return None, "Enter the amount paid, in pounds, for example 1006.92"
    found = POUNDS.match(text)
    if found is None:
        return None, "Enter the amount in pounds and pence with at most 2 decimal places, for example 1006.92"
    whole = int(found["whole"].replace(",", ""))
    part = int((found["part"] or "0").ljust(2, "0"))
    if whole > MAX_WHOLE_POUNDS:
        return None, "The amount must be less than £1,000,000,000"
    amount = whole * 100 + part
    if amount <= 0:
        return None, "The amount must be more than £0.00"
    return amount, None


def parse_day(day: str, month: str, year: str, today: date) -> tuple[date | None, str | None]:
    """The payment's date from the three boxes of the date input, or why it is not a date."""
    parts = [day.strip(), month.strip(), year.strip()]
    if not all(parts):
        return None, "Enter the date the payment was made, with a day, a month and a year"
    if not all(p.isascii() and p.isdigit() for p in parts) or len(parts[2]) != 4:
        return None, "The date the payment was made must be a real date, for example 30 6 2019"
    try:
        paid_on = date(int(parts[2]), int(parts[1]), int(parts[0]))
    except ValueError:
        return None, "The date the payment was made must be a real date, for example 30 6 2019"
    if paid_on > today:
        return None, "The date the payment was made must be today or in the past"
    return paid_on, None


def invoice_path(invoice_id: str) -> str:
    """The API path of an invoice named in a page's path: only a UUID is passed on (404 otherwise)."""
    try:
        return f"/v1/invoices/{uuid.UUID(invoice_id)}"
    except ValueError:
        raise ApiProblem(
            status=404, code="not-found", title="Not found", detail="there is no such invoice"
        ) from None


def _page_links(request: Request, next_cursor: str | None) -> tuple[str | None, str | None]:
    """Links to the first page (from a later one) and to the next: cursors are opaque and only
    move forward, so "previous" goes back to the start."""
    here = request.url.path
    previous = here if request.query_params.get("cursor") else None
    following = f"{here}?{urlencode({'cursor': next_cursor})}" if next_cursor else None
    return previous, following


async def _list_page(request: Request, person: Person, path: str, **params: Any) -> dict[str, Any] | None:
    """A page of an API list; None when the page's cursor is refused (an old or edited link), so the
    caller starts again from the first page."""
    try:
        page: dict[str, Any] = await cef_api(request).get(person, path, limit=PAGE_SIZE, **params)
    except ApiProblem as problem:
        if problem.status == 400 and params.get("cursor"):
            return None
        raise
    return page


@router.get("/approved")
async def approved(request: Request, person: FinanceUser, cursor: str | None = None) -> Response:
    """Finance's home: the invoices approved and not yet paid in full, with what is left to pay."""
    page = await _list_page(request, person, "/v1/invoices/approved-to-pay", cursor=cursor)
    if page is None:
        return RedirectResponse(request.url.path, status_code=303)
    items = [
        {
            **item,
            "approved": pennies_of(item.get("approved_amount")),
            "paid": pennies_of(item.get("paid_amount")),
            "unpaid": pennies_of(item.get("unpaid_amount")),
        }
        for item in page.get("items") or []
    ]
    previous_href, next_href = _page_links(request, page.get("next_cursor"))
    return render(
        request,
        "finance/approved.html",
        title="Invoices approved to pay",
        items=items,
        total_approved=pennies_of(page.get("total_approved_amount")),
        total_unpaid=pennies_of(page.get("total_unpaid_amount")),
        previous_href=previous_href,
        next_href=next_href,
        tab="approved",
    )


@router.get("/paid")
async def paid(request: Request, person: FinanceUser, cursor: str | None = None) -> Response:
    """The commissioner's invoices paid in full (the API's invoice list, filtered by status)."""
    page = await _list_page(request, person, "/v1/invoices", status="paid", cursor=cursor)
    if page is None:
        return RedirectResponse(request.url.path, status_code=303)
    items = [
        {
            **item,
            "approved": pennies_of(item.get("approved_amount")),
            "paid": pennies_of(item.get("paid_amount")),
        }
        for item in page.get("items") or []
    ]
    previous_href, next_href = _page_links(request, page.get("next_cursor"))
    return render(
        request,
        "finance/paid.html",
        title="Invoices paid",
        items=items,
        previous_href=previous_href,
        next_href=next_href,
        tab="paid",
    )


@router.get("/approved.csv")
async def approved_csv(request: Request, person: FinanceUser) -> Response:
    """Every invoice approved to pay as one CSV download for the ledger, streamed from the API."""
    # The API names the file; the fallback names the commissioner and the day, nothing more.
    return await download(
        cef_api(request),
        person,
        "/v1/invoices/approved-to-pay",
        filename=f"approved-to-pay-{person.org or 'commissioner'}-{date.today()}.csv",
    )


async def _invoice_page(
    request: Request,
    person: Person,
    invoice_id: str,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    """The invoice's amounts, its payments so far and (while money is left to pay) the payment form."""
    client = cef_api(request)
    path = invoice_path(invoice_id)
    invoice = await client.get(person, path)
    payments = (await client.get(person, f"{path}/payments")).get("items") or []
    approved = pennies_of(invoice.get("approved_amount")) or 0
    paid_so_far = pennies_of(invoice.get("paid_amount")) or 0
    today = datetime.now(UTC).date()
    shown = values or {
        "amount": f"{(approved - paid_so_far) / 100:.2f}" if approved > paid_so_far else "",
        "reference": "",
        "day": str(today.day),
        "month": str(today.month),
        "year": str(today.year),
    }
    return render(
        request,
        "finance/invoice.html",
        status_code=status_code,
        title=f"Invoice {invoice['invoice_number']}",
        invoice=invoice,
        approved=approved,
        paid=paid_so_far,
        unpaid=approved - paid_so_far,
        payable=invoice.get("status") in PAYABLE and approved > paid_so_far,
        payments=[{**p, "amount_pennies": pennies_of(p.get("amount"))} for p in payments],
        values=shown,
        errors=errors or {},
    )


@router.get("/invoices/{invoice_id}")
async def invoice(request: Request, person: FinanceUser, invoice_id: str) -> Response:
    return await _invoice_page(request, person, invoice_id)


def _api_errors(problem: ApiProblem) -> dict[str, str]:
    """The API's refusal of a payment, on the field it is about (the form as a whole otherwise)."""
    errors: dict[str, str] = {}
    for error in problem.errors:
        field = FORM_FIELDS.get(str(error.get("field", "")).rsplit(".", 1)[-1])
        if field is not None and field not in errors:
            errors[field] = sentence(str(error.get("message", "")) or problem.detail)
    field = FIELD_OF_CODE.get(problem.code)
    if field is not None:
        errors.setdefault(field, sentence(problem.detail))
    if not errors:
        errors["payment"] = sentence(problem.detail)
    return errors


@router.post("/invoices/{invoice_id}/payments")
async def record_payment(request: Request, person: FinanceUser, invoice_id: str) -> Response:
    """Records a payment through the API; refusals (ours and the API's) re-show the form as typed."""
    form = await request.form()
    values = {
        "amount": str(form.get("amount") or ""),
        "reference": str(form.get("reference") or "").strip(),
        "day": str(form.get("paid_on[day]") or ""),
        "month": str(form.get("paid_on[month]") or ""),
        "year": str(form.get("paid_on[year]") or ""),
    }
    path = invoice_path(invoice_id)
    errors: dict[str, str] = {}
    amount, amount_error = parse_pounds(values["amount"])
    if amount_error:
        errors["amount"] = amount_error
    if not values["reference"]:
        errors["reference"] = "Enter the ledger's payment reference, for example BACS-2019-0001"
    elif not REFERENCE.match(values["reference"]):
        errors["reference"] = (
            "The payment reference must start with a letter or a number and use only letters, numbers, "
            "spaces and / . _ - (at most 64 characters)"
        )
    paid_on, day_error = parse_day(values["day"], values["month"], values["year"], datetime.now(UTC).date())
    if day_error:
        errors[DATE_FIELD] = day_error
    if errors or amount is None or paid_on is None:
        return await _invoice_page(request, person, invoice_id, values=values, errors=errors, status_code=422)
    body = {"amount": f"{amount / 100:.2f}", "reference": values["reference"], "paid_on": paid_on.isoformat()}
    try:
        response = await cef_api(request).request(
            person, "POST", f"{path}/payments", json=body, ok=(200, 201)
        )
    except ApiProblem as problem:
        if problem.status not in (409, 422):
            raise
        return await _invoice_page(
            request, person, invoice_id, values=values, errors=_api_errors(problem), status_code=422
        )
    if response.headers.get("Idempotent-Replayed") == "true":
        flash(request, f"Payment of {pounds(amount)} was recorded before under this reference: nothing new")
    else:
        flash(request, f"Payment of {pounds(amount)} recorded")
    return RedirectResponse(f"/finance/invoices/{uuid.UUID(invoice_id)}", status_code=303)
