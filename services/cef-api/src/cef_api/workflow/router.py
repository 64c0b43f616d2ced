"""HTTP endpoints of challenges, the staff work queue and bulk decisions: thin: parse, authorise,
call the service, shape the response."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlmodel import Session

from cef_api.invoices.service import MAX_PAGE, SUBMIT, VALIDATE
from cef_api.workflow import service
from cef_api.workflow.schemas import (
    BulkDecisionIn,
    BulkDecisionOut,
    ChallengeIn,
    ChallengeOut,
    ChallengePage,
    ChallengeResponseIn,
    ChallengeStatusName,
    QueryReasonCode,
    QueryStateName,
    QueuePage,
)
from cef_common.auth import Principal, require_scopes
from cef_common.db import SessionDep
from cef_common.openapi import problems

router = APIRouter(prefix="/v1", tags=["workflow"])

Submitter = Annotated[Principal, Depends(require_scopes(SUBMIT))]
Staff = Annotated[Principal, Depends(require_scopes(VALIDATE))]
Party = Annotated[Principal, Depends(require_scopes(SUBMIT, VALIDATE, any_of=True))]

_BAD_CURSOR = "bad-cursor: pass the next_cursor of the previous page unchanged"
_NOT_DECIDING = (
    "invoice-not-ready: the invoice is not validated (approved, withdrawn or still validating); "
    "invalid-transition: the line's state does not allow this step (the detail names it; `status` "
    "and `allowed_from` say the same)"
)
_IDENTIFIER = "message-contains-identifier: the text holds an NHS number, a date or a postcode"


@router.post(
    "/invoices/{invoice_id}/lines/{line_ref}/challenge",
    response_model=ChallengeOut,
    status_code=201,
    summary="Ask the provider about a query line (CEF staff of the invoice's commissioner)",
    responses=problems(
        400,
        409,
        described={
            400: "the body could not be read as UTF-8 JSON",
            403: "challenging needs invoices:validate of the invoice's commissioner",
            409: _NOT_DECIDING,
            422: f"the message is not 10 to 2000 characters, or the due date is in the past "
            f"(due-date-in-past); {_IDENTIFIER}",
        },
    ),
)
def raise_challenge(
    invoice_id: str, line_ref: str, body: ChallengeIn, request: Request, principal: Staff
) -> ChallengeOut:
    with Session(request.app.state.engine) as session:
        out = service.raise_challenge(
            session,
            principal=principal,
            invoice_id=invoice_id,
            line_ref=line_ref,
            body=body,
            default_due_days=request.app.state.settings.challenge_due_days,
        )
        session.commit()
    return out


@router.get(
    "/challenges",
    response_model=ChallengePage,
    summary="Challenges of the caller's invoices (a provider's own; CEF staff: their commissioner's), "
    "overdue first, then by due date",
    responses=problems(400, described={400: _BAD_CURSOR}),
)
def list_challenges(
    session: SessionDep,
    principal: Party,
    status: Annotated[ChallengeStatusName | None, Query(description="only challenges in this status")] = None,
    invoice_id: Annotated[str | None, Query(max_length=36, description="only this invoice's")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> ChallengePage:
    return service.list_challenges(
        session, principal=principal, status=status, invoice_id=invoice_id, limit=limit, cursor=cursor
    )


@router.get(
    "/challenges/{challenge_id}",
    response_model=ChallengeOut,
    summary="One challenge, with the provider's answer",
)
def get_challenge(challenge_id: str, session: SessionDep, principal: Party) -> ChallengeOut:
    return service.get_challenge(session, principal=principal, challenge_id=challenge_id)


@router.post(
    "/challenges/{challenge_id}/response",
    response_model=ChallengeOut,
    summary="Answer a challenge (the provider of the invoice), optionally with a corrected amount",
    responses=problems(
        400,
        409,
        described={
            400: "the body could not be read as UTF-8 JSON",
            403: "only the provider of the invoice (invoices:submit) answers its challenges",
            409: "invalid-transition: the challenge is not open (answered already, or closed by a "
            "decision or a withdrawal); invoice-not-ready: the invoice is no longer validated",
            422: f"the message is empty or over 2000 characters, or the amount is not valid; {_IDENTIFIER}",
        },
    ),
)
def respond(
    challenge_id: str, body: ChallengeResponseIn, request: Request, principal: Submitter
) -> ChallengeOut:
    with Session(request.app.state.engine) as session:
        out = service.respond(session, principal=principal, challenge_id=challenge_id, body=body)
        session.commit()
    return out


@router.get(
    "/queries",
    response_model=QueuePage,
    summary="The work queue: query lines of validated invoices addressed to the caller's commissioner, "
    "oldest invoice first (CEF staff)",
    responses=problems(400, described={400: _BAD_CURSOR}),
)
def work_queue(
    request: Request,
    principal: Staff,
    reason: Annotated[QueryReasonCode | None, Query(description="only lines with this reason")] = None,
    provider_code: Annotated[
        str | None, Query(pattern=r"^[A-Za-z0-9]{3,10}$", description="only this provider's invoices")
    ] = None,
    invoice_id: Annotated[str | None, Query(max_length=36, description="only this invoice's lines")] = None,
    state: Annotated[
        QueryStateName | None,
        Query(description="only lines in this state (default: undecided: query, challenged, responded)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> QueuePage:
    # Its own transaction, committed before the answer leaves: each page read is audited or not served.
    with Session(request.app.state.engine) as session:
        page = service.work_queue(
            session,
            principal=principal,
            reason=reason,
            provider_code=provider_code,
            invoice_id=invoice_id,
            state=state,
            limit=limit,
            cursor=cursor,
        )
        session.commit()
    return page


@router.post(
    "/invoices/{invoice_id}/queries/decision",
    response_model=BulkDecisionOut,
    summary="Accept or reject, at once, every undecided query line of an invoice carrying a reason",
    responses=problems(
        400,
        409,
        described={
            400: "the body could not be read as UTF-8 JSON",
            403: "deciding needs invoices:validate of the invoice's commissioner",
            409: "invoice-not-ready: the invoice is not validated (approved, withdrawn or still validating)",
            422: "the body is not a valid decision (a rejection needs a reason; amount is for accepting); "
            "amount-missing: some of the lines have no amount of the kind asked for, so none was "
            f"decided; {_IDENTIFIER}",
        },
    ),
)
def decide_by_reason(
    invoice_id: str, body: BulkDecisionIn, request: Request, principal: Staff
) -> BulkDecisionOut:
    with Session(request.app.state.engine) as session:
        out = service.decide_by_reason(session, principal=principal, invoice_id=invoice_id, body=body)
        session.commit()
    return out
