"""Request and response shapes of the token endpoints, as published in the OpenAPI document.

The handlers parse bodies with orjson and check them by hand (a batch is 100,000 values or more,
too many to validate one by one with pydantic); these models document exactly what they accept."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

KindField = Literal["nhs_number", "date_of_birth", "postcode"]


class ValueError_(BaseModel):
    """Why the value (or token) at `index` gave null."""

    index: int
    code: str = Field(
        description="missing, not_a_string, nhs_number_invalid, date_invalid, postcode_invalid, "
        "token_invalid, token_unknown, token_unreadable"
    )


class TokeniseRequest(BaseModel):
    kind: KindField
    values: list[str | None] = Field(
        description="In any accepted form; at least 100,000 per request are fine."
    )
    context: str | None = Field(default=None, description="Default: the setting default_context (`cef`).")
    key_version: int | None = Field(
        default=None, ge=1, description="An existing key version; default the current."
    )


class TokeniseResponse(BaseModel):
    kind: KindField
    context: str
    key_version: int
    tokens: list[str | None] = Field(description="In input order; null where the value was not valid.")
    errors: list[ValueError_]
    outward_codes: list[str | None] | None = Field(
        default=None, description="postcode only: the outward code (district) of each valid postcode"
    )


class DetokeniseRequest(BaseModel):
    kind: KindField
    tokens: list[str | None]
    purpose: str = Field(min_length=1, max_length=1000, description="Why the identities are needed; audited.")
    context: str | None = None


class DetokeniseResponse(BaseModel):
    values: list[str | None]
    errors: list[ValueError_]


class RetokeniseRequest(BaseModel):
    kind: KindField
    tokens: list[str | None]
    context: str | None = None


class RetokeniseResponse(BaseModel):
    kind: KindField
    key_version: int
    tokens: list[str | None] = Field(
        description="Each token under the current key version; null where unknown."
    )
    errors: list[ValueError_]
