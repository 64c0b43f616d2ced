"""HTTP endpoints of the reference data: thin, the work is in `service`."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Request
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from cef_api.reference import repository, service
from cef_api.reference.schemas import DatasetOut, DatasetsOut, LoadOut
from cef_api.tokeniser_client import TokeniserClient
from cef_common.auth import Principal, require_scopes
from cef_common.errors import AppError, Unprocessable
from cef_common.openapi import problems

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/reference", tags=["reference"])

Writer = Annotated[Principal, Depends(require_scopes("reference:write"))]

CSV_TYPES = ("text/csv", "application/csv", "text/plain", "application/octet-stream")


def load_and_commit(
    engine: Engine,
    *,
    dataset: str,
    data: bytes,
    tokeniser: TokeniserClient,
    principal: Principal | None,
    actor: str,
    fingerprint_key: bytes | None = None,
) -> service.LoadResult:
    """One load in its own transaction (a refused load is audited in another); then the versions it
    superseded are deleted, unless an open invoice reads them, a batch at a time."""
    try:
        with Session(engine) as session:
            result = service.load_dataset(
                session,
                dataset=dataset,
                data=data,
                tokeniser=tokeniser,
                principal=principal,
                actor=actor,
                # For the operator of a large load: how far it is (counts only).
                progress=lambda rows: log.info("reference_load_progress", dataset=dataset, rows=rows),
                fingerprint_key=fingerprint_key,
            )
            session.commit()
    except AppError as exc:
        if exc.status < 500 and exc.code != "unknown-dataset":
            with Session(engine) as session:
                service.record_refused_load(session, dataset=dataset, principal=principal, code=exc.code)
                session.commit()
        raise
    pruned = service.prune_in_batches(engine)
    log.info("reference_superseded_pruned", dataset=dataset, rows=pruned)
    return result


# The body is read whole by hand (any of CSV_TYPES), so FastAPI is told what it is.
_CSV_BODY = {
    "requestBody": {
        "required": True,
        "description": "The dataset's file as published (e.g. tariff.csv for tariff); it replaces the "
        "version in force whole, or nothing of it is kept",
        "content": {
            "text/csv": {
                "schema": {"type": "string"},
                "example": "hrg_code,hrg_name,point_of_delivery,price,trim_point_days,excess_bed_day_price\n"
                "DD73C,Synthetic HRG DD73C,EL,2970.32,12,281.7\n",
            }
        },
    }
}


@router.put(
    "/{dataset}",
    response_model=LoadOut,
    summary="Replace a reference dataset (text/csv body)",
    openapi_extra=_CSV_BODY,
    responses=problems(
        409,
        503,
        described={
            404: "dataset-unknown: the path names no reference dataset",
            409: "reference-load-conflict: another load of this dataset finished first; send it again",
            503: "the tokeniser is unavailable (patients and registrations are tokenised): nothing was "
            "loaded, retry later",
        },
    ),
)
async def put_dataset(dataset: str, request: Request, principal: Writer) -> LoadOut:
    ctype = request.headers.get("content-type", "text/csv").split(";")[0].strip().lower()
    if ctype not in CSV_TYPES:
        raise Unprocessable(
            # The header's value is not quoted: it is the caller's text.
            "send the dataset as the request body with Content-Type text/csv",
            code="unsupported-content-type",
        )
    data = await request.body()
    result = await run_in_threadpool(
        load_and_commit,
        request.app.state.engine,
        dataset=dataset,
        data=data,
        tokeniser=request.app.state.tokeniser,
        principal=principal,
        actor=principal.sub,
        fingerprint_key=request.app.state.fingerprint_key,
    )
    return LoadOut(
        dataset=result.dataset,
        rows=result.rows,
        version=result.version,
        key_version=result.key_version,
        added=result.added,
        kept=result.kept,
        retired=result.retired,
    )


@router.get("", response_model=DatasetsOut, summary="The version in force of every dataset")
def list_datasets(request: Request, principal: Writer) -> DatasetsOut:
    with Session(request.app.state.engine) as session:
        versions = repository.current_versions(session)
    return DatasetsOut(
        items=[
            DatasetOut(
                dataset=v.dataset,
                version=v.version,
                rows=v.rows,
                key_version=v.key_version,
                dob_key_version=v.dob_key_version,
                loaded_at=v.loaded_at,
                loaded_by=v.loaded_by,
            )
            for v in sorted(versions.values(), key=lambda v: v.dataset)
        ]
    )
