"""What the API says about a reason code: the catalogue's entries as they are answered."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cef_common.openapi import model_examples

ReasonOutcome = Literal["rejected", "query"]

REASON_EXAMPLE = {
    "code": "PRICE_MISMATCH",
    "outcome": "query",
    "summary": "The amount you claimed is not the price the national tariff gives for this activity "
    "(shown as expected_amount), after your market forces factor and any extra bed days.",
    "action": "Compare your amount with expected_amount: if yours is wrong, accept the expected price "
    "when the commissioner asks; if it is right, say why in your answer to the challenge.",
}


class ReasonExplained(BaseModel):
    """One reason code and what it means for the provider who reads it on a line."""

    model_config = ConfigDict(frozen=True, json_schema_extra=model_examples([REASON_EXAMPLE]))

    code: str = Field(description="The reason code as it appears in a line's `reasons`, never shortened")
    outcome: ReasonOutcome = Field(
        description="rejected: the line is not paid as it stands; query: a person must resolve it"
    )
    summary: str = Field(description="What the code means, in one plain-English sentence")
    action: str = Field(description="What the provider should do about a line that has it")


class ReasonPage(BaseModel):
    model_config = ConfigDict(json_schema_extra=model_examples([{"items": [REASON_EXAMPLE]}]))

    items: list[ReasonExplained]
