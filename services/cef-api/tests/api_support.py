"""Helpers of the cef-api tests: a real tokeniser on a free port, the cef-api app in process."""

from __future__ import annotations

import contextlib
import csv
import io
import re
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cef_api.config import Settings
from cef_api.main import create_app
from cef_common.keys import jwks_path_for, load_signing_key
from cef_common.settings import TrustedIssuer
from cef_common.testing import DevIssuer, ServerThread, app_client

REPO = Path(__file__).resolve().parents[3]
if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))

import generate_world  # noqa: E402


@dataclass
class Tokeniser:
    url: str
    server: ServerThread


def start_tokeniser(data_dir: Path, database_url: str) -> ServerThread:
    """The real tokeniser, trusting cef-api's service key (as `cef up` configures it)."""
    from cef_tokeniser.config import Settings as TokeniserSettings
    from cef_tokeniser.keys import ensure_dev_master_key
    from cef_tokeniser.main import create_app as create_tokeniser

    keys = data_dir / "keys"
    load_signing_key(keys / "cef-api.pem", create=True)
    master = keys / "tokeniser-master.key"
    ensure_dev_master_key(master)
    settings = TokeniserSettings(
        data_dir=data_dir,
        database_url=database_url,
        environment="test",
        dev_issuer_enabled=True,
        master_key_file=master,
        audit_url="http://127.0.0.1:9",
        trusted_issuers=[
            TrustedIssuer(
                issuer="cef-api",
                jwks_file=jwks_path_for(keys / "cef-api.pem"),
                allowed_scopes=["tokenise", "detokenise"],
            )
        ],
    )
    return ServerThread(create_tokeniser(settings))


def api_settings(data_dir: Path, database_url: str, tokeniser_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "environment": "test",
        "dev_issuer_enabled": True,
        "tokeniser_url": tokeniser_url,
        "audit_url": "http://127.0.0.1:9",
        "http_retries": 0,
        # Worker processes take a second or two to start: tests that want them ask for them.
        "validation_processes": 0,
        **overrides,
    }
    return Settings(**values)


@dataclass
class Api:
    client: httpx.AsyncClient
    app: Any
    settings: Settings
    issuer: DevIssuer

    def h(self, scope: str, org: str | None = None, sub: str = "tester") -> dict[str, str]:
        return self.issuer.headers(scope, org=org, sub=sub)

    async def load_world(self, world: generate_world.World) -> None:
        for dataset, body in world.reference_files().items():
            r = await self.client.put(
                f"/v1/reference/{dataset}",
                content=body,
                headers={**self.h("reference:write"), "Content-Type": "text/csv"},
            )
            assert r.status_code == 200, r.text

    async def submit(
        self,
        header: dict[str, Any] | bytes,
        backing: bytes,
        *,
        org: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        raw = header if isinstance(header, bytes) else generate_world.json_bytes(header)
        if org is None and isinstance(header, dict):
            org = header.get("provider_code")
        files = {
            "invoice": ("invoice.json", raw, "application/json"),
            "backing_data": ("backing.csv", backing, "text/csv"),
        }
        return await self.client.post(
            "/v1/invoices", files=files, headers={**self.h("invoices:submit", org=org), **(headers or {})}
        )

    async def lines(self, invoice_id: str, scope: str, org: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 500}
            if cursor:
                params["cursor"] = cursor
            r = await self.client.get(
                f"/v1/invoices/{invoice_id}/lines", params=params, headers=self.h(scope, org=org)
            )
            assert r.status_code == 200, r.text
            page = r.json()
            items += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return items


@contextlib.asynccontextmanager
async def running_api(settings: Settings, issuer: DevIssuer) -> AsyncIterator[Api]:
    app = create_app(settings)
    async with app_client(app) as client:
        yield Api(client, app, settings, issuer)


def identifiers(world: generate_world.World) -> tuple[set[str], set[str], set[str]]:
    """The world's NHS numbers, dates of birth (those that are no other date of it) and postcodes."""
    nhs = {p.nhs_number for p in world.patients}
    dobs = {p.date_of_birth.isoformat() for p in world.patients}
    postcodes = {p.postcode.replace(" ", "").upper() for p in world.patients if p.postcode}
    other_dates: set[str] = set()
    for inv in world.invoices:
        for row in csv.DictReader(io.StringIO(inv.backing.decode("utf-8-sig"))):
            if row["postcode"].strip():
                postcodes.add(re.sub(r"\s", "", row["postcode"]).upper())
            other_dates.update(row[c].strip() for c in ("activity_date", "discharge_date"))
    for p in world.patients:
        other_dates.update(d.isoformat() for _, f, t in p.registrations for d in (f, t) if d)
    return nhs, dobs - other_dates, postcodes


def identifiers_in(texts: Iterable[tuple[str, str]], world: generate_world.World) -> list[str]:
    """Where any of the world's identifiers appears in `texts` ((place, text) pairs), in any spelling
    of an NHS number (spaces, hyphens)."""
    nhs, dobs, postcodes = identifiers(world)
    assert dobs
    found = []
    for place, text in texts:
        squashed = re.sub(r"[\s-]", "", text)
        found += [f"NHS number in {place}" for d in re.findall(r"\d{10}", squashed) if d in nhs]
        found += [f"DOB in {place}" for d in re.findall(r"\d{4}-\d{2}-\d{2}", text) if d in dobs]
        upper = re.sub(r"\s", "", text).upper()
        found += [f"postcode in {place}" for p in postcodes if p in upper]
    return found
