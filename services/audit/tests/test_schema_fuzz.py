"""Schema fuzzing of the audit service: no 5xx and no answer outside its own OpenAPI document,
whatever an auditor, a producing service, or a caller without a valid token sends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from audit_test_support import make_event

from cef_audit.config import Settings
from cef_audit.main import create_app
from cef_common.schema_fuzz import ANONYMOUS, GARBAGE, Caller, FuzzTarget, database_kinds, fuzz_all
from cef_common.testing import DevIssuer, app_client

pytestmark = [pytest.mark.fuzz, pytest.mark.parametrize("db_kind", database_kinds())]


def _authorised(operation: Any) -> list[str]:
    if operation.path.startswith("/v1/events") and operation.method == "post":
        return ["producer"]
    return ["auditor"] if operation.path.startswith("/v1/") else []


async def test_no_server_error_and_every_answer_as_documented(
    audit_db: str, make_settings: Callable[..., Settings], dev_issuer: DevIssuer, subtests: Any
) -> None:
    settings = make_settings(audit_db, checkpoint_every_events=5)
    # A log with a few events and checkpoints, so that reads and verification have something to read.
    async with app_client(create_app(settings)) as client:
        writer = dev_issuer.headers("audit:write", sub="cef-api", aud="audit")
        events = [make_event(n).model_dump(mode="json") for n in range(12)]
        r = await client.post("/v1/events", json={"events": events}, headers=writer)
        assert r.status_code == 201, r.text
    callers = [
        Caller("auditor", dev_issuer.headers("audit:read", sub="auditor-1", org="X26", aud="audit")),
        Caller("producer", dev_issuer.headers("audit:write", sub="cef-api", aud="audit")),
        Caller("cef-api-audience", dev_issuer.headers("audit:read", sub="auditor-1", aud="cef-api")),
        Caller("finance", dev_issuer.headers("invoices:read", org="X26", aud="audit")),
        ANONYMOUS,
        GARBAGE,
    ]
    target = FuzzTarget(
        create_app(settings), callers, authorised=_authorised, known_path_values={"length": ["5", "10"]}
    )
    labels = fuzz_all(target, subtests)
    assert "GET /v1/checkpoints/{length}" in labels
