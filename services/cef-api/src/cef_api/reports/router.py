"""HTTP endpoints of reports: thin: parse, authorise, call the service, shape the response."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlmodel import Session

from cef_api.reports import service
from cef_api.reports.repository import ReportBy
from cef_api.reports.schemas import OutcomeReport
from cef_common.auth import Principal, require_scopes
from cef_common.openapi import problems

router = APIRouter(prefix="/v1", tags=["reports"])

Reader = Annotated[Principal, Depends(require_scopes(*service.READERS, any_of=True))]
_MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"


@router.get(
    "/reports/outcomes",
    response_model=OutcomeReport,
    response_model_by_alias=True,
    summary="Lines addressed to the caller's commissioner by month, provider, point of delivery or "
    "reason against their outcome, small numbers hidden (board, CEF staff, finance)",
    responses=problems(
        described={
            403: "the token holds none of reports:read, invoices:validate, invoices:read, or names "
            "no organisation",
            422: "by is not one of month, provider, point_of_delivery, reason; from or to is not a "
            "month written YYYY-MM; bad-period: from is after to, or a month is 0000-MM",
        },
    ),
)
def outcome_report(
    request: Request,
    principal: Reader,
    by: Annotated[ReportBy, Query(description="What each row is")] = "month",
    period_from: Annotated[
        str | None,
        Query(alias="from", pattern=_MONTH_PATTERN, description="First activity month (YYYY-MM), included"),
    ] = None,
    period_to: Annotated[
        str | None,
        Query(alias="to", pattern=_MONTH_PATTERN, description="Last activity month (YYYY-MM), included"),
    ] = None,
) -> OutcomeReport:
    # Its own transaction, committed before the answer leaves: a report read is audited or not served.
    with Session(request.app.state.engine) as session:
        report = service.outcome_report(
            session, principal=principal, by=by, period_from=period_from, period_to=period_to
        )
        session.commit()
    return report
