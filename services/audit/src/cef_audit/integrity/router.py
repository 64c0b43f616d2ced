"""Verification of the whole chain and the signed checkpoints (audit:read; each call audited)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from cef_audit.access import audit_log, record_own, require_reader
from cef_audit.integrity.schemas import CheckpointOut, KeptCheckpoints, VerifyOut
from cef_audit.integrity.verify import verify_log
from cef_audit.log.sequencer import AuditLog, checkpoint_at, latest_checkpoint
from cef_common.auth import Principal
from cef_common.errors import NotFound
from cef_common.openapi import problems
from cef_common.params import MAX_JSON_INTEGER
from cef_common.redact import digest

router = APIRouter(tags=["integrity"])

ReaderDep = Annotated[Principal, Depends(require_reader)]
LogDep = Annotated[AuditLog, Depends(audit_log)]


def _verify(log: AuditLog, principal: Principal, kept: list[str]) -> dict[str, Any]:
    report = verify_log(log.engine, log.signing_key.jwks(), kept)
    record_own(
        log,
        principal=principal,
        action="execute",
        type="audit.verify",
        outcome="success",
        detail={
            "valid": report.valid,
            "length": report.length,
            "first_bad_seq": report.first_bad_seq,
            "kept_checkpoints": len(kept),
        },
    )
    return asdict(report)


@router.get("/v1/verify", response_model=VerifyOut, summary="Recompute the chain and check every checkpoint")
def verify(principal: ReaderDep, log: LogDep) -> dict[str, Any]:
    return _verify(log, principal, [])


@router.post(
    "/v1/verify",
    response_model=VerifyOut,
    summary="As GET, and also check checkpoints the auditor kept (catches a rewrite of the whole chain)",
    responses=problems(400, described={400: "the body could not be read as UTF-8 JSON"}),
)
def verify_with_kept(body: KeptCheckpoints, principal: ReaderDep, log: LogDep) -> dict[str, Any]:
    return _verify(log, principal, body.checkpoints)


def _checkpoint(log: AuditLog, principal: Principal, length: int | None) -> dict[str, Any]:
    with log.engine.connect() as conn:
        cp = latest_checkpoint(conn) if length is None else checkpoint_at(conn, length)
    record_own(
        log,
        principal=principal,
        action="read",
        type="audit.query",
        subtype="checkpoint",
        # A length is the caller's number until a checkpoint answers to it (ten digits may be an
        # NHS number): unknown ones are recorded as a digest.
        detail={"latest": True}
        if length is None
        else {"length": length if cp is not None else digest(str(length))},
    )
    if cp is None:
        if length is None:
            raise NotFound(
                "no checkpoint has been signed yet: one follows the first events", code="no-checkpoint"
            )
        raise NotFound(
            "no checkpoint was signed at that length; GET /v1/checkpoints for the latest",
            code="no-checkpoint",
        )
    return cp.as_json()


_NO_CHECKPOINT = problems(404, described={404: "no-checkpoint: none is signed yet, or none at this length"})


@router.get(
    "/v1/checkpoints",
    response_model=CheckpointOut,
    summary="The latest signed checkpoint (or at ?length=)",
    responses=_NO_CHECKPOINT,
)
def get_checkpoint(
    principal: ReaderDep,
    log: LogDep,
    length: Annotated[
        int | None, Query(ge=1, le=MAX_JSON_INTEGER, description="the checkpoint at exactly this length")
    ] = None,
) -> dict[str, Any]:
    return _checkpoint(log, principal, length)


@router.get(
    "/v1/checkpoints/{length}",
    response_model=CheckpointOut,
    summary="The checkpoint at this length",
    responses=_NO_CHECKPOINT,
)
def get_checkpoint_at(
    length: Annotated[int, Path(le=MAX_JSON_INTEGER, description="the length the checkpoint was signed at")],
    principal: ReaderDep,
    log: LogDep,
    request: Request,
) -> dict[str, Any]:
    if length < 1:
        raise NotFound("checkpoints start at length 1", code="no-checkpoint")
    return _checkpoint(log, principal, length)
