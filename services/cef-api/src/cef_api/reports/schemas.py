"""What the API answers for a report: tables whose small numbers are hidden ("*") or rounded."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cef_api.reports.repository import ReportBy
from cef_common.openapi import model_examples

Hidden = Literal["*"]

_CELL = {"lines": 25, "claimed_amount": "10250.00", "validated_amount": "10250.00"}
_HIDDEN = {"lines": "*", "claimed_amount": "*", "validated_amount": "*"}
_ZERO = {"lines": 0, "claimed_amount": "0.00", "validated_amount": "0.00"}
REPORT_EXAMPLE = {
    "commissioner_code": "00C",
    "by": "provider",
    "from": "2019-04",
    "to": "2019-06",
    "generated_at": "2019-07-01T09:30:00Z",
    "columns": ["valid", "query", "rejected"],
    "rows": [
        {
            "key": "RTR",
            "cells": {
                "valid": _CELL,
                "query": {"lines": 10, "claimed_amount": "4120.00", "validated_amount": "0.00"},
                "rejected": _HIDDEN,
            },
            "total": _HIDDEN,
        },
    ],
    "totals": None,
    "suppression": {
        "threshold": 7,
        "rounding": 5,
        "explanation": "Counts of 1 to 7 lines are shown as * ...",
    },
}


class ReportCell(BaseModel):
    """One cell: its lines and amounts, all shown or all hidden."""

    model_config = ConfigDict(json_schema_extra=model_examples([_CELL, _HIDDEN, _ZERO]))

    lines: int | Hidden = Field(
        description="The number of lines rounded to the nearest 5 (halves up); 0 when none; "
        '"*" when 1 to 7, or hidden so that no hidden cell can be worked out from the others'
    )
    claimed_amount: str | Hidden = Field(description='Sum of the lines\' claimed amounts (exact), or "*"')
    validated_amount: str | Hidden = Field(
        description='Sum of the claimed amounts of the valid lines among them (exact), or "*"'
    )


class OutcomeCells(BaseModel):
    valid: ReportCell
    query: ReportCell
    rejected: ReportCell


class ReportRow(BaseModel):
    key: str = Field(
        description='The month (YYYY-MM), provider code, point of delivery or reason code; "unknown" '
        'for lines without a month or point of delivery, "none" for lines without a reason'
    )
    cells: OutcomeCells
    total: ReportCell = Field(description="The row's lines whatever their outcome")


class ReportTotals(BaseModel):
    cells: OutcomeCells = Field(description="Each outcome over every row")
    total: ReportCell = Field(description="The grand total")


class SuppressionOut(BaseModel):
    threshold: int = Field(description="Counts from 1 to this are hidden")
    rounding: int = Field(description="Other counts are rounded to a multiple of this")
    explanation: str


class OutcomeReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True, json_schema_extra=model_examples([REPORT_EXAMPLE]))

    commissioner_code: str
    by: ReportBy
    from_: str | None = Field(alias="from", description="First activity month counted (YYYY-MM), if given")
    to: str | None = Field(description="Last activity month counted (YYYY-MM), if given")
    generated_at: datetime
    columns: list[str]
    rows: list[ReportRow] = Field(description="One per key, ordered by key")
    totals: ReportTotals | None = Field(
        description="Column totals and grand total; null for by=reason, where a line with several "
        "reason codes counts in several rows so that rows do not add up"
    )
    suppression: SuppressionOut
