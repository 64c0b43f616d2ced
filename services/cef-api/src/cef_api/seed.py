"""Start-up seeding: a brand-new CEF loads the reference files of a directory (the demo world)."""

from __future__ import annotations

from pathlib import Path

import structlog
from sqlalchemy import Engine
from sqlmodel import Session

from cef_api.reference import repository
from cef_api.reference.parsers import FILENAMES, LOAD_ORDER
from cef_api.reference.router import load_and_commit
from cef_api.tokeniser_client import TokeniserClient
from cef_common.auth import Principal

log = structlog.get_logger(__name__)

SEED_PRINCIPAL = Principal(
    sub="cef-api:seed", issuer="cef-api", scopes=frozenset({"reference:write"}), client="cef-api"
)


def seed_reference(
    engine: Engine,
    tokeniser: TokeniserClient,
    directory: Path,
    wait_seconds: float,
    *,
    fingerprint_key: bytes | None = None,
) -> list[str]:
    """Loads every reference file found in `directory` unless reference data was ever loaded."""
    with Session(engine) as session:
        if repository.any_loaded(session):
            return []
    found = [(d, directory / FILENAMES[d]) for d in LOAD_ORDER if (directory / FILENAMES[d]).is_file()]
    if not found:
        log.warning("seed_reference_dir_empty", directory=str(directory))
        return []
    tokeniser.wait_until_ready(wait_seconds)
    loaded = []
    for dataset, path in found:
        result = load_and_commit(
            engine,
            dataset=dataset,
            data=path.read_bytes(),
            tokeniser=tokeniser,
            principal=SEED_PRINCIPAL,
            actor=SEED_PRINCIPAL.sub,
            fingerprint_key=fingerprint_key,
        )
        log.info("reference_seeded", dataset=dataset, rows=result.rows, version=result.version)
        loaded.append(dataset)
    return loaded
