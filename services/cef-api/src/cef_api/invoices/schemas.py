"""Request and response bodies of the invoice endpoints (never the table models)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from cef_api.reasons.schemas import REASON_EXAMPLE, ReasonExplained
from cef_common.openapi import model_examples
from cef_common.redact import carries_identifier, identifiers_in

Code = Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z0-9]{3,10}$")]
# An amount a person types (a decision, a corrected amount, a payment): pounds as in backing data,
# below £1,000,000,000. Ten digits of pounds are an NHS number's shape, and such an amount would be
# shown to the other party and recorded in the audit log as it is.
Money = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,9}(\.[0-9]{1,2})?$", max_length=12)]


# --- examples in the OpenAPI document: synthetic values (demo ODS codes, made-up ids and amounts) ----

_INVOICE_ID = "0b9f7c1e-3d2a-4f5b-8c6d-7e8f9a0b1c2d"
_HEADER_EXAMPLE: dict[str, Any] = {
    "invoice_number": "RTR-201904-0001",
    "provider_code": "RTR",
    "commissioner_code": "00L",
    "invoice_date": "2019-05-03",
    "period_start": "2019-04-01",
    "period_end": "2019-04-30",
}
_INVOICE_EXAMPLE: dict[str, Any] = {
    "id": _INVOICE_ID,
    **_HEADER_EXAMPLE,
    "status": "validated",
    "summary": {
        "lines": 3,
        "valid": 1,
        "query": 1,
        "rejected": 1,
        "claimed_amount": "1510.38",
        "validated_amount": "503.46",
    },
    "lines_done": 3,
    "approved_amount": None,
    "reference_versions": {"gp-practices": 1, "patients": 1, "registrations": 1, "tariff": 1, "providers": 1},
    "failure_reason": None,
    "submitted_at": "2026-11-23T09:00:00Z",
    "validated_at": "2026-11-23T09:00:02Z",
    "decided_at": None,
}
_LINE_EXAMPLE: dict[str, Any] = {
    "line_ref": "00002",
    "outcome": "query",
    "reasons": ["PRICE_MISMATCH"],
    "responsible_commissioner": "00L",
    "expected_amount": "503.46",
}
_LINE_DETAIL_EXAMPLE: dict[str, Any] = {
    **_LINE_EXAMPLE,
    "line_no": 2,
    "patient_token": "N1.c3ludGhldGljLXRva2VuLTAx",
    "activity_date": "2019-04-02",
    "hrg_code": "MH10C",
    "point_of_delivery": "OPFA",
    "service_code": None,
    "claimed_amount": "512.00",
    "state": "challenged",
    "decision": None,
    "decided_amount": None,
    "decision_reason": None,
    "decided_by": None,
    "decided_at": None,
}


def _without_identifier(value: str, what: str) -> str:
    """`value` when it holds nothing shaped like an identifier; the message never quotes it."""
    found = identifiers_in(value)
    if found:
        raise ValueError(f"must not hold {' or '.join(found)}: give {what}")
    return value


def money(pennies: int | None) -> str | None:
    if pennies is None:
        return None
    return f"{Decimal(pennies) / 100:.2f}"


def line_money(pennies: int | None) -> str | None:
    """A line's amount as shown (money), withheld (None) when its pounds are shaped like an NHS
    number: backing data may claim any amount of the pattern, and a provider may put an NHS number
    there; the amount still counts in the invoice's totals, which are sums of many lines."""
    shown = money(pennies)
    if shown is None or carries_identifier(shown.split(".")[0]):
        return None
    return shown


def pennies(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


class InvoiceHeaderIn(BaseModel):
    """The JSON header of a submission (validation-rules.md)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=model_examples([_HEADER_EXAMPLE]))

    invoice_number: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    provider_code: Code
    commissioner_code: Code
    invoice_date: date
    period_start: date
    period_end: date

    @field_validator("invoice_number")
    @classmethod
    def _no_identifier(cls, value: str) -> str:
        # The number is stored, answered and audited as it is: it must not be (or hold) an identifier.
        return _without_identifier(value, "the provider's own invoice reference, e.g. RTR-201904-0001")

    @model_validator(mode="after")
    def _period(self) -> InvoiceHeaderIn:
        if self.period_end < self.period_start:
            raise ValueError(
                "period_end is before period_start; the period is inclusive and must end on or after "
                "its start"
            )
        return self


# Every status an invoice can have (models.InvoiceStatus); a test keeps the two the same.
InvoiceStatusName = Literal[
    "received",
    "validating",
    "validated",
    "approved",
    "part-approved",
    "rejected",
    "part-paid",
    "paid",
    "failed",
    "withdrawn",
]
LineOutcome = Literal["valid", "query", "rejected"]


class SummaryOut(BaseModel):
    lines: int
    valid: int
    query: int
    rejected: int
    claimed_amount: str
    validated_amount: str


class InvoiceOut(BaseModel):
    model_config = ConfigDict(json_schema_extra=model_examples([_INVOICE_EXAMPLE]))

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
    paid_amount: str = "0.00"
    ledger_reference: str | None = Field(
        default=None, description="The reference finance books the approved amount under (set at approval)"
    )
    reference_versions: dict[str, int] = Field(default_factory=dict)
    failure_reason: str | None = None
    withdraw_reason: str | None = None
    submitted_at: datetime
    validated_at: datetime | None = None
    decided_at: datetime | None = None
    withdrawn_at: datetime | None = None


class InvoicePage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=model_examples([{"items": [_INVOICE_EXAMPLE], "next_cursor": "42"}])
    )

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

    model_config = ConfigDict(json_schema_extra=model_examples([_LINE_DETAIL_EXAMPLE]))

    line_no: int
    patient_token: str | None
    activity_date: date | None
    hrg_code: str | None
    point_of_delivery: str | None
    service_code: str | None
    claimed_amount: str | None
    state: str | None = Field(
        default=None,
        description="A query line's state (query, challenged, responded, accepted, rejected); null on "
        "valid and rejected lines",
    )
    decision: str | None
    decided_amount: str | None
    decision_reason: str | None
    decided_by: str | None
    decided_at: datetime | None


class LinePage(BaseModel):
    """What a provider gets."""

    model_config = ConfigDict(
        json_schema_extra=model_examples(
            [{"items": [_LINE_EXAMPLE], "next_cursor": None, "reasons_explained": [REASON_EXAMPLE]}]
        )
    )

    items: list[LineOut]
    next_cursor: str | None
    reasons_explained: list[ReasonExplained] = Field(
        default_factory=list, description="What each reason code on this page means, and what to do"
    )


class LineDetailPage(BaseModel):
    """What CEF staff get."""

    model_config = ConfigDict(
        json_schema_extra=model_examples(
            [{"items": [_LINE_DETAIL_EXAMPLE], "next_cursor": None, "reasons_explained": [REASON_EXAMPLE]}]
        )
    )

    items: list[LineDetailOut]
    next_cursor: str | None
    reasons_explained: list[ReasonExplained] = Field(
        default_factory=list, description="What each reason code on this page means, and what to do"
    )


class DecisionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=model_examples(
            [
                {"decision": "accept", "amount": "503.46"},
                {"decision": "reject", "reason": "the patient was registered with another ICB that day"},
            ]
        ),
    )

    decision: Literal["accept", "reject"]
    amount: Money | None = None
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)] | None = (
        None
    )

    @field_validator("reason")
    @classmethod
    def _no_identifier(cls, value: str | None) -> str | None:
        # The reason is stored and shown with the line: it must not identify the patient.
        if value is None:
            return None
        return _without_identifier(value, "why the line is decided so, without identifying anyone")

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
    period_start: date
    period_end: date
    status: str
    approved_amount: str
    paid_amount: str
    unpaid_amount: str
    claimed_amount: str
    ledger_reference: str | None
    decided_at: datetime | None


class ApprovedPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=model_examples(
            [
                {
                    "items": [
                        {
                            "id": _INVOICE_ID,
                            "invoice_number": "RTR-201904-0001",
                            "provider_code": "RTR",
                            "commissioner_code": "00L",
                            "period_start": "2019-04-01",
                            "period_end": "2019-04-30",
                            "status": "part-approved",
                            "approved_amount": "1006.92",
                            "paid_amount": "0.00",
                            "unpaid_amount": "1006.92",
                            "claimed_amount": "1510.38",
                            "ledger_reference": "CEF-00L-00000042",
                            "decided_at": "2026-11-24T14:30:00Z",
                        }
                    ],
                    "total_approved_amount": "1006.92",
                    "total_unpaid_amount": "1006.92",
                    "next_cursor": None,
                }
            ]
        )
    )

    items: list[ApprovedItem]
    total_approved_amount: str = Field(description="Approved on every invoice listed (all pages)")
    total_unpaid_amount: str = Field(description="Approved and not yet paid (all pages)")
    next_cursor: str | None


class WithdrawIn(BaseModel):
    """Why the provider takes the invoice back (optional; kept and shown to the commissioner)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=model_examples([{"reason": "sent to the wrong commissioner; resubmitting"}]),
    )

    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)] | None = (
        None
    )


PaymentReference = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9 /._-]{0,63}$")
]


class PaymentIn(BaseModel):
    """One payment of an approved invoice, as the ledger recorded it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=model_examples(
            [{"amount": "1006.92", "reference": "BACS-2019-06-0042", "paid_on": "2019-06-28"}]
        ),
    )

    amount: Money = Field(description="Pounds, as in backing data: more than 0, at most what is unpaid")
    reference: PaymentReference = Field(
        description="The ledger's payment reference: letters, digits, space / . _ - (at most 64); "
        "sending it again records nothing new"
    )
    paid_on: date = Field(description="The date the money was paid (not in the future)")


_PAYMENT_EXAMPLE: dict[str, Any] = {
    "invoice_id": _INVOICE_ID,
    "reference": "BACS-2019-06-0042",
    "amount": "1006.92",
    "paid_on": "2019-06-28",
    "recorded_at": "2026-11-25T10:00:00Z",
    "recorded_by": "finance-clerk",
    "invoice_status": "paid",
    "approved_amount": "1006.92",
    "paid_amount": "1006.92",
    "unpaid_amount": "0.00",
}


class PaymentOut(BaseModel):
    model_config = ConfigDict(json_schema_extra=model_examples([_PAYMENT_EXAMPLE]))

    invoice_id: str
    reference: str
    amount: str
    paid_on: date
    recorded_at: datetime
    recorded_by: str
    invoice_status: str
    approved_amount: str
    paid_amount: str
    unpaid_amount: str


class PaymentPage(BaseModel):
    model_config = ConfigDict(json_schema_extra=model_examples([{"items": [_PAYMENT_EXAMPLE]}]))

    items: list[PaymentOut]


class PurgeOut(BaseModel):
    invoices: int
    lines: int


# --- re-identification (invoices/reidentify.py) ---------------------------------------------------

ReidentifyPurpose = Literal["resolve-query", "provider-challenge", "audit-request"]


class ReidentifyIn(BaseModel):
    """Why one line's patient must be re-identified; both are audited."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=model_examples(
            [{"purpose": "resolve-query", "reason": "the provider disputes the registration on this line"}]
        ),
    )

    purpose: ReidentifyPurpose = Field(
        description="resolve-query: a query on this line; provider-challenge: the provider disputes an "
        "outcome; audit-request: an auditor asked about this line"
    )
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=10, max_length=1000)] = Field(
        description="What you need the identity for, in words (10 to 1000 characters). Audited and kept: "
        "it must not hold an NHS number, a date or a postcode"
    )


class ReidentifiedOut(BaseModel):
    """One line's patient: shown once, never to be copied out of the CEF."""

    model_config = ConfigDict(
        json_schema_extra=model_examples(
            [
                {
                    "invoice_id": _INVOICE_ID,
                    "line_ref": "00002",
                    "purpose": "resolve-query",
                    "patient_token": "N1.c3ludGhldGljLXRva2VuLTAx",
                    # The test-reserved 999 range and a non-geographic postcode: no real person.
                    "nhs_number": "9990000018",
                    "date_of_birth": "1970-01-01",
                    "postcode": "ZZ99 3VZ",
                    "warning": "patient-identifiable data: use it only for the stated purpose, do not copy, "
                    "store or forward it; this re-identification is audited",
                }
            ]
        )
    )

    invoice_id: str
    line_ref: str
    purpose: ReidentifyPurpose
    patient_token: str
    nhs_number: str | None = Field(description="10 digits; null when the tokeniser knows no original")
    date_of_birth: str | None = Field(description="ISO date; null when the line had no valid one")
    postcode: str | None = Field(description="As standardised by the tokeniser (TS18 1HU); null when none")
    warning: str = (
        "patient-identifiable data: use it only for the stated purpose, do not copy, store or forward it; "
        "this re-identification is audited"
    )
