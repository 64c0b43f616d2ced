"""What the `cef` command prints: problems said once, lines named without a line_ref, commands a
user can paste, tables in 80 columns, and what to pass when `--org` is missing."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import REPO, api_settings
from typer.testing import CliRunner

from cef_api.main import create_app
from cef_cli import common
from cef_cli.common import command_line, problem_text
from cef_cli.main import app
from cef_common.testing import ServerThread

DEMO = REPO / "demo"


def _response(status: int, body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(status, json=body)


def test_a_validation_problem_says_its_first_error_once() -> None:
    text = problem_text(
        _response(
            422,
            {
                "detail": "invoice header: provider_code: Field required",
                "errors": [
                    {"field": "provider_code", "message": "Field required"},
                    {"field": "period_end", "message": "Field required"},
                ],
            },
        )
    )
    assert text.count("provider_code") == 1
    assert text.splitlines() == [
        "HTTP 422: invoice header: provider_code: Field required",
        "  period_end: Field required",
    ]


def test_a_problem_whose_errors_only_restate_the_detail_is_one_line() -> None:
    text = problem_text(
        _response(
            422,
            {
                "detail": "invoice header: provider_code RXX is not in the providers reference data",
                "errors": [{"field": "provider_code", "message": "unknown provider"}],
            },
        )
    )
    assert text == "HTTP 422: invoice header: provider_code RXX is not in the providers reference data"


def test_a_file_problem_lists_the_other_lines_and_counts_the_rest() -> None:
    errors = [{"line": n, "column": "amount", "message": "not a decimal"} for n in (2, 20, 21)]
    text = problem_text(
        _response(
            422,
            {
                "detail": "The tariff file was not loaded: line 2, column amount: not a decimal "
                "(and 4 more problems).",
                "errors": errors,
                "error_count": 5,
            },
        )
    )
    # "line 2" is the detail's; "line 20" is not the same line, though it starts alike.
    assert text.splitlines()[1:] == [
        "  line 20, column amount: not a decimal",
        "  line 21, column amount: not a decimal",
        "  … and 2 more",
    ]


def test_a_body_that_is_not_a_problem_is_shown_as_text() -> None:
    assert problem_text(httpx.Response(502, text="Bad Gateway")) == "HTTP 502: Bad Gateway"


def test_printed_commands_fit_80_columns_and_paste_back_to_the_same_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(common, "cli_prefix", lambda: ".venv/bin/cef")
    args = [
        "submit",
        "demo/invoices/RTR-201904-0000.json",
        "demo/invoices/with space/RTR-201904-0000.csv",
        "--data-dir",
        "/tmp/a/rather/long/path/to/a/data/directory/var",
    ]
    printed = command_line(args, indent="  ", env_prefix="CEF_API_PORT=8012")
    lines = printed.splitlines()
    assert len(lines) > 1
    assert all(len(line) <= common.COLUMNS for line in lines)
    assert all(line.endswith(" \\") for line in lines[:-1])
    # What a shell makes of it: the same words, an option still beside its value.
    words = shlex.split(printed.replace("\\\n", " "))
    assert words == ["CEF_API_PORT=8012", ".venv/bin/cef", *args]
    assert any("--data-dir /tmp" in line for line in lines)


def test_the_cef_command_is_the_one_beside_this_python_never_uv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "cef").write_text("#!/bin/sh\n")
    (bin_dir / "cef").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert common.cli_prefix() == "venv/bin/cef"
    # Even with the venv on the PATH (as under `uv run`): the user's shell may not have it.
    monkeypatch.setenv("PATH", str(bin_dir))
    assert common.cli_prefix() == "venv/bin/cef"
    (bin_dir / "cef").unlink()
    assert common.cli_prefix() == f"{bin_dir / 'python'} -m cef_cli.main"


def test_show_without_org_says_what_to_pass(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["invoices", "show", "some-id", "--data-dir", str(data_dir)])
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert "--org is needed" in flat
    assert "invoices show some-id --org RTR" in flat


def test_show_help_names_org() -> None:
    result = CliRunner().invoke(app, ["invoices", "show", "--help"])
    assert result.exit_code == 0
    assert "--org" in result.output
    assert "ODS_CODE" in result.output


@pytest.fixture
def served(
    data_dir: Path, sqlite_api_db: str, tokeniser: Any, dev_issuer: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    with ServerThread(create_app(api_settings(data_dir, sqlite_api_db, tokeniser.url))) as server:
        monkeypatch.setenv("CEF_API_PUBLIC_URL", server.url)
        yield server.url


def test_a_line_without_line_ref_is_named_by_its_data_row(
    served: str, data_dir: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    loaded = runner.invoke(app, ["reference", "load", str(DEMO / "reference"), "--data-dir", str(data_dir)])
    assert loaded.exit_code == 0, loaded.output
    source = DEMO / "invoices" / "RTR-201904-0000"
    rows = (source.with_suffix(".csv")).read_text().splitlines()
    header = rows[0].split(",")
    assert header[-1] == "line_ref"
    # The third data row loses its line_ref: the provider must still find which line it was.
    rows[3] = rows[3].rsplit(",", 1)[0] + ","
    backing = tmp_path / "invoice.csv"
    backing.write_text("\n".join(rows[:6]) + "\n")
    result = runner.invoke(
        app, ["submit", str(source.with_suffix(".json")), str(backing), "--data-dir", str(data_dir)]
    )
    assert result.exit_code == 0, result.output
    assert "None" not in result.output
    [row] = [line for line in result.output.splitlines() if "(row 3)" in line]
    assert "rejected" in row
    assert all(len(line) <= 80 for line in result.output.splitlines())
    # The command it prints to see the invoice again runs as printed.
    again = result.output.split("See it again with:\n", 1)[1].replace("\\\n", " ")
    args = shlex.split(again)
    # This shell reached the API through CEF_API_PUBLIC_URL: another shell is told the same.
    assert args[0] == f"CEF_API_PUBLIC_URL={served}"
    assert args[args.index("--org") + 1] == "RTR"
    shown = runner.invoke(app, args[2:])
    assert shown.exit_code == 0, shown.output
    assert "(row 3)" in shown.output
