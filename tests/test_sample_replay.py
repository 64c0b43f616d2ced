"""The whole sample world (sample-v2: the answers of the v1 and v2 rules) through the real HTTP API of
in-process services on free ports (real tokeniser, audit and cef-api): every line and every invoice
summary must match the expected files exactly, every file of refused/ is refused whole naming its two
clashing header cells, and afterwards no NHS number, date of birth or full postcode may be in the
CEF database."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from cef_common.keys import jwks_path_for, load_signing_key
from cef_common.settings import TrustedIssuer
from cef_common.testing import SHARED_DIR, DevIssuer, ServerThread, database_values

SAMPLE = SHARED_DIR / "data/sample-v2"
EPRACCUR = SHARED_DIR / "data/reference/epraccur.csv"
FILES = {
    "gp-practices": "epraccur.csv",
    "providers": "providers.csv",
    "tariff": "tariff.csv",
    "specialised-services": "specialised_services.csv",
    "postcode-districts": "postcode_districts.csv",
    "patients": "patients.csv",
    "registrations": "registrations.csv",
    "originating-commissioners": "originating_commissioners.csv",
    "devolved-districts": "devolved_districts.csv",
    "contracts": "contracts.csv",
    "prior-approvals": "prior_approvals.csv",
}
# The date columns of the v2 reference datasets.
DATASET_DATES = {"from", "to", "valid_from", "valid_to"}
# The names real extracts give the backing-data columns that carry identifiers or dates
# (validation-rules.md, "Header names"), after trimming, lower-casing and turning each run of
# spaces and hyphens into one underscore.
COLUMN_NAMES = {
    "nhs_number": {"nhs_number", "nhs_no"},
    "date_of_birth": {"date_of_birth", "person_birth_date", "dob"},
    "postcode": {"postcode", "postcode_of_usual_address", "postcode_usual_address"},
    "activity_date": {"activity_date", "admission_date", "appointment_date"},
    "discharge_date": {"discharge_date", "discharge_date_hospital_provider_spell"},
}

pytestmark = pytest.mark.skipif(
    not (SAMPLE / "expected").is_dir() or not EPRACCUR.is_file(), reason="no sample world"
)


def _issuer(keys: Path, name: str, scopes: list[str]) -> TrustedIssuer:
    load_signing_key(keys / f"{name}.pem", create=True)
    return TrustedIssuer(issuer=name, jwks_file=jwks_path_for(keys / f"{name}.pem"), allowed_scopes=scopes)


@pytest.fixture
def system(data_dir: Path, database_factory: Any, dev_issuer: DevIssuer) -> Iterator[dict[str, Any]]:
    from cef_api.config import Settings as ApiSettings
    from cef_api.main import MIGRATIONS as API_MIGRATIONS
    from cef_api.main import create_app as create_api
    from cef_audit.config import Settings as AuditSettings
    from cef_audit.main import MIGRATIONS as AUDIT_MIGRATIONS
    from cef_audit.main import create_app as create_audit
    from cef_tokeniser.config import Settings as TokeniserSettings
    from cef_tokeniser.keys import ensure_dev_master_key
    from cef_tokeniser.main import MIGRATIONS as TOKENISER_MIGRATIONS
    from cef_tokeniser.main import create_app as create_tokeniser

    keys = data_dir / "keys"
    master = keys / "tokeniser-master.key"
    ensure_dev_master_key(master)
    api_issuer = _issuer(keys, "cef-api", ["audit:write", "tokenise", "detokenise"])
    tok_issuer = _issuer(keys, "tokeniser", ["audit:write"])
    common = {"data_dir": data_dir, "environment": "test", "dev_issuer_enabled": True}
    audit = ServerThread(
        create_audit(
            AuditSettings(
                **common,
                database_url=database_factory("sqlite", AUDIT_MIGRATIONS),
                trusted_issuers=[api_issuer, tok_issuer],
            )
        )
    )
    with audit:
        tokeniser = ServerThread(
            create_tokeniser(
                TokeniserSettings(
                    **common,
                    database_url=database_factory("sqlite", TOKENISER_MIGRATIONS),
                    master_key_file=master,
                    audit_url=audit.url,
                    trusted_issuers=[api_issuer],
                )
            )
        )
        with tokeniser:
            api_db = database_factory("sqlite", API_MIGRATIONS)
            api = ServerThread(
                create_api(
                    ApiSettings(
                        **common,
                        database_url=api_db,
                        tokeniser_url=tokeniser.url,
                        audit_url=audit.url,
                        trusted_issuers=[],
                    )
                )
            )
            with api:
                yield {"url": api.url, "db": api_db, "issuer": dev_issuer, "audit": audit.url}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def _multipart(name: str, folder: str = "invoices") -> dict[str, Any]:
    return {
        "invoice": ("invoice.json", (SAMPLE / folder / f"{name}.json").read_bytes(), "application/json"),
        "backing_data": (f"{name}.csv", (SAMPLE / folder / f"{name}.csv").read_bytes(), "text/csv"),
    }


def _column(cell: str) -> str | None:
    """The backing-data column a header cell names, among COLUMN_NAMES (None: another one)."""
    name = re.sub(r"[ -]+", "_", cell.strip().lower())
    return next((column for column, names in COLUMN_NAMES.items() if name in names), None)


def _backing_rows(path: Path) -> list[dict[str, str]]:
    """A backing-data file's rows by column name, whatever names its header uses."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    columns = [_column(cell) for cell in rows[0]]
    return [{c: v for c, v in zip(columns, row, strict=False) if c is not None} for row in rows[1:]]


def test_sample_world_replays_exactly(system: dict[str, Any]) -> None:
    issuer: DevIssuer = system["issuer"]
    with httpx.Client(base_url=system["url"], timeout=120) as client:
        admin = issuer.headers("reference:write")
        for dataset, filename in FILES.items():
            path = EPRACCUR if dataset == "gp-practices" else SAMPLE / "reference" / filename
            r = client.put(
                f"/v1/reference/{dataset}",
                content=path.read_bytes(),
                headers={**admin, "Content-Type": "text/csv"},
            )
            assert r.status_code == 200, r.text
            assert r.json()["dataset"] == dataset
        got_lines: dict[tuple[str, str], dict[str, Any]] = {}
        got_summaries: dict[str, dict[str, Any]] = {}
        for name in (SAMPLE / "invoices" / "ORDER").read_text().split():
            provider = name.split("-")[0]
            headers = issuer.headers("invoices:submit", org=provider)
            r = client.post("/v1/invoices", files=_multipart(name), headers=headers)
            assert r.status_code in (201, 202), r.text
            invoice = r.json()
            while invoice["status"] not in ("validated", "failed"):
                invoice = client.get(f"/v1/invoices/{invoice['id']}", headers=headers).json()
            assert invoice["status"] == "validated", invoice
            got_summaries[invoice["invoice_number"]] = invoice["summary"]
            cursor = None
            while True:
                params: dict[str, Any] = {"limit": 50}
                if cursor:
                    params["cursor"] = cursor
                page = client.get(
                    f"/v1/invoices/{invoice['id']}/lines", params=params, headers=headers
                ).json()
                for item in page["items"]:
                    got_lines[(name, item["line_ref"])] = item
                cursor = page["next_cursor"]
                if not cursor:
                    break
        refused = []
        for want in _read_csv(SAMPLE / "refused" / "expected_refusals.csv"):
            name = want["invoice_number"]
            headers = issuer.headers("invoices:submit", org=name.split("-")[0])
            r = client.post("/v1/invoices", files=_multipart(name, "refused"), headers=headers)
            if r.status_code != 422 or want["first_cell"] not in r.text or want["second_cell"] not in r.text:
                refused.append(f"refused/{name}: HTTP {r.status_code} {r.text[:200]}")
        assert refused == []

    assert_sample_outcomes(got_lines, got_summaries)

    _assert_no_identifiers(system["db"])


def assert_sample_outcomes(
    got_lines: dict[tuple[str, str], dict[str, Any]], got_summaries: dict[str, dict[str, Any]]
) -> None:
    """Every line and invoice summary the system answered (lines by (invoice number, line_ref))
    is exactly the sample's expected one, and there is no other."""
    mismatches = []
    expected_lines = _read_csv(SAMPLE / "expected" / "line_outcomes.csv")
    for want in expected_lines:
        got = got_lines.get((want["invoice_number"], want["line_ref"]))
        if got is None:
            mismatches.append(f"{want['invoice_number']}/{want['line_ref']}: missing")
            continue
        have = (
            got["outcome"],
            ";".join(sorted(got["reasons"])),
            got["responsible_commissioner"] or "",
            got["expected_amount"] or "",
        )
        exp = (want["outcome"], want["reasons"], want["responsible_commissioner"], want["expected_amount"])
        if have != exp:
            mismatches.append(f"{want['invoice_number']}/{want['line_ref']}: got {have}, want {exp}")
    assert mismatches == []
    assert len(got_lines) == len(expected_lines)
    for want in _read_csv(SAMPLE / "expected" / "invoice_summaries.csv"):
        summary = got_summaries[want["invoice_number"]]
        assert {k: str(v) for k, v in summary.items()} == {
            k: v for k, v in want.items() if k != "invoice_number"
        }


def _identifiers() -> tuple[set[str], set[str], set[str]]:
    """NHS numbers, dates of birth and full postcodes of the sample world (trace and backing data)."""
    nhs, dobs, postcodes, other_dates = set(), set(), set(), set()
    for row in _read_csv(SAMPLE / "reference" / "patients.csv"):
        nhs.add(row["nhs_number"].strip())
        if row["date_of_birth"].strip():
            dobs.add(row["date_of_birth"].strip())
        if row["postcode"].strip():
            postcodes.add(row["postcode"].strip())
    for row in _read_csv(SAMPLE / "reference" / "registrations.csv"):
        other_dates.update(v.strip() for k, v in row.items() if k.startswith("registered") and v.strip())
    for dataset in ("originating_commissioners", "prior_approvals", "contracts"):
        for row in _read_csv(SAMPLE / "reference" / f"{dataset}.csv"):
            if "nhs_number" in row:
                nhs.add(row["nhs_number"].strip())
            # Their validity dates are no birth dates, whatever day they fall on.
            other_dates.update(v.strip() for k, v in row.items() if k in DATASET_DATES and v.strip())
    for path in [*(SAMPLE / "invoices").glob("*.csv"), *(SAMPLE / "refused").glob("*.csv")]:
        for row in _backing_rows(path):
            digits = re.sub(r"[\s-]", "", row.get("nhs_number") or "")
            if len(digits) == 10 and digits.isdigit():
                nhs.add(digits)
            if (row.get("date_of_birth") or "").strip():
                dobs.add(row["date_of_birth"].strip())
            if (row.get("postcode") or "").strip():
                postcodes.add(row["postcode"].strip())
            other_dates.update((row.get(c) or "").strip() for c in ("activity_date", "discharge_date"))
    # A date that is also some activity or registration date cannot tell a birth date apart.
    return nhs, dobs - other_dates, postcodes


def _assert_no_identifiers(url: str) -> None:
    nhs, dobs, postcodes = _identifiers()
    assert nhs
    assert dobs
    assert postcodes
    squashed = {re.sub(r"\s", "", p).upper() for p in postcodes}
    engine = sa.create_engine(url)
    try:
        found: list[str] = []
        for table, text in database_values(engine):
            for digits in re.findall(r"\d{10}", re.sub(r"[\s-]", "", text)):
                if digits in nhs:
                    found.append(f"NHS number in {table}")
            for d in re.findall(r"\d{4}-\d{2}-\d{2}", text):
                if d in dobs:
                    found.append(f"date of birth in {table}")
            upper = re.sub(r"\s", "", text).upper()
            if any(p in upper for p in squashed if len(p) >= 5):
                found.append(f"postcode in {table}")
        assert found == []
    finally:
        engine.dispose()
