"""HTTP endpoints of invoices: thin: parse, authorise, call the service, shape the response."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from cef_api.invoices import service
from cef_api.invoices.schemas import (
    ApprovedPage,
    DecisionIn,
    InvoiceOut,
    InvoicePage,
    LineDetailOut,
    LineDetailPage,
    LinePage,
)
from cef_api.invoices.upload import receive_upload
from cef_common.auth import Principal, require_scopes
from cef_common.db import SessionDep

router = APIRouter(prefix="/v1", tags=["invoices"])

Submitter = Annotated[Principal, Depends(require_scopes(service.SUBMIT))]
Reader = Annotated[
    Principal, Depends(require_scopes(service.SUBMIT, service.VALIDATE, service.READ, any_of=True))
]
Staff = Annotated[Principal, Depends(require_scopes(service.VALIDATE))]
Commissioner = Annotated[Principal, Depends(require_scopes(service.VALIDATE, service.READ, any_of=True))]


@router.post(
    "/invoices",
    response_model=InvoiceOut,
    status_code=201,
    summary="Submit an invoice: multipart parts 'invoice' (JSON header) and 'backing_data' (CSV)",
    responses={202: {"description": "Accepted; validation continues in the background (see Location)"}},
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


@router.get("/invoices", response_model=InvoicePage, summary="Invoices the caller may see")
def list_invoices(
    session: SessionDep,
    principal: Reader,
    status: str | None = None,
    provider_code: str | None = None,
    commissioner_code: str | None = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> InvoicePage:
    return service.list_invoices(
        session,
        principal=principal,
        status=status,
        provider_code=provider_code,
        commissioner_code=commissioner_code,
        limit=limit,
        cursor=cursor,
    )


@router.get(
    "/invoices/approved-to-pay",
    response_model=ApprovedPage,
    summary="Approved and part-approved invoices of the caller's commissioner, with the amounts to pay",
)
def approved_to_pay(
    session: SessionDep,
    principal: Commissioner,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> ApprovedPage:
    return service.approved_to_pay(session, principal=principal, limit=limit, cursor=cursor)


@router.get("/invoices/{invoice_id}", response_model=InvoiceOut, summary="One invoice: status and summary")
def get_invoice(invoice_id: str, session: SessionDep, principal: Reader) -> InvoiceOut:
    invoice, _ = service.get_invoice(session, principal=principal, invoice_id=invoice_id)
    return service.invoice_out(invoice)


@router.get(
    "/invoices/{invoice_id}/lines",
    response_model=None,
    responses={200: {"model": LinePage, "description": "Providers' view; CEF staff get LineDetailPage"}},
    summary="Line outcomes (providers: outcomes; CEF staff: with patient tokens and decisions)",
)
def list_lines(
    invoice_id: str,
    request: Request,
    principal: Reader,
    outcome: str | None = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 1000,
    cursor: str | None = None,
) -> LinePage | LineDetailPage:
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
    "/invoices/{invoice_id}/approve", response_model=InvoiceOut, summary="Approve a fully decided invoice"
)
def approve(invoice_id: str, request: Request, principal: Staff) -> InvoiceOut:
    with Session(request.app.state.engine) as session:
        out = service.approve(session, principal=principal, invoice_id=invoice_id)
        session.commit()
    return out
