"""Every role's `cef` commands walking the demo world's invoices through their lifecycle, against a
real cef-api on a free port: submitted, queried, challenged, answered, decided, approved, paid,
reported, exported and withdrawn. Every command's output fits 80 columns and ends with a command
that runs as printed."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from api_support import REPO, api_settings
from typer.testing import CliRunner

from cef_api.main import create_app
from cef_cli.main import app
from cef_common.testing import ServerThread

DEMO = REPO / "demo"
RTR, RVW = DEMO / "invoices" / "RTR-201904-0000", DEMO / "invoices" / "RVW-201905-0001"
ID = re.compile(r"^\s*id ([0-9a-f-]{36})$", re.MULTILINE)

# Every command the lifecycle added, with the words its --help must show.
COMMANDS = [
    ["invoices", "list"],
    ["invoices", "show"],
    ["invoices", "withdraw"],
    ["invoices", "export"],
    ["invoices", "approve"],
    ["queries", "list"],
    ["queries", "challenge"],
    ["queries", "decide"],
    ["challenges", "list"],
    ["challenges", "respond"],
    ["finance", "approved"],
    ["finance", "pay"],
    ["finance", "export"],
    ["reports", "outcomes"],
    ["reasons"],
]


@pytest.fixture
def served(
    data_dir: Path, sqlite_api_db: str, tokeniser: Any, dev_issuer: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    with ServerThread(create_app(api_settings(data_dir, sqlite_api_db, tokeniser.url))) as server:
        monkeypatch.setenv("CEF_API_PUBLIC_URL", server.url)
        monkeypatch.setenv("CEF_API_DATABASE_URL", sqlite_api_db)
        yield server.url


class Cli:
    """Runs `cef` as a user would, checking what every run prints."""

    def __init__(self, data_dir: Path) -> None:
        self.runner = CliRunner()
        self.data_dir = data_dir

    def __call__(self, *args: str, code: int = 0) -> str:
        result = self.runner.invoke(app, [*args, "--data-dir", str(self.data_dir)])
        assert result.exit_code == code, f"cef {' '.join(args)}:\n{result.output}"
        wide = [line for line in result.output.splitlines() if len(line) > 80]
        assert not wide, f"cef {' '.join(args)} printed lines wider than 80 columns: {wide}"
        return result.output

    def next_command(self, output: str) -> list[str]:
        """The command an output ends with, as a shell reads it: it reaches this API and this data
        directory, and names the same role and organisation the user would."""
        last = output.strip().split("\n\n")[-1]
        words = shlex.split(last.split("\n", 1)[1].replace("\\\n", " "))
        assert words[0].startswith("CEF_API_PUBLIC_URL=")
        assert words[-2] == "--data-dir"
        assert Path(words[-1]).resolve() == self.data_dir.resolve()
        return words[2:-2]

    def run_next(self, output: str, code: int = 0) -> str:
        return self(*self.next_command(output), code=code)


def _id(output: str) -> str:
    found = ID.search(output)
    assert found, output
    return found.group(1)


def _flat(output: str) -> str:
    return " ".join(output.split())


def test_every_role_walks_the_demo_invoices_through_their_lifecycle(
    served: str, data_dir: Path, sqlite_api_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cef = Cli(data_dir)
    assert "loaded 11 reference file(s)" in cef("reference", "load", str(DEMO / "reference"))
    rtr = _id(cef("submit", str(RTR.with_suffix(".json")), str(RTR.with_suffix(".csv"))))
    rvw = _id(cef("submit", str(RVW.with_suffix(".json")), str(RVW.with_suffix(".csv"))))

    # The provider sees its own invoice, never the other provider's.
    listed = cef("invoices", "list", "--org", "RVW")
    assert "RVW-201905-0001" in listed
    assert "RTR-201904-0000" not in listed
    assert re.search(r"RVW-201905-0001 RVW→00C +validated +25 +7 +63470\.32", listed)
    assert cef.next_command(listed) == ["invoices", "show", rvw, "--org", "RVW"]

    # Staff see every invoice addressed to their commissioner.
    both = cef("invoices", "list", "--as", "staff", "--org", "00C")
    assert "RTR-201904-0000" in both
    assert "RVW-201905-0001" in both
    assert cef.next_command(both)[-4:] == ["--as", "staff", "--org", "00C"]

    # Staff's queue: the query lines of both invoices sent to 00C, every reason code whole.
    queue = cef("queries", "list", "--org", "00C")
    assert "RTR-201904-0000" in queue
    assert "RVW-201905-0001" in queue
    for code in ("PRICE_MISMATCH", "PATIENT_NOT_FOUND", "DOB_MISMATCH", "RESIDENCE_UNKNOWN"):
        assert re.search(rf"\b{code}\b", queue), code
    assert "What the reasons mean:" in queue
    assert "TARIFF_NOT_FOUND: " in queue
    only = cef("queries", "list", "--org", "00C", "--provider", "RVW", "--reason", "PRICE_MISMATCH")
    assert "RTR-201904-0000" not in only
    assert "00001" in only
    assert "00014" in only
    assert "00011" not in only
    assert cef.next_command(only) == [
        "queries", "decide", rvw, "--reason-code", "PRICE_MISMATCH", "--accept", "--org", "00C",
    ]  # fmt: skip

    # Staff challenge a line; the provider sees it and answers with the command it was given.
    raised = cef(
        "queries", "challenge", rvw, "00001", "--org", "00C",
        "--message", "Line 00001 is above the tariff for its HRG: please explain the price.",
        "--due", date.today().isoformat(),
    )  # fmt: skip
    assert "challenged line 00001 of RVW-201905-0001" in raised
    assert cef.next_command(raised) == ["challenges", "list", "--org", "RVW"]
    # A challenge past its due date (the API takes none in the past: the database is told) is
    # marked overdue.
    engine = sa.create_engine(sqlite_api_db)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE challenge SET due_date = '2019-07-01'"))
    engine.dispose()
    challenges = cef.run_next(raised)
    assert "00001" in challenges
    assert "open, due 2019-07-01" in challenges
    assert "OVERDUE" in challenges
    assert "PRICE_MISMATCH" in challenges
    assert "above the tariff" in _flat(challenges)
    respond = cef.next_command(challenges)
    assert respond[:2] == ["challenges", "respond"]
    assert respond[-2:] == ["--org", "RVW"]
    answered = cef(*respond[:-2], "--corrected-amount", "798.05", "--org", "RVW")
    assert "responded" in answered
    assert "corrected amount £798.05" in answered
    # The same challenge cannot be answered twice: the service's problem, and a failing status.
    again = cef(*respond, code=1)
    assert "error:" in again
    assert "HTTP 409" in _flat(again)

    seen = cef.run_next(answered)
    assert "YOUR ANSWER" in seen
    assert "(£798.05)" in seen
    decide = cef.next_command(seen)
    assert decide == ["queries", "decide", rvw, "00001", "--accept", "--amount", "798.05", "--org", "00C"]

    # Approving too early is refused, with the lines still to decide.
    early = cef("invoices", "approve", rvw, "--org", "00C", code=1)
    assert "HTTP 409" in early
    assert cef.next_command(early.split("error:")[0]) == ["queries", "list", "--org", "00C", "--invoice", rvw]

    # One line at a time (accept at an amount, reject with a reason), then every line of a reason.
    one = cef("queries", "decide", rvw, "00011", "--accept", "--amount", "5639.22", "--org", "00C")
    assert "line 00011: accepted, £5639.22" in one
    assert "query line(s) still to decide" in one
    one = cef(
        "queries", "decide", rvw, "00018", "--reject", "--reason", "not our patient on that day",
        "--org", "00C",
    )  # fmt: skip
    assert "line 00018: rejected" in one
    bulk = cef(
        "queries", "decide", rvw, "--reason-code", "PRICE_MISMATCH", "--accept", "--amount-basis", "expected",
        "--org", "00C",
    )  # fmt: skip
    assert "accepted 2 PRICE_MISMATCH line(s) at their expected amount, £8446.03 to pay" in bulk
    closed = cef("challenges", "list", "--as", "staff", "--org", "00C", "--status", "closed")
    assert "00001" in closed
    # The follow-up during RTR's spell of the same patient (check 15, across providers).
    one = cef(
        "queries", "decide", rvw, "00025", "--reject", "--reason", "seen while an inpatient elsewhere",
        "--org", "00C",
    )  # fmt: skip
    assert "line 00025: rejected" in one
    bulk = cef(
        "queries", "decide", rvw, "--reason-code", "PATIENT_NOT_FOUND", "--reject",
        "--reason", "no patient of ours matches these lines", "--org", "00C",
    )  # fmt: skip
    assert "rejected 2 PATIENT_NOT_FOUND line(s)" in bulk
    assert cef.next_command(bulk) == ["invoices", "approve", rvw, "--org", "00C"]
    # Usage mistakes are refused before anything is sent.
    assert "not both" in cef("queries", "decide", rvw, "00013", "--reason-code", "DOB_MISMATCH", "--accept",
                             "--org", "00C", code=2)  # fmt: skip
    assert "--amount" in cef("queries", "decide", rvw, "00013", "--accept", "--org", "00C", code=2)

    # Staff see each query line's state on the invoice, and what each reason means.
    detail = cef("invoices", "show", rvw, "--as", "staff", "--org", "00C", "--lines", "25")
    assert "state" in detail
    assert re.search(r"^ 00001 +query +accepted +PRICE_MISMATCH +00C +798\.05 *$", detail, re.MULTILINE)
    assert re.search(
        r"^ 00012 +rejected +NOT_RESPONSIBLE_COMMISSIONER +00M +277\.07 *$", detail, re.MULTILINE
    )
    assert "accepted" in detail
    assert "rejected" in detail
    assert "What the reasons mean:" in detail
    assert "MALFORMED_LINE: " in detail

    approved = cef.run_next(bulk)
    assert "approved" in approved
    assert "ledger CEF-00C-" in approved
    assert cef.next_command(approved) == ["finance", "approved", "--org", "00C"]

    # Finance: the invoice to pay, the ledger export, the payment (twice: nothing new).
    to_pay = cef.run_next(approved)
    assert "RVW-201905-0001" in to_pay
    assert "CEF-00C-" in to_pay
    ledger = tmp_path / "to-pay.csv"
    exported = cef("finance", "export", "--org", "00C", "--output", str(ledger))
    assert "wrote 1 invoice(s)" in exported
    with ledger.open(newline="") as f:
        [row] = list(csv.DictReader(f))
    assert row["invoice_number"] == "RVW-201905-0001"
    assert "exists" in _flat(cef("finance", "export", "--org", "00C", "--output", str(ledger), code=2))
    pay = cef.next_command(to_pay)
    assert pay[:3] == ["finance", "pay", rvw]
    assert pay[pay.index("--amount") + 1] == row["unpaid_amount"]
    paid = cef(*pay)
    assert "invoice paid" in paid
    assert "unpaid £0.00" in paid
    assert "recorded before: nothing new" in cef(*pay)
    assert "nothing approved is waiting to be paid" in cef("finance", "approved", "--org", "00C")
    assert "paid" in cef("invoices", "show", rvw, "--as", "finance", "--org", "00C")

    # Each party exports every line: the provider its outcomes, staff the detail.
    monkeypatch.chdir(tmp_path)
    outcomes = cef("invoices", "export", rvw, "--org", "RVW")
    assert "wrote 25 line(s)" in outcomes
    with (tmp_path / "RVW-201905-0001-outcomes.csv").open(newline="") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 25
    assert "patient_token" not in lines[0]
    staff_file = tmp_path / "detail.csv"
    assert "wrote 25 line(s)" in cef("invoices", "export", rvw, "--as", "staff", "--org", "00C",
                                     "--output", str(staff_file))  # fmt: skip
    with staff_file.open(newline="") as f:
        assert len(list(csv.DictReader(f))) == 25
    assert "exists" in _flat(cef("invoices", "export", rvw, "--org", "RVW", code=2))
    # Another provider gets the service's refusal, and no file.
    refused = cef("invoices", "export", rvw, "--org", "RTR", "--output", str(tmp_path / "x.csv"), code=1)
    assert "HTTP 40" in refused
    assert not (tmp_path / "x.csv").exists()

    # The provider withdraws its other invoice; it can no longer be approved.
    withdrawn = cef("invoices", "withdraw", rtr, "--org", "RTR", "--reason", "sent with the wrong prices")
    assert "withdrawn" in withdrawn
    assert cef.next_command(withdrawn) == ["invoices", "list", "--org", "RTR"]
    assert "RTR-201904-0000" in cef("invoices", "list", "--org", "RTR", "--status", "withdrawn")
    refused = cef("invoices", "approve", rtr, "--org", "00C", code=1)
    assert "HTTP 409" in _flat(refused)
    assert "withdrawn" in refused
    assert "queries list" not in refused

    catalogue = cef("reasons")
    for code in ("MALFORMED_LINE", "NOT_RESPONSIBLE_COMMISSIONER", "PRICE_MISMATCH", "DUPLICATE_ACTIVITY"):
        assert re.search(rf"^{code} \((rejected|query)\)$", catalogue, re.MULTILINE), code
    assert "What to do: " in catalogue


def test_the_board_reads_outcomes_with_small_counts_suppressed(served: str, data_dir: Path) -> None:
    cef = Cli(data_dir)
    cef("reference", "load", str(DEMO / "reference"))
    for invoice in (RTR, RVW):
        cef("submit", str(invoice.with_suffix(".json")), str(invoice.with_suffix(".csv")))
    report = cef("reports", "outcomes", "--org", "00C", "--by", "provider")
    assert "RTR" in report
    assert "RVW" in report
    # The demo's counts are small: some are hidden, shown as "*" and explained under the table.
    assert re.search(r"\s\*\s", report), report
    assert re.search(r"^\* \S", report, re.MULTILINE), report
    assert cef.next_command(report) == ["reports", "outcomes", "--org", "00C", "--by", "reason"]
    # By reason a line counts once per code, so rows do not add up: no totals row, codes whole.
    by_reason = cef.run_next(report)
    assert re.search(r"^ NOT_RESPONSIBLE_COMMISSIONER ", by_reason, re.MULTILINE), by_reason
    assert not re.search(r"^ all ", by_reason, re.MULTILINE)
    assert re.search(r"^ all ", report, re.MULTILINE)
    by_month = cef("reports", "outcomes", "--org", "00C", "--from", "2019-04", "--to", "2019-04")
    assert "2019-04" in by_month
    assert "2019-05" not in by_month
    assert "YYYY-MM" in cef("reports", "outcomes", "--org", "00C", "--from", "April", code=2)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_explains_itself_with_an_example_in_80_columns(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "For example" in result.output or "e.g." in result.output
    example = [line.strip() for line in result.output.splitlines() if line.strip().startswith("cef ")]
    assert example, "the example is a command to paste"
    assert all(line.startswith(f"cef {' '.join(command)}") for line in example), example
    assert "--org" in result.output
    wide = [line for line in result.output.splitlines() if len(line) > 80]
    assert not wide, wide


PROBE = """
import json, os, sys
sys.argv = ["cef", *json.loads(os.environ["PROBE_ARGS"])]
from cef_cli.main import app
try:
    app()
except SystemExit:
    pass
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


@pytest.mark.parametrize(
    "command", [["queries", "decide"], ["finance", "pay"], ["reports", "outcomes"]], ids=" ".join
)
def test_the_help_of_the_lifecycle_commands_imports_no_web_stack(command: list[str]) -> None:
    env = {**os.environ, "PROBE_ARGS": json.dumps([*command, "--help"])}
    run = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    modules = set(json.loads(run.stdout.strip().splitlines()[-1]))
    assert not modules & {"httpx", "fastapi", "sqlalchemy", "cef_api", "rich"}, modules


def test_a_list_follows_every_page_and_explains_the_reasons_of_each() -> None:
    import httpx

    from cef_cli.common import all_pages

    pages = {
        None: {
            "items": [{"n": 1}, {"n": 2}],
            "next_cursor": "2",
            "reasons_explained": [{"code": "PRICE_MISMATCH", "summary": "a"}],
        },
        "2": {
            "items": [{"n": 3}],
            "next_cursor": None,
            "reasons_explained": [
                {"code": "PRICE_MISMATCH", "summary": "a"},
                {"code": "DOB_MISMATCH", "summary": "b"},
            ],
        },
    }
    seen: list[dict[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    with httpx.Client(transport=httpx.MockTransport(answer), base_url="http://cef") as client:
        items, first = all_pages(client, "/v1/queries", what="lines", params={"state": None, "limit": 2})
    assert [i["n"] for i in items] == [1, 2, 3]
    assert [e["code"] for e in first["reasons_explained"]] == ["PRICE_MISMATCH", "DOB_MISMATCH"]
    # A filter left out is not sent as an empty value; the page size is kept on every page.
    assert seen == [{"limit": "2"}, {"limit": "2", "cursor": "2"}]
