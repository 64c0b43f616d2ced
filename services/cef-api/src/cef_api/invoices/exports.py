"""CSV exports of an invoice's lines and of the approved-to-pay list (`Accept: text/csv`).

Streamed: rows are read in keyset pages (line_no, invoice seq), each page in a session of its
own, and encoded a chunk at a time, so a million-line invoice is never in memory whole. Who may
export is decided, and a staff export audited and committed, before the first byte leaves."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session

from cef_api.invoices import repository, service
from cef_api.invoices.audit import record_invoice_event
from cef_api.invoices.exceptions import InvoiceNotReady
from cef_api.invoices.models import Invoice, InvoiceStatus
from cef_api.invoices.schemas import line_money
from cef_api.reasons.catalogue import CATALOGUE, explain
from cef_common.auth import Principal
from cef_common.csvout import csv_chunks, safe_filename
from cef_common.errors import Forbidden

# Rows read per page: a page of ORM lines is a few megabytes. Tests make them small to cross pages.
PAGE_LINES = 5000
PAGE_INVOICES = 500

PROVIDER_COLUMNS: Final = (
    "line_no",
    "line_ref",
    "outcome",
    "reasons",
    "explanation",
    "responsible_commissioner",
    "expected_amount",
)
STAFF_COLUMNS: Final = (
    *PROVIDER_COLUMNS,
    "patient_token",
    "activity_date",
    "hrg_code",
    "point_of_delivery",
    "service_code",
    "claimed_amount",
    "state",
    "decision",
    "decided_amount",
    "decision_reason",
)
APPROVED_COLUMNS: Final = (
    "provider_code",
    "invoice_number",
    "invoice_id",
    "period_start",
    "period_end",
    "status",
    "approved_amount",
    "paid_amount",
    "unpaid_amount",
    "ledger_reference",
)


@dataclass(frozen=True)
class Export:
    """A CSV answer decided on and ready to stream: its download name and its encoded chunks."""

    filename: str
    chunks: Iterator[bytes]


# --- lines ---------------------------------------------------------------------------------------------


def line_export(
    session: Session,
    *,
    engine: Engine,
    principal: Principal,
    invoice_id: str,
    outcome: str | None,
    page_size: int,
) -> Export:
    """Every line of the invoice (of one outcome, if given) as CSV: outcomes for its provider, the
    detail with patient tokens for its CEF staff. A staff export is one audit event with the number
    of lines, added to `session`: the caller commits it before streaming the chunks."""
    invoice, role = service.line_reader(session, principal=principal, invoice_id=invoice_id)
    service.check_outcome(outcome)
    if invoice.status in InvoiceStatus.OPEN:
        raise InvoiceNotReady(
            f"the invoice is {invoice.status}: its lines can be exported once it is validated; "
            f"poll GET /v1/invoices/{invoice.id} until its status is validated",
            extra={"state": invoice.status},
            refusal=True,
        )
    assert invoice.seq is not None
    staff = role is service.Role.STAFF
    if staff:
        record_invoice_event(
            session,
            action="read",
            type="invoice.lines.export",
            principal=principal,
            entity_id=invoice.id,
            count=_line_count(invoice, outcome),
            detail={"with": "patient_token", **({"outcome": outcome} if outcome else {})},
        )
    rows = _line_rows(engine, seq=invoice.seq, outcome=outcome, staff=staff, page_size=page_size)
    return Export(
        filename=safe_filename(f"{invoice.invoice_number}-lines", "csv", fallback="invoice-lines"),
        chunks=csv_chunks(STAFF_COLUMNS if staff else PROVIDER_COLUMNS, rows),
    )


def _line_count(invoice: Invoice, outcome: str | None) -> int:
    """The lines an export of a validated invoice sends: its summary's counts are those of its rows
    (they are written with the last batch, and a failed invoice keeps neither)."""
    counts = {"valid": invoice.valid, "query": invoice.query, "rejected": invoice.rejected}
    return invoice.lines if outcome is None else counts[outcome]


def _line_pages(
    engine: Engine, *, seq: int, outcome: str | None, page_size: int
) -> Iterator[list[sa.Row[Any]]]:
    """The invoice's lines in line_no order, a page at a time, each read in a session of its own (no
    transaction stays open while the client reads)."""
    after: int | None = None
    while True:
        with Session(engine) as session:
            page = repository.page_line_rows(
                session, seq=seq, outcome=outcome, after_line_no=after, limit=page_size
            )
        if page:
            yield page
        if len(page) < page_size:
            return
        after = page[-1].line_no


def _line_rows(
    engine: Engine, *, seq: int, outcome: str | None, staff: bool, page_size: int
) -> Iterator[tuple[Any, ...]]:
    explanations: dict[str, str] = {}  # a few dozen combinations of reasons repeat on every page

    def explanation(reasons: str) -> str:
        said = explanations.get(reasons)
        if said is None:
            said = explanations[reasons] = " ".join(
                e.summary for e in explain(reasons.split(";") if reasons else [])
            )
        return said

    for page in _line_pages(engine, seq=seq, outcome=outcome, page_size=page_size):
        for line in page:
            row: tuple[Any, ...] = (
                line.line_no,
                line.line_ref,
                line.outcome,
                line.reasons,  # already ";"-joined and sorted, each code whole
                explanation(line.reasons),
                line.responsible_commissioner,
                line_money(line.expected_pennies),
            )
            if staff:
                row += (
                    line.nhs_token,
                    line.activity_date,
                    line.hrg_code,
                    line.point_of_delivery,
                    line.service_code,
                    line_money(line.claimed_pennies),
                    service.query_state(line),
                    line.decision,
                    line_money(line.decided_pennies),
                    line.decision_reason,
                )
            yield row


# --- approved to pay -----------------------------------------------------------------------------------


def approved_export(*, engine: Engine, principal: Principal, page_size: int) -> Export:
    """Every invoice of the caller's commissioner that has money to pay, as CSV (all pages)."""
    org = (principal.org or "").upper()
    if not org:
        raise Forbidden("the token names no organisation (org claim)", code="no-organisation")
    today = datetime.now(UTC).date().isoformat()
    return Export(
        filename=safe_filename(f"approved-to-pay-{org}-{today}", "csv", fallback="approved-to-pay"),
        chunks=csv_chunks(APPROVED_COLUMNS, _approved_rows(engine, org=org, page_size=page_size)),
    )


def _approved_rows(engine: Engine, *, org: str, page_size: int) -> Iterator[tuple[Any, ...]]:
    after: int | None = None
    while True:
        with Session(engine) as session:
            page = repository.page_invoices(
                session,
                provider_code=None,
                commissioner_code=org,
                statuses=list(InvoiceStatus.PAYABLE),
                after_seq=after,
                limit=page_size,
            )
        for invoice in page:
            item = service.approved_item(invoice)
            yield (
                item.provider_code,
                item.invoice_number,
                item.id,
                item.period_start,
                item.period_end,
                item.status,
                item.approved_amount,
                item.paid_amount,
                item.unpaid_amount,
                item.ledger_reference,
            )
        if len(page) < page_size:
            return
        after = page[-1].seq


# --- the OpenAPI document's examples -------------------------------------------------------------------


def _example(columns: tuple[str, ...], row: tuple[Any, ...]) -> str:
    return b"".join(csv_chunks(columns, [row])).decode()


def _explained(code: str) -> str:
    return CATALOGUE[code].summary


LINES_CSV_EXAMPLE: Final = _example(
    PROVIDER_COLUMNS,
    (2, "00002", "query", "PRICE_MISMATCH", _explained("PRICE_MISMATCH"), "00L", "503.46"),
)
STAFF_LINES_CSV_EXAMPLE: Final = _example(
    STAFF_COLUMNS,
    (
        2,
        "00002",
        "query",
        "PRICE_MISMATCH",
        _explained("PRICE_MISMATCH"),
        "00L",
        "503.46",
        "N1.c3ludGhldGljLXRva2VuLTAx",
        "2019-04-02",
        "MH10C",
        "OPFA",
        None,
        "512.00",
        "challenged",
        None,
        None,
        None,
    ),
)
APPROVED_CSV_EXAMPLE: Final = _example(
    APPROVED_COLUMNS,
    (
        "RTR",
        "RTR-201904-0001",
        "0b9f7c1e-3d2a-4f5b-8c6d-7e8f9a0b1c2d",
        "2019-04-01",
        "2019-04-30",
        "part-approved",
        "1006.92",
        "0.00",
        "1006.92",
        "CEF-00L-00000042",
    ),
)
