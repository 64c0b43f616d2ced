"""HTTP endpoints of reasons: the catalogue of reason codes, for any authenticated caller."""

from __future__ import annotations

import hashlib
from typing import Annotated, Final

from fastapi import APIRouter, Header, Response

from cef_api.reasons.catalogue import ENTRIES
from cef_api.reasons.schemas import ReasonPage
from cef_common.auth import PrincipalDep

router = APIRouter(prefix="/v1", tags=["reasons"])

# The catalogue changes only with a release: a client may keep it a day, and ask again cheaply.
CACHE_CONTROL: Final = "private, max-age=86400"
_BODY: Final = ReasonPage(items=list(ENTRIES)).model_dump_json().encode()
ETAG: Final = '"' + hashlib.sha256(_BODY).hexdigest()[:32] + '"'

# Every role reads the catalogue (any valid token does): the document names the scopes they hold.
_READERS: Final = ("invoices:submit", "invoices:validate", "invoices:read", "reports:read")


@router.get(
    "/reasons",
    response_model=ReasonPage,
    summary="Every reason code a line can carry: its outcome, what it means and what to do (any token)",
    openapi_extra={"security": [{"bearerAuth": [scope]} for scope in _READERS]},
    responses={
        200: {
            "description": "The catalogue; cacheable (Cache-Control, ETag): it changes only with a release",
            "headers": {
                "Cache-Control": {"description": CACHE_CONTROL, "schema": {"type": "string"}},
                "ETag": {
                    "description": "send it back as If-None-Match to get 304",
                    "schema": {"type": "string"},
                },
            },
        },
        304: {"description": "Not modified: the catalogue is the one of the ETag sent in If-None-Match"},
    },
)
def list_reasons(
    principal: PrincipalDep,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", max_length=200)] = None,
) -> Response:
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": ETAG}
    if if_none_match is not None and {ETAG, "*"} & {tag.strip() for tag in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(_BODY, media_type="application/json", headers=headers)
