"""Re-identification over real processes: CEF staff re-identify one line's patient with
`cef invoices reidentify`, the CEF API asks the tokeniser with its own token, and an auditor finds
the re-identification with `cef audit reidentifications`, by person and by patient token."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

CEF = ["-m", "cef_cli.main"]


def _cef(up: Any, *args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run(
        [sys.executable, *CEF, *args, "--data-dir", str(up.data_dir)],
        capture_output=True,
        text=True,
        env={**up.env, "COLUMNS": "200"},
        timeout=120,
    )


def test_staff_re_identify_a_line_and_the_auditor_finds_it(up: Any, repo_root: Path) -> None:
    header = (repo_root / "demo/invoices/RTR-201904-0000.json").read_bytes()
    backing = (repo_root / "demo/invoices/RTR-201904-0000.csv").read_bytes()
    submitter = {"Authorization": f"Bearer {up.token('invoices:submit', 'cef-api', org='RTR')}"}
    r = httpx.post(
        f"{up.url('cef-api')}/v1/invoices",
        files={
            "invoice": ("i.json", header, "application/json"),
            "backing_data": ("b.csv", backing, "text/csv"),
        },
        headers=submitter,
        timeout=120,
    )
    assert r.status_code == 201, r.text
    invoice = r.json()
    staff = {"Authorization": f"Bearer {up.token('invoices:validate', 'cef-api', org='00C')}"}
    lines = httpx.get(
        f"{up.url('cef-api')}/v1/invoices/{invoice['id']}/lines", params={"limit": 5000}, headers=staff
    ).json()["items"]
    line = next(x for x in lines if x["patient_token"])
    rows = {r["line_ref"].strip(): r for r in csv.DictReader(io.StringIO(backing.decode("utf-8-sig")))}
    nhs_number = re.sub(r"\D", "", rows[line["line_ref"]]["nhs_number"])

    done = _cef(
        up,
        "invoices",
        "reidentify",
        invoice["id"],
        line["line_ref"],
        "--purpose",
        "resolve-query",
        "--reason",
        "Checking the registration behind the query on this line.",
        "--org",
        "00C",
        "--sub",
        "staff-e2e",
    )
    assert done.returncode == 0, done.stderr
    assert nhs_number in done.stdout
    assert "do not copy" in done.stderr.lower()

    # A provider asking the same is told the line does not exist.
    provider = _cef(
        up, "invoices", "reidentify", invoice["id"], line["line_ref"], "--purpose", "resolve-query",
        "--reason", "Trying to see who the patient is.", "--org", "RTR",
    )  # fmt: skip
    assert provider.returncode != 0
    assert nhs_number not in provider.stdout + provider.stderr

    # The outbox relay delivers the events to the audit service; wait until it has.
    deadline = time.monotonic() + 60
    while True:
        listed = _cef(up, "audit", "reidentifications", "--person", "staff-e2e")
        if line["patient_token"] in listed.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert listed.returncode == 0, listed.stderr
    assert line["patient_token"] in listed.stdout, up.log.read_text()[-3000:]
    by_patient = _cef(up, "audit", "reidentifications", "--patient-token", line["patient_token"])
    assert "staff-e2e" in by_patient.stdout
    assert nhs_number not in listed.stdout + by_patient.stdout
