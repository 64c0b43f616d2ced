"""No NHS number, date of birth or postcode appears in anything the services log or answer, while
the whole sample world goes through real processes the way users drive them."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e


CEF = [sys.executable, "-m", "cef_cli.main"]


def _identifiers(world: Path) -> set[str]:
    """Every identifier of the world, in the spellings a leak could take (dates that are also
    activity or invoice dates are left out: those may rightly appear)."""
    found: set[str] = set()
    not_identifying: set[str] = set()
    with (world / "reference/patients.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            found.update(v for v in (row["nhs_number"], row["date_of_birth"], row["postcode"]) if v)
    for backing in (world / "invoices").glob("*.csv"):
        with backing.open(newline="", encoding="utf-8-sig") as f:
            for row in csv.DictReader(f):
                for column in ("nhs_number", "date_of_birth", "postcode"):
                    value = (row.get(column) or "").strip()
                    if column == "nhs_number":
                        value = re.sub(r"[ -]", "", value)
                    if len(value) >= 6:
                        found.add(value)
                not_identifying.update(row.get(c) or "" for c in ("activity_date", "discharge_date"))
    for header in (world / "invoices").glob("*.json"):
        not_identifying.update(str(v) for v in json.loads(header.read_text()).values())
    spellings = set()
    for value in found - not_identifying:
        spellings |= {value, value.replace(" ", ""), value.lower()}
    return spellings


def test_the_sample_world_leaves_no_identifier_in_logs_or_answers(
    up: Any, shared_dir: Path, tmp_path: Path
) -> None:
    world = shared_dir / "data/sample"
    reference = tmp_path / "reference"
    shutil.copytree(world / "reference", reference)
    shutil.copy(shared_dir / "data/reference/epraccur.csv", reference / "epraccur.csv")
    answers = []
    r = subprocess.run(
        [*CEF, "reference", "load", str(reference), "--data-dir", str(up.data_dir)],
        env=up.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    answers.append(r.stdout + r.stderr)
    for name in (world / "invoices/ORDER").read_text().split()[:4]:
        r = subprocess.run(
            [
                *CEF,
                "submit",
                str(world / f"invoices/{name}.json"),
                str(world / f"invoices/{name}.csv"),
                "--data-dir",
                str(up.data_dir),
            ],
            env=up.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        answers.append(r.stdout + r.stderr)
    # What CEF staff see: line detail with tokens, read over HTTP.
    invoices = httpx.get(
        f"{up.url('cef-api')}/v1/invoices?limit=100",
        headers={"Authorization": f"Bearer {up.token('invoices:validate', 'cef-api', org='00M')}"},
    )
    answers.append(invoices.text)
    for item in invoices.json()["items"]:
        lines = httpx.get(
            f"{up.url('cef-api')}/v1/invoices/{item['id']}/lines?limit=1000",
            headers={"Authorization": f"Bearer {up.token('invoices:validate', 'cef-api', org='00M')}"},
        )
        answers.append(lines.text)
    audit = httpx.get(
        f"{up.url('audit')}/v1/events?limit=1000",
        headers={"Authorization": f"Bearer {up.token('audit:read', 'audit')}"},
    )
    assert audit.status_code == 200
    answers.append(json.dumps(audit.json()))

    logged = up.log.read_text()
    assert "invoice.submit" in audit.text
    haystack = logged + "\n".join(answers)
    # Whole words only for spellings without separators: a short postcode could otherwise match
    # inside a base64url token by chance.
    words = set(re.findall(r"[A-Za-z0-9]+", haystack))
    leaks = sorted(v for v in _identifiers(world) if (v in words if v.isalnum() else v in haystack))
    assert leaks == [], f"{len(leaks)} identifiers leaked, e.g. {leaks[:3]}"
