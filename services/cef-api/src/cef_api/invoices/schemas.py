"""Request and response bodies of the invoice endpoints (never the table models)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Code = Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z0-9]{3,10}$")]
Money = Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]{1,2})?$", max_length=15)]


def money(pennies: int | None) -> str | None:
    if pennies is None:
        return None
    return f"{Decimal(pennies) / 100:.2f}"


def pennies(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


class InvoiceHeaderIn(BaseModel):
    """The JSON header of a submission (validation-rules.md)."""

    model_config = ConfigDict(extra="ignore")

    invoice_number: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    provider_code: Code
    commissioner_code: Code
    invoice_date: date
    period_start: date
    period_end: date

    @model_validator(mode="after")
    def _period(self) -> InvoiceHeaderIn:
        if self.period_end < self.period_start:
            raise ValueError(
                f"period_end {self.period_end} is before period_start {self.period_start}; "
                "the period is inclusive and must end on or after its start"
            )
        return self


class SummaryOut(BaseModel):
    lines: int
    valid: int
    query: int
    rejected: int
    claimed_amount: str
    validated_amount: str


class InvoiceOut(BaseModel):
    id: str
    invoice_number: str
    provider_code: str
    commissioner_code: str
    invoice_date: date
    period_start: date
    period_end: date
    status: str
    summary: SummaryOut
    lines_done: int
    approved_amount: str | None = None
    reference_versions: dict[str, int] = Field(default_factory=dict)
    failure_reason: str | None = None
    submitted_at: datetime
    validated_at: datetime | None = None
    decided_at: datetime | None = None


class InvoicePage(BaseModel):
    items: list[InvoiceOut]
    next_cursor: str | None


class LineOut(BaseModel):
    """What the provider sees of a line: enough to correct and resubmit."""

    line_ref: str | None
    outcome: str
    reasons: list[str]
    responsible_commissioner: str | None
    expected_amount: str | None


class LineDetailOut(LineOut):
    """What CEF staff see: the line with its pseudonymous patient token and the decision."""

    line_no: int
    patient_token: str | None
    activity_date: date | None
    hrg_code: str | None
    point_of_delivery: str | None
    service_code: str | None
    claimed_amount: str | None
    decision: str | None
    decided_amount: str | None
    decision_reason: str | None
    decided_by: str | None
    decided_at: datetime | None


class LinePage(BaseModel):
    items: list[LineOut]
    next_cursor: str | None


class LineDetailPage(BaseModel):
    items: list[LineDetailOut]
    next_cursor: str | None


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["accept", "reject"]
    amount: Money | None = None
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)] | None = (
        None
    )

    @model_validator(mode="after")
    def _complete(self) -> DecisionIn:
        if self.decision == "accept" and self.amount is None:
            raise ValueError(
                'accepting a line needs the amount to pay, e.g. {"decision": "accept", "amount": "123.45"}'
            )
        if self.decision == "reject" and self.reason is None:
            raise ValueError('rejecting a line needs a reason, e.g. {"decision": "reject", "reason": "..."}')
        return self


class ApprovedItem(BaseModel):
    id: str
    invoice_number: str
    provider_code: str
    commissioner_code: str
    status: str
    approved_amount: str
    claimed_amount: str
    decided_at: datetime | None


class ApprovedPage(BaseModel):
    items: list[ApprovedItem]
    total_approved_amount: str
    next_cursor: str | None


class PurgeOut(BaseModel):
    invoices: int
    lines: int
