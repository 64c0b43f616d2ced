"""Schema fuzzing of the CEF API: no 5xx and no answer outside its own OpenAPI document, whatever
a provider, CEF staff, finance, a board reader, an administrator, another service or a caller without a valid
token sends, over a database holding a submitted invoice (so that ids and cursors are real)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import generate_world
import pytest
from api_support import Tokeniser, api_settings, running_api

from cef_api.main import create_app
from cef_api.reference.parsers import DATASETS
from cef_common.schema_fuzz import ANONYMOUS, GARBAGE, Caller, FuzzTarget, database_kinds, fuzz_all
from cef_common.testing import DevIssuer

pytestmark = [pytest.mark.fuzz, pytest.mark.parametrize("db_kind", database_kinds())]

INVOICE_ROLES = ["provider", "staff", "finance"]


def _authorised(operation: Any) -> list[str]:
    path: str = operation.path
    if path.startswith("/v1/reference"):
        return ["admin"]
    if path.startswith("/v1/reports"):
        return ["board", "staff", "finance"]
    if path.startswith("/v1/reasons"):
        return [*INVOICE_ROLES, "board"]
    if path.startswith("/v1/queries") or path.endswith(
        ("/decision", "/approve", "/reidentify", "/challenge")
    ):
        return ["staff"]
    if path.endswith(("/withdraw", "/response")):
        return ["provider"]
    if path.startswith("/v1/challenges"):
        return ["provider", "staff"]
    if path.endswith("/payments"):
        return ["finance"]
    return INVOICE_ROLES if path.startswith("/v1/invoices") else []


async def test_no_server_error_and_every_answer_as_documented(
    data_dir: Path, api_db: str, tokeniser: Tokeniser, dev_issuer: DevIssuer, subtests: Any
) -> None:
    settings = api_settings(data_dir, api_db, tokeniser.url)
    world = generate_world.generate(seed=11, patients=30, invoices=1, lines_per_invoice=12)
    inv = world.invoices[0]
    provider, commissioner = inv.header["provider_code"], inv.header["commissioner_code"]
    async with running_api(settings, dev_issuer) as api:
        await api.load_world(world)
        r = await api.submit(inv.header, inv.backing)
        assert r.status_code == 201, r.text
        invoice_id = r.json()["id"]
        line_refs = [line["line_ref"] for line in await api.lines(invoice_id, "invoices:submit", provider)]

    def caller(name: str, scope: str, org: str | None = None, aud: str = "cef-api") -> Caller:
        return Caller(name, dev_issuer.headers(scope, org=org, sub=f"fuzz-{name}", aud=aud))

    callers = [
        caller("provider", "invoices:submit", provider),
        caller("staff", "invoices:validate", commissioner),
        caller("finance", "invoices:read", commissioner),
        caller("admin", "reference:write"),
        caller("board", "reports:read", commissioner),
        caller("auditor", "audit:read", "X26"),
        caller("peer", "audit:write"),
        caller("tokenise", "tokenise"),
        caller("other-audience", "invoices:read", commissioner, aud="audit"),
        ANONYMOUS,
        GARBAGE,
    ]
    target = FuzzTarget(
        create_app(settings),
        callers,
        authorised=_authorised,
        known_path_values={"invoice_id": [invoice_id], "line_ref": line_refs[:3], "dataset": list(DATASETS)},
    )
    labels = fuzz_all(target, subtests)
    assert "GET /v1/invoices/{invoice_id}/lines" in labels
