"""HTTP endpoints of invoices: thin: parse, authorise, call the service, shape the response."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BeforeValidator
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from cef_api.invoices import exports, payments, reidentify, service
from cef_api.invoices.schemas import (
    ApprovedPage,
    DecisionIn,
    InvoiceHeaderIn,
    InvoiceOut,
    InvoicePage,
    InvoiceStatusName,
    LineDetailOut,
    LineDetailPage,
    LineOutcome,
    LinePage,
    PaymentIn,
    PaymentOut,
    PaymentPage,
    ReidentifiedOut,
    ReidentifyIn,
    WithdrawIn,
)
from cef_api.invoices.upload import receive_upload
from cef_common.auth import Principal, PrincipalDep, require_scopes
from cef_common.csvout import CSV_MEDIA_TYPE, attachment, wants_csv
from cef_common.db import SessionDep
from cef_common.openapi import problems, requires, schema_of

router = APIRouter(prefix="/v1", tags=["invoices"])

Submitter = Annotated[Principal, Depends(require_scopes(service.SUBMIT))]
Reader = Annotated[
    Principal, Depends(require_scopes(service.SUBMIT, service.VALIDATE, service.READ, any_of=True))
]
Staff = Annotated[Principal, Depends(require_scopes(service.VALIDATE))]
Commissioner = Annotated[Principal, Depends(require_scopes(service.VALIDATE, service.READ, any_of=True))]
Finance = Annotated[Principal, Depends(require_scopes(service.READ))]

_BAD_CURSOR = problems(
    400, described={400: "bad-cursor: pass the next_cursor of the previous page unchanged"}
)

_INVALID_TRANSITION = (
    "invalid-transition: the invoice's status does not allow this step (the detail names it; "
    "`state` and `allowed_from` say the same)"
)


# The body is read as a stream (upload.py) rather than by FastAPI, which is told its parts here.
_SUBMISSION_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["invoice", "backing_data"],
                    "properties": {
                        "invoice": schema_of(InvoiceHeaderIn),
                        "backing_data": {
                            "type": "string",
                            "format": "binary",
                            "contentMediaType": "text/csv",
                            "description": "The backing data: one line per activity, with a header row",
                        },
                    },
                },
                "encoding": {
                    "invoice": {"contentType": "application/json"},
                    "backing_data": {"contentType": "text/csv"},
                },
                "example": {
                    "invoice": {
                        "invoice_number": "RTR-201904-0001",
                        "provider_code": "RTR",
                        "commissioner_code": "00L",
                        "invoice_date": "2019-05-03",
                        "period_start": "2019-04-01",
                        "period_end": "2019-04-30",
                    },
                    # A number of the range reserved for tests: nobody's.
                    "backing_data": "service_code,discharge_date,activity_date,postcode,date_of_birth,"
                    "nhs_number,point_of_delivery,gp_practice_code,hrg_code,amount,line_ref\n"
                    ",,2019-04-09,,,9990000034,OPFA,A83034,MH10C,503.46,00001\n",
                },
            }
        },
    }
}
_LOCATION = {
    "Location": {"description": "the invoice: /v1/invoices/{id}", "schema": {"type": "string"}},
    "Idempotent-Replayed": {
        "description": "true when this answers an earlier request with the same Idempotency-Key",
        "schema": {"type": "string"},
    },
}


def _comma_separated(value: object) -> object:
    """`status=a,b` (as ever) as well as `status=a&status=b` (what generated clients send)."""
    if not isinstance(value, list):
        return value
    parts = [part.strip() for item in value for part in str(item).split(",")]
    return [part for part in parts if part]


StatusFilter = Annotated[
    list[InvoiceStatusName] | None,
    BeforeValidator(_comma_separated),
    Query(description="only invoices with one of these statuses: repeat it, or separate them by commas"),
]


@router.post(
    "/invoices",
    response_model=InvoiceOut,
    status_code=201,
    summary="Submit an invoice: multipart parts 'invoice' (JSON header) and 'backing_data' (CSV)",
    openapi_extra=_SUBMISSION_BODY,
    responses={
        201: {"description": "Stored and validated", "headers": _LOCATION},
        202: {
            "model": InvoiceOut,
            "description": "Accepted; validation continues in the background (see Location)",
            "headers": _LOCATION,
        },
        **problems(
            409,
            503,
            described={
                403: "the token lacks invoices:submit, or the header's provider_code is not its org",
                409: "duplicate-invoice: this invoice_number was submitted before; invoice-not-ready: too "
                "large for a service that validates nothing in the background",
                422: "the header, a part or the backing data is not valid (submission-invalid, "
                "invoice-header-invalid, idempotency-key-reused, ...): nothing was stored",
                503: "the tokeniser is unavailable: nothing of the invoice was stored, submit it again",
            },
        ),
    },
)
async def submit_invoice(
    request: Request,
    principal: Submitter,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> JSONResponse:
    app = request.app
    settings = app.state.settings
    upload = await receive_upload(
        request.stream(),
        content_type=request.headers.get("content-type"),
        spool_dir=settings.data_dir / "spool",
        cipher=app.state.spool_cipher,
    )
    handed_over = False
    try:
        result = await run_in_threadpool(
            lambda: service.submit(
                engine=app.state.engine,
                settings=settings,
                tokeniser=app.state.tokeniser,
                worker=app.state.validation_worker,
                principal=principal,
                header_bytes=upload.header,
                spool=upload.spool,
                idempotency_key=idempotency_key,
            )
        )
        handed_over = result.spool_handed_over
    finally:
        if not handed_over:
            upload.spool.delete()
    body = service.invoice_out(result.invoice).model_dump(mode="json")
    location = f"/v1/invoices/{result.invoice.id}"
    headers = {"Location": location}
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, status_code=202 if result.accepted else 201, headers=headers)


@router.get(
    "/invoices", response_model=InvoicePage, summary="Invoices the caller may see", responses=_BAD_CURSOR
)
def list_invoices(
    session: SessionDep,
    principal: Reader,
    status: StatusFilter = None,
    provider_code: str | None = None,
    commissioner_code: str | None = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> InvoicePage:
    return service.list_invoices(
        session,
        principal=principal,
        status=",".join(status) if status else None,
        provider_code=provider_code,
        commissioner_code=commissioner_code,
        limit=limit,
        cursor=cursor,
    )


def _csv_download(description: str, **examples: str) -> dict[str, Any]:
    """The text/csv answer of a route that also answers JSON (`Accept: text/csv` asks for it)."""
    return {
        "schema": {"type": "string", "description": description},
        "examples": {name: {"summary": name, "value": text} for name, text in examples.items()},
    }


_CSV_HEADERS = {
    "Content-Disposition": {
        "description": 'CSV only: attachment; filename="...csv"',
        "schema": {"type": "string"},
    }
}


def _stream(export: exports.Export) -> StreamingResponse:
    headers = {**attachment(export.filename), "Cache-Control": "no-store"}
    return StreamingResponse(export.chunks, media_type=CSV_MEDIA_TYPE, headers=headers)


@router.get(
    "/invoices/approved-to-pay",
    response_model=ApprovedPage,
    summary="Approved and part-approved invoices of the caller's commissioner, with the amounts to pay "
    "(Accept: text/csv: every page as one CSV download)",
    responses={
        200: {
            "description": "A page of invoices (JSON), or with `Accept: text/csv` all of them as CSV "
            "(limit and cursor are then ignored)",
            "headers": _CSV_HEADERS,
            "content": {
                "text/csv": _csv_download(
                    "One row per invoice; cells that would start a formula are led by an apostrophe",
                    finance=exports.APPROVED_CSV_EXAMPLE,
                )
            },
        },
        **_BAD_CURSOR,
    },
)
def approved_to_pay(
    request: Request,
    session: SessionDep,
    principal: Commissioner,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> ApprovedPage | StreamingResponse:
    if wants_csv(request.headers.get("accept")):
        return _stream(
            exports.approved_export(
                engine=request.app.state.engine, principal=principal, page_size=exports.PAGE_INVOICES
            )
        )
    return service.approved_to_pay(session, principal=principal, limit=limit, cursor=cursor)


@router.get("/invoices/{invoice_id}", response_model=InvoiceOut, summary="One invoice: status and summary")
def get_invoice(invoice_id: str, session: SessionDep, principal: Reader) -> InvoiceOut:
    invoice, _ = service.get_invoice(session, principal=principal, invoice_id=invoice_id)
    return service.invoice_out(invoice)


@router.get(
    "/invoices/{invoice_id}/lines",
    response_model=None,
    responses={
        200: {
            "model": LinePage | LineDetailPage,
            "description": "Providers get LinePage (outcomes); CEF staff get LineDetailPage (with patient "
            "tokens and decisions). With `Accept: text/csv`, every line (of `outcome`, if given) as one "
            "CSV download: providers the outcome columns, CEF staff the detail (audited as one read)",
            "headers": _CSV_HEADERS,
            "content": {
                "text/csv": _csv_download(
                    "One row per line, in line order; reasons ;-joined, explanation their summaries. "
                    "CEF staff also get: "
                    + ", ".join(exports.STAFF_COLUMNS[len(exports.PROVIDER_COLUMNS) :])
                    + ". Cells that would start a formula are led by an apostrophe",
                    provider=exports.LINES_CSV_EXAMPLE,
                    staff=exports.STAFF_LINES_CSV_EXAMPLE,
                )
            },
        },
        **problems(
            400,
            409,
            described={
                400: "bad-cursor: pass the next_cursor of the previous page unchanged",
                403: "finance (invoices:read alone) never sees line-level data",
                409: "invoice-not-ready: a CSV export of an invoice still being validated; wait until it "
                "is validated",
            },
        ),
    },
    summary="Line outcomes (providers: outcomes; CEF staff: with patient tokens and decisions)",
)
def list_lines(
    invoice_id: str,
    request: Request,
    principal: Reader,
    outcome: Annotated[LineOutcome | None, Query(description="only lines with this outcome")] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 1000,
    cursor: str | None = None,
) -> LinePage | LineDetailPage | StreamingResponse:
    if wants_csv(request.headers.get("accept")):
        # The export's event is committed before the first byte is streamed, as a page's is.
        with Session(request.app.state.engine) as session:
            export = exports.line_export(
                session,
                engine=request.app.state.engine,
                principal=principal,
                invoice_id=invoice_id,
                outcome=outcome,
                page_size=exports.PAGE_LINES,
            )
            session.commit()
        return _stream(export)
    # Its own transaction, committed before the answer leaves: a staff read is audited or not served.
    with Session(request.app.state.engine) as session:
        page = service.list_lines(
            session, principal=principal, invoice_id=invoice_id, outcome=outcome, limit=limit, cursor=cursor
        )
        session.commit()
    return page


@router.post(
    "/invoices/{invoice_id}/lines/{line_ref}/decision",
    response_model=LineDetailOut,
    summary="Resolve a query line: accept at an amount, or reject with a reason",
    responses=problems(
        400,
        409,
        described={
            400: "the body could not be read as UTF-8 JSON",
            409: "invoice-not-ready: the invoice is not validated (or is approved or withdrawn); "
            "invalid-transition: the line is not a query, or is decided already",
            422: "the body is not a valid decision, or its reason holds an NHS number, a date or a postcode",
        },
    ),
)
def decide_line(
    invoice_id: str, line_ref: str, decision: DecisionIn, request: Request, principal: Staff
) -> LineDetailOut:
    with Session(request.app.state.engine) as session:
        out = service.decide_line(
            session, principal=principal, invoice_id=invoice_id, line_ref=line_ref, decision=decision
        )
        session.commit()
    return out


@router.post(
    "/invoices/{invoice_id}/approve",
    response_model=InvoiceOut,
    summary="Approve a fully decided invoice",
    responses=problems(
        409,
        described={
            409: _INVALID_TRANSITION + "; queries-pending: decide every query line first",
        },
    ),
)
def approve(invoice_id: str, request: Request, principal: Staff) -> InvoiceOut:
    with Session(request.app.state.engine) as session:
        out = service.approve(session, principal=principal, invoice_id=invoice_id)
        session.commit()
    return out


@router.post(
    "/invoices/{invoice_id}/withdraw",
    response_model=InvoiceOut,
    summary="Withdraw a validated invoice before approval (its provider): it is neither decided nor paid, "
    "and its lines stop counting as earlier lines",
    responses=problems(
        400,
        409,
        described={
            400: "the body could not be read as UTF-8 JSON",
            403: "only the provider that submitted the invoice (invoices:submit) may withdraw it",
            409: _INVALID_TRANSITION,
            422: "the reason is too long, or holds an NHS number, a date or a postcode",
        },
    ),
)
def withdraw(
    invoice_id: str, request: Request, principal: Submitter, body: WithdrawIn | None = None
) -> InvoiceOut:
    with Session(request.app.state.engine) as session:
        out = service.withdraw(
            session, principal=principal, invoice_id=invoice_id, reason=body.reason if body else None
        )
        session.commit()
    return out


@router.post(
    "/invoices/{invoice_id}/payments",
    response_model=PaymentOut,
    status_code=201,
    summary="Record a payment of an approved invoice (finance of its commissioner); idempotent by reference",
    responses={
        200: {
            "model": PaymentOut,
            "description": "This reference was recorded before with the same amount and date: nothing new",
            "headers": {
                "Idempotent-Replayed": {"description": "true", "schema": {"type": "string"}},
            },
        },
        **problems(
            400,
            409,
            described={
                400: "the body could not be read as UTF-8 JSON",
                403: "recording a payment needs invoices:read (finance) of the invoice's commissioner",
                409: _INVALID_TRANSITION + "; payment-reference-reused: this reference was recorded "
                "with another amount or date",
                422: "payment-exceeds-unpaid: more than is approved and unpaid; or the amount, the "
                "reference or the date is not valid",
            },
        ),
    },
)
def record_payment(invoice_id: str, payment: PaymentIn, request: Request, principal: Finance) -> JSONResponse:
    with Session(request.app.state.engine) as session:
        recorded = payments.record_payment(
            session, principal=principal, invoice_id=invoice_id, payment=payment
        )
        session.commit()
    body = recorded.payment.model_dump(mode="json")
    if recorded.replayed:
        return JSONResponse(body, status_code=200, headers={"Idempotent-Replayed": "true"})
    return JSONResponse(body, status_code=201)


@router.get(
    "/invoices/{invoice_id}/payments",
    response_model=PaymentPage,
    summary="The payments recorded against an invoice (its commissioner's finance and CEF staff)",
    responses=problems(described={403: "payments are seen by the invoice's commissioner only"}),
)
def list_payments(invoice_id: str, session: SessionDep, principal: Commissioner) -> PaymentPage:
    return payments.list_payments(session, principal=principal, invoice_id=invoice_id)


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {}}}


@router.post(
    "/invoices/{invoice_id}/lines/{line_ref}/reidentify",
    response_model=ReidentifiedOut,
    # Checked by the domain, which answers a caller without it as it does a missing line.
    openapi_extra=requires(service.VALIDATE),
    summary="Re-identify one line's patient: CEF staff of the invoice's commissioner, a purpose and a "
    "reason; audited, limited per person per day",
    responses={
        400: _problem("the body could not be read as UTF-8 JSON"),
        404: _problem("no such line on an invoice the caller may re-identify (the same for every case)"),
        409: _problem("no-patient-token: the line carries no valid NHS number"),
        410: _problem("patient-tokens-purged: retention removed the line's patient tokens"),
        422: _problem(
            "the body: purpose not one of the list, reason too short or long, or holding an identifier"
        ),
        429: _problem("reidentification-limit-reached: see Retry-After"),
        503: _problem("the tokeniser or the audit record is unavailable: nothing was re-identified"),
    },
)
def reidentify_line(
    invoice_id: str, line_ref: str, body: ReidentifyIn, request: Request, principal: PrincipalDep
) -> JSONResponse:
    # Any authenticated caller reaches the domain, which answers everyone but the invoice's own CEF
    # staff with the same audited 404: a 403 would say that the invoice exists.
    app = request.app
    found = reidentify.reidentify(
        engine=app.state.engine,
        detokeniser=app.state.detokeniser,
        principal=principal,
        invoice_id=invoice_id,
        line_ref=line_ref,
        purpose=body.purpose,
        reason=body.reason,
        daily_limit=app.state.settings.reidentify_daily_limit,
    )
    out = ReidentifiedOut(
        invoice_id=found.invoice_id,
        line_ref=found.line_ref,
        purpose=body.purpose,
        patient_token=found.patient_token,
        nhs_number=found.nhs_number,
        date_of_birth=found.date_of_birth,
        postcode=found.postcode,
    )
    return JSONResponse(
        out.model_dump(mode="json"), headers={"Cache-Control": "no-store", "Pragma": "no-cache"}
    )
