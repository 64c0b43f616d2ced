"""Request and response bodies of challenges, the staff work queue and bulk decisions."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from cef_api.invoices.schemas import Money
from cef_api.reasons.schemas import REASON_EXAMPLE, ReasonExplained
from cef_common.openapi import model_examples

# Every state of a query line (models.QueryState) and every status of a challenge
# (models.ChallengeStatus); a test keeps each the same as its model.
QueryStateName = Literal["query", "challenged", "responded", "accepted", "rejected"]
ChallengeStatusName = Literal["open", "responded", "closed"]
# The reasons that make a line a query (validation/rules/outcome.py QUERYING): the only ones a
# query line carries, so the only ones a bulk decision can select by.
# Every reason that makes a line a query (validation/rules/outcome.py QUERYING; a test keeps the two
# the same).
QueryReasonCode = Literal[
    "ATTENDANCE_DURING_SPELL",
    "CROSS_BORDER_RESIDENT",
    "DOB_MISMATCH",
    "ORIGINATING_COMMISSIONER_UNKNOWN",
    "OVERLAPPING_SPELL",
    "PATIENT_NOT_FOUND",
    "PRICE_MISMATCH",
    "PRIOR_APPROVAL_MISSING",
    "RESIDENCE_UNKNOWN",
    "TARIFF_NOT_FOUND",
]

# Synthetic values of the OpenAPI examples (demo ODS codes, made-up ids and amounts).
_INVOICE_ID = "0b9f7c1e-3d2a-4f5b-8c6d-7e8f9a0b1c2d"
_CHALLENGE_ID = "5d6e7f80-91a2-4b3c-8d4e-5f60718293a4"
_EXPLAINED: dict[str, Any] = REASON_EXAMPLE
_CHALLENGE_EXAMPLE: dict[str, Any] = {
    "id": _CHALLENGE_ID,
    "invoice_id": _INVOICE_ID,
    "invoice_number": "RTR-201904-0001",
    "provider_code": "RTR",
    "commissioner_code": "00L",
    "line_ref": "00002",
    "line": {
        "outcome": "query",
        "reasons": ["PRICE_MISMATCH"],
        "expected_amount": "503.46",
        "claimed_amount": "612.00",
        "state": "responded",
    },
    "message": "The claimed amount is above the tariff for MH10C at OPFA: please explain the price.",
    "raised_at": "2026-11-24T09:30:00Z",
    "due_date": "2026-12-14",
    "overdue": False,
    "status": "responded",
    "response_message": "Our price list was out of date; the tariff price is right.",
    "corrected_amount": "503.46",
    "responded_at": "2026-11-26T11:00:00Z",
}
_QUEUE_ITEM_EXAMPLE: dict[str, Any] = {
    "invoice_id": _INVOICE_ID,
    "invoice_number": "RTR-201904-0001",
    "provider_code": "RTR",
    "line_ref": "00002",
    "line_no": 2,
    "state": "challenged",
    "reasons": ["PRICE_MISMATCH"],
    "expected_amount": "503.46",
    "claimed_amount": "612.00",
    "activity_date": "2019-04-02",
    "hrg_code": "MH10C",
    "point_of_delivery": "OPFA",
    "submitted_at": "2026-11-23T09:00:00Z",
    "age_days": 10,
    "challenge": {"id": _CHALLENGE_ID, "status": "open", "due_date": "2026-12-14", "overdue": False},
}

Message = Annotated[str, StringConstraints(strip_whitespace=True, min_length=10, max_length=2000)]


class ChallengeIn(BaseModel):
    """A question to the provider about one query line."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=model_examples(
            [
                {
                    "message": "The claimed amount is above the tariff for MH10C at OPFA: please explain "
                    "the price.",
                    "due_date": "2026-12-14",
                },
                {"message": "Please send the referral that this attendance followed."},
            ]
        ),
    )

    message: Message = Field(
        description="10 to 2000 characters, shown to the provider as written: refer to the line by its "
        "line_ref, never by the patient's NHS number, date of birth or postcode"
    )
    due_date: date | None = Field(
        default=None,
        description="The date the provider should answer by (today or later); left out: today plus "
        "the service's CEF_API_CHALLENGE_DUE_DAYS",
    )


class ChallengeResponseIn(BaseModel):
    """The provider's answer to a challenge, with a corrected amount when it agrees the price is wrong."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=model_examples(
            [
                {
                    "message": "Our price list was out of date; the tariff price is right.",
                    "corrected_amount": "503.46",
                },
                {"message": "The referral is attached to our covering letter of this month."},
            ]
        ),
    )

    message: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)] = Field(
        description="Up to 2000 characters, shown to CEF staff as written: no NHS number, date or postcode"
    )
    corrected_amount: Money | None = Field(
        default=None, description="The amount the provider now claims for the line, if it changed"
    )


class ChallengeLineOut(BaseModel):
    outcome: str
    reasons: list[str]
    expected_amount: str | None
    claimed_amount: str | None
    state: QueryStateName


class ChallengeOut(BaseModel):
    model_config = ConfigDict(json_schema_extra=model_examples([_CHALLENGE_EXAMPLE]))

    id: str
    invoice_id: str
    invoice_number: str
    provider_code: str
    commissioner_code: str
    line_ref: str
    line: ChallengeLineOut
    message: str
    raised_at: datetime
    due_date: date
    overdue: bool = Field(description="Still open after its due date")
    status: ChallengeStatusName
    response_message: str | None
    corrected_amount: str | None
    responded_at: datetime | None


class ChallengePage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=model_examples(
            [{"items": [_CHALLENGE_EXAMPLE], "next_cursor": None, "reasons_explained": [_EXPLAINED]}]
        )
    )

    items: list[ChallengeOut]
    next_cursor: str | None
    reasons_explained: list[ReasonExplained] = Field(description="The reason codes of this page, explained")


class QueueChallengeOut(BaseModel):
    """The line's latest challenge."""

    id: str
    status: ChallengeStatusName
    due_date: date
    overdue: bool


class QueueItem(BaseModel):
    """A query line waiting for (or given) a decision: codes, amounts and dates, never a patient token."""

    invoice_id: str
    invoice_number: str
    provider_code: str
    line_ref: str | None
    line_no: int
    state: QueryStateName
    reasons: list[str]
    expected_amount: str | None
    claimed_amount: str | None
    activity_date: date | None
    hrg_code: str | None
    point_of_delivery: str | None
    submitted_at: datetime
    age_days: int = Field(description="Whole days since the invoice was submitted")
    challenge: QueueChallengeOut | None


class QueuePage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=model_examples(
            [{"items": [_QUEUE_ITEM_EXAMPLE], "next_cursor": "42.17", "reasons_explained": [_EXPLAINED]}]
        )
    )

    items: list[QueueItem]
    next_cursor: str | None
    reasons_explained: list[ReasonExplained] = Field(description="The reason codes of this page, explained")


class BulkDecisionIn(BaseModel):
    """One decision for every undecided query line of an invoice that carries a reason."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=model_examples(
            [
                {"reason_code": "PRICE_MISMATCH", "decision": "accept", "amount": "expected"},
                {
                    "reason_code": "PATIENT_NOT_FOUND",
                    "decision": "reject",
                    "reason": "no patient of ours matches these lines; resubmit them with the right details",
                },
            ]
        ),
    )

    reason_code: QueryReasonCode = Field(description="Every undecided query line carrying this reason")
    decision: Literal["accept", "reject"]
    amount: Literal["claimed", "expected"] | None = Field(
        default=None,
        description="accept only: pay each line its claimed amount (the default) or its expected "
        "(tariff) amount; a line without that amount refuses the whole request",
    )
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)] | None = (
        Field(
            default=None,
            description="Why (needed to reject); kept with each line: no NHS number, date or postcode",
        )
    )

    @model_validator(mode="after")
    def _complete(self) -> BulkDecisionIn:
        if self.decision == "reject" and self.amount is not None:
            raise ValueError('amount is for accepting only: leave it out of {"decision": "reject"}')
        if self.decision == "reject" and self.reason is None:
            raise ValueError('rejecting lines needs a reason, e.g. {"decision": "reject", "reason": "..."}')
        return self

    @property
    def amount_basis(self) -> Literal["claimed", "expected"] | None:
        if self.decision == "reject":
            return None
        return self.amount or "claimed"


class BulkDecisionOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=model_examples(
            [
                {
                    "invoice_id": _INVOICE_ID,
                    "reason_code": "PRICE_MISMATCH",
                    "decision": "accept",
                    "amount": "expected",
                    "lines": 12,
                    "amount_total": "6041.52",
                }
            ]
        )
    )

    invoice_id: str
    reason_code: str
    decision: Literal["accept", "reject"]
    amount: Literal["claimed", "expected"] | None = Field(description="What accepted lines were paid")
    lines: int = Field(description="Lines decided (0 when no undecided query line carries the reason)")
    amount_total: str = Field(description="What the decided lines will pay in all (0.00 for a rejection)")
