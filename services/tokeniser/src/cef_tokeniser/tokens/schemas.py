"""Request and response shapes of the token endpoints, as published in the OpenAPI document.

The handlers parse bodies with orjson and check them by hand (a batch is 100,000 values or more,
too many to validate one by one with pydantic); these models document exactly what they accept."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cef_common.openapi import model_examples
from cef_common.params import MAX_INTEGER

KindField = Literal["nhs_number", "date_of_birth", "postcode"]


class ValueError_(BaseModel):
    """Why the value (or token) at `index` gave null."""

    index: int
    code: str = Field(
        description="missing, not_a_string, nhs_number_invalid, date_invalid, postcode_invalid, "
        "token_invalid, token_unknown, token_unreadable"
    )


class TokeniseRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=model_examples(
            [{"kind": "nhs_number", "values": ["9990000018", "999 000 0026", None], "context": "cef"}]
        )
    )

    kind: KindField
    values: list[str | None] = Field(
        description="In any accepted form; at least 100,000 per request are fine."
    )
    context: str | None = Field(default=None, description="Default: the setting default_context (`cef`).")
    key_version: int | None = Field(
        default=None, ge=1, le=MAX_INTEGER, description="An existing key version; default the current."
    )


class TokeniseResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=model_examples(
            [
                {
                    "kind": "nhs_number",
                    "context": "cef",
                    "key_version": 1,
                    "tokens": ["N1.c3ludGhldGljLXRva2VuLTAx", "N1.c3ludGhldGljLXRva2VuLTAy", None],
                    "errors": [{"index": 2, "code": "missing"}],
                }
            ]
        )
    )

    kind: KindField
    context: str
    key_version: int
    tokens: list[str | None] = Field(description="In input order; null where the value was not valid.")
    errors: list[ValueError_]
    outward_codes: list[str | None] | None = Field(
        default=None, description="postcode only: the outward code (district) of each valid postcode"
    )


class OnBehalfOf(BaseModel):
    """The person a peer re-identifies for, from that person's verified token."""

    sub: str = Field(min_length=1, max_length=255)
    issuer: str = Field(min_length=1, max_length=255)
    org: str | None = Field(default=None, max_length=64)


class DetokeniseRequest(BaseModel):
    """Only peers listed in DETOKENISE_CLIENTS (the CEF API) may call; every field is audited."""

    model_config = ConfigDict(
        json_schema_extra=model_examples(
            [
                {
                    "kind": "nhs_number",
                    "tokens": ["N1.c3ludGhldGljLXRva2VuLTAx"],
                    "purpose": "resolve-query: the query on this line needs the patient",
                    "context": "cef",
                    "on_behalf_of": {
                        "sub": "staff-0042",
                        "issuer": "https://login.example.nhs.uk",
                        "org": "00L",
                    },
                    "invoice_id": "0b9f7c1e-3d2a-4f5b-8c6d-7e8f9a0b1c2d",
                    "line_ref": "L0001",
                }
            ]
        )
    )

    kind: KindField
    tokens: list[str | None]
    purpose: str = Field(min_length=1, max_length=1000, description="Why the identities are needed; audited.")
    context: str | None = None
    on_behalf_of: OnBehalfOf
    invoice_id: str = Field(description="The invoice (UUID) whose line the re-identification is for.")
    line_ref: str = Field(min_length=1, max_length=100, description="That invoice's line.")


class DetokeniseResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra=model_examples([{"values": ["9990000018"], "errors": []}]))

    values: list[str | None]
    errors: list[ValueError_]


class RetokeniseRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=model_examples(
            [
                {
                    "kind": "nhs_number",
                    "tokens": ["N1.c3ludGhldGljLXRva2VuLTAx", "N1.c3ludGhldGljLXRva2VuLTAy"],
                    "context": "cef",
                }
            ]
        )
    )

    kind: KindField
    tokens: list[str | None]
    context: str | None = None


class RetokeniseResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=model_examples(
            [
                {
                    "kind": "nhs_number",
                    "key_version": 2,
                    "tokens": ["N2.c3ludGhldGljLXRva2VuLTAz", None],
                    "errors": [{"index": 1, "code": "token_unknown"}],
                }
            ]
        )
    )

    kind: KindField
    key_version: int
    tokens: list[str | None] = Field(
        description="Each token under the current key version; null where unknown."
    )
    errors: list[ValueError_]
