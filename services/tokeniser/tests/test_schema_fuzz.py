"""Schema fuzzing of the tokeniser: no 5xx and no answer outside its own OpenAPI document, whatever
a tokenising client, the CEF API re-identifying, another service or a caller without a valid
token sends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cef_common.auth import TokenSigner
from cef_common.schema_fuzz import ANONYMOUS, GARBAGE, Caller, FuzzTarget, database_kinds, fuzz_all
from cef_common.testing import DevIssuer
from cef_tokeniser.config import Settings
from cef_tokeniser.main import create_app

pytestmark = [pytest.mark.fuzz, pytest.mark.parametrize("db_kind", database_kinds())]


def _authorised(operation: Any) -> list[str]:
    if operation.path == "/v1/detokenise":
        return ["cef-api"]
    return ["client"] if operation.path.startswith("/v1/") else []


def test_no_server_error_and_every_answer_as_documented(
    db_url: str,
    make_settings: Callable[..., Settings],
    dev_issuer: DevIssuer,
    peer_signer: TokenSigner,
    subtests: Any,
) -> None:
    def peer(scope: str) -> dict[str, str]:
        token = peer_signer.mint(
            sub="cef-api", audience="tokeniser", scopes=scope.split(), ttl_seconds=600, client="cef-api"
        )
        return {"Authorization": f"Bearer {token}"}

    callers = [
        Caller("client", dev_issuer.headers("tokenise", sub="fuzz-client", aud="tokeniser")),
        Caller("cef-api", peer("tokenise detokenise")),
        Caller("detokenise-not-a-peer", dev_issuer.headers("detokenise", sub="fuzz", aud="tokeniser")),
        Caller("cef-api-audience", dev_issuer.headers("tokenise", sub="fuzz", aud="cef-api")),
        Caller("auditor", dev_issuer.headers("audit:read", sub="fuzz", org="X26", aud="tokeniser")),
        ANONYMOUS,
        GARBAGE,
    ]
    target = FuzzTarget(create_app(make_settings(db_url)), callers, authorised=_authorised)
    labels = fuzz_all(target, subtests)
    assert "POST /v1/tokenise" in labels
