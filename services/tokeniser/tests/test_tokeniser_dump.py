"""A dump of the tokeniser's database holds no identifier in clear: every table, every byte."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url
from tokeniser_test_support import WORK

from cef_common.testing import app_client
from cef_tokeniser.config import Settings
from cef_tokeniser.main import create_app

NHS_NUMBERS = ["9999083013", "9999099602", "9992199350", "9434765919"]
NHS_WRITTEN = ["9999083013", "999 909 9602", "999-219-9350", " 9434765919 "]
DATES = ["2007-10-23", "1969-09-01", "1947-06-26"]
POSTCODES = ["TF1 7DJ", "TS24 1XF", "TS1 9DY"]
POSTCODES_WRITTEN = ["tf17dj", "TS24 1XF", "ts1 9dy"]


def _needles() -> list[str]:
    """Every way an identifier could sit in a dump: as given, standardised, compact, and as hex of
    its bytes (a bytea column in clear would show that way)."""
    values = NHS_NUMBERS + DATES + POSTCODES
    forms = set(values) | {v.replace(" ", "") for v in POSTCODES} | {v.strip() for v in NHS_WRITTEN}
    forms |= {f"{n[:3]} {n[3:6]} {n[6:]}" for n in NHS_NUMBERS} | {d.replace("-", "") for d in DATES}
    forms |= {f.encode().hex() for f in list(forms)}
    return sorted(forms)


def _sqlite_dump(url: str) -> str:
    path = Path(make_url(url).database or "")
    texts = []
    with sqlite3.connect(path) as conn:
        texts.append("\n".join(conn.iterdump()))
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - names from the catalogue
                texts.append(repr(row))
    for file in path.parent.glob(path.name + "*"):  # the database, its WAL and shared memory files
        texts.append(file.read_bytes().decode("latin-1"))
    assert "token_original" in texts[0]
    assert "data_key" in texts[0]
    return "\n".join(texts)


def _postgres_dump(url: str) -> str:
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    texts = [
        subprocess.run(["pg_dump", "--no-owner", libpq], check=True, capture_output=True, text=True).stdout
    ]
    with psycopg.connect(libpq) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        assert {"token_original", "data_key", "audit_outbox"} <= set(tables)
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):  # type: ignore[arg-type]
                texts.append(repr(row))
                texts.extend(bytes(v).decode("latin-1") for v in row if isinstance(v, bytes | memoryview))
    return "\n".join(texts)


async def test_a_database_dump_holds_no_identifier_in_clear(
    db_url: str, db_kind: str, make_settings: Callable[..., Settings], headers: Any, master_key_hex: str
) -> None:
    if db_kind == "postgresql" and subprocess.run(["which", "pg_dump"], capture_output=True).returncode:
        pytest.skip("pg_dump is not installed")
    app = create_app(make_settings(db_url))
    async with app_client(app) as c:
        issued: dict[str, list[str]] = {}
        for kind, values in [
            ("nhs_number", NHS_WRITTEN),
            ("date_of_birth", DATES),
            ("postcode", POSTCODES_WRITTEN),
        ]:
            for context in ("cef", "research"):
                r = await c.post(
                    "/v1/tokenise",
                    json={"kind": kind, "values": values, "context": context},
                    headers=headers("tokenise"),
                )
                assert r.status_code == 200
                assert r.json()["errors"] == []
                issued[f"{kind}/{context}"] = r.json()["tokens"]
        app.state.token_service.keyring.rotate("nhs_number", "cef")
        r = await c.post(
            "/v1/retokenise",
            json={"kind": "nhs_number", "tokens": issued["nhs_number/cef"]},
            headers=headers("tokenise"),
        )
        assert r.status_code == 200
        for kind in ("nhs_number", "date_of_birth", "postcode"):
            r = await c.post(
                "/v1/detokenise",
                json={"kind": kind, "tokens": issued[f"{kind}/cef"], "purpose": "dump test", **WORK},
                headers=headers("detokenise", peer=True),
            )
            assert None not in r.json()["values"]
        await c.post(
            "/v1/detokenise",
            json={"kind": "postcode", "tokens": issued["postcode/cef"], "purpose": "", **WORK},
            headers=headers("detokenise", peer=True),
        )
    dump = _sqlite_dump(db_url) if db_kind == "sqlite" else _postgres_dump(db_url)
    # The dump is real: it holds the issued tokens and the audit events.
    assert issued["nhs_number/research"][0] in dump
    assert "patient.detokenise" in dump
    found = [needle for needle in _needles() if needle in dump]
    assert found == []
    assert master_key_hex not in dump
    assert bytes.fromhex(master_key_hex).decode("latin-1") not in dump
