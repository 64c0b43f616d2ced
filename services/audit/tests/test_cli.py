"""`cef audit verify` and `cef audit events` against a real audit service on a free port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from audit_test_support import event_json, execute
from typer.testing import CliRunner

from cef_audit.main import create_app
from cef_cli.main import app as cef
from cef_common.testing import ServerThread

runner = CliRunner()


@pytest.fixture
def server(sqlite_db: str, make_settings: Any) -> Iterator[ServerThread]:
    with ServerThread(create_app(make_settings(sqlite_db, checkpoint_every_events=5))) as s:
        yield s


def _post(server: ServerThread, writer: dict[str, str], first: int, n: int) -> None:
    r = httpx.post(
        f"{server.url}/v1/events",
        json={"events": [event_json(i) for i in range(first, first + n)]},
        headers=writer,
    )
    assert r.status_code == 201, r.text


def _verify(data_dir: Path, server: ServerThread, kept: Path) -> Any:
    return runner.invoke(
        cef, ["audit", "verify", "--data-dir", str(data_dir), "--url", server.url, "--checkpoints", str(kept)]
    )


def test_verify_keeps_checkpoints_and_catches_a_rewrite(
    server: ServerThread, data_dir: Path, tmp_path: Path, writer: dict[str, str], sqlite_db: str
) -> None:
    kept = tmp_path / "kept" / "checkpoints.jsonl"
    _post(server, writer, 0, 10)
    result = _verify(data_dir, server, kept)
    assert result.exit_code == 0, result.output
    assert "VALID" in result.output
    lines = [json.loads(line) for line in kept.read_text().splitlines()]
    assert [e["length"] for e in lines] == [10]
    assert lines[0]["jwk"]["kty"] == "EC"

    _post(server, writer, 10, 10)
    result = _verify(data_dir, server, kept)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["length"] for line in kept.read_text().splitlines()] == [
        10,
        22,
    ]  # the first run's own two requests are events too

    # Someone with database access rewrites the whole log and removes the stored checkpoints.
    for trigger in ("audit_events_no_update", "audit_checkpoints_no_delete"):
        execute(sqlite_db, f"DROP TRIGGER {trigger}")
    execute(sqlite_db, "DELETE FROM audit_checkpoints")
    execute(sqlite_db, "UPDATE audit_events SET outcome = 'success', actor_sub = 'nobody' WHERE seq = 3")
    result = _verify(data_dir, server, kept)
    assert result.exit_code == 1
    assert "INVALID" in result.output
    assert "3" in result.output


def test_an_edited_checkpoint_file_is_refused(
    server: ServerThread, data_dir: Path, tmp_path: Path, writer: dict[str, str]
) -> None:
    kept = tmp_path / "checkpoints.jsonl"
    _post(server, writer, 0, 5)
    assert _verify(data_dir, server, kept).exit_code == 0
    entry = json.loads(kept.read_text())
    entry["head"] = "0" * 64
    kept.write_text(json.dumps(entry) + "\n")
    result = _verify(data_dir, server, kept)
    assert result.exit_code == 1
    assert "differs from what was signed" in result.output
    kept.write_text("not json\n")
    assert _verify(data_dir, server, kept).exit_code == 1


def test_verify_reports_an_unreachable_service(data_dir: Path, dev_issuer: Any, tmp_path: Path) -> None:
    result = runner.invoke(
        cef,
        [
            "audit",
            "verify",
            "--data-dir",
            str(data_dir),
            "--url",
            "http://127.0.0.1:9",
            "--checkpoints",
            str(tmp_path / "k.jsonl"),
        ],
    )
    assert result.exit_code == 3  # not 1: an unreachable service is not a broken chain
    assert "nothing answered at http://127.0.0.1:9" in result.output


def test_verify_keeps_checkpoints_in_the_data_directory_by_default(
    server: ServerThread,
    data_dir: Path,
    tmp_path: Path,
    writer: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    _post(server, writer, 0, 5)
    result = runner.invoke(cef, ["audit", "verify", "--data-dir", str(data_dir), "--url", server.url])
    assert result.exit_code == 0, result.output
    assert (data_dir / "audit-checkpoints.jsonl").is_file()
    assert list(checkout.iterdir()) == []


def test_verify_refused_by_the_service_is_not_a_broken_chain(
    server: ServerThread, tmp_path: Path, writer: dict[str, str]
) -> None:
    # A data directory whose development issuer the service does not trust: 401, exit 3.
    from cef_common.devtokens import ensure_dev_issuer

    stranger = tmp_path / "elsewhere"
    ensure_dev_issuer(stranger / "keys")
    _post(server, writer, 0, 2)
    result = runner.invoke(
        cef,
        [
            "audit",
            "verify",
            "--data-dir",
            str(stranger),
            "--url",
            server.url,
            "--checkpoints",
            str(tmp_path / "k.jsonl"),
        ],
    )
    assert result.exit_code == 3, result.output
    assert "HTTP 401" in result.output


def test_events_lists_and_exports(server: ServerThread, data_dir: Path, writer: dict[str, str]) -> None:
    _post(server, writer, 0, 4)
    result = runner.invoke(
        cef,
        [
            "audit",
            "events",
            "--data-dir",
            str(data_dir),
            "--url",
            server.url,
            "--org",
            "RX1",
            "--purpose",
            "spot check",
        ],
    )
    assert result.exit_code == 0, result.output
    # A narrow terminal folds the table; its rows still show the short fields.
    assert result.output.count("RX1") == 2
    assert "Q99" not in result.output
    result = runner.invoke(
        cef,
        [
            "audit",
            "events",
            "--data-dir",
            str(data_dir),
            "--url",
            server.url,
            "--format",
            "jsonl",
            "--entity",
            "inv-2",
        ],
    )
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    assert json.loads(line)["entity"]["id"] == "inv-2"
    result = runner.invoke(
        cef, ["audit", "events", "--data-dir", str(data_dir), "--url", server.url, "--format", "xml"]
    )
    assert result.exit_code == 2  # wrong usage, as click reports its own usage errors


INVOICE = "0b7c2f0e-3a5d-4d7e-9a51-6f0f5c1d2e3a"


def _post_world(server: ServerThread, writer: dict[str, str]) -> None:
    from cef_common.audit import AuditEntity

    world = [
        (0, "invoice", INVOICE, "invoice.submit", "success"),
        (1, "invoice-line", f"{INVOICE}/L1", "invoice.line.decide", "success"),
        (2, "invoice", "another-invoice", "invoice.submit", "success"),
        (3, "invoice-challenge", f"{INVOICE}/challenge/7", "invoice.line.challenge", "success"),
        (4, "invoice-payment", f"{INVOICE}/payment/1", "invoice.payment", "denied"),
    ]
    events = [
        event_json(n, entity=AuditEntity(type=t, id=i), type=event_type, outcome=outcome)
        for n, t, i, event_type, outcome in world
    ]
    r = httpx.post(f"{server.url}/v1/events", json={"events": events}, headers=writer)
    assert r.status_code == 201, r.text


def _audit(data_dir: Path, server: ServerThread, *args: str) -> Any:
    return runner.invoke(cef, ["audit", *args, "--data-dir", str(data_dir), "--url", server.url])


def _seqs(output: str) -> list[str]:
    """The seq column of a history table: the rows' first cells that are numbers."""
    return [line.split()[0] for line in output.splitlines() if line.split() and line.split()[0].isdigit()]


def _words(output: str) -> str:
    """The output as one line of words: a printed command joined across its continuation lines."""
    return " ".join(output.replace("\\\n", " ").split())


def _fits(output: str) -> None:
    assert max(len(line) for line in output.splitlines()) <= 80, output


def test_history_shows_an_invoice_with_its_parts_then_the_next_command(
    server: ServerThread, data_dir: Path, writer: dict[str, str]
) -> None:
    _post_world(server, writer)
    result = _audit(data_dir, server, "history", "invoice", INVOICE)
    assert result.exit_code == 0, result.output
    _fits(result.output)
    for part in ("invoice.submit", "L1", "challenge/7", "payment/1", "denied"):
        assert part in result.output
    assert "another-invoice" not in result.output
    assert _seqs(result.output) == ["1", "2", "4", "5"]  # oldest first
    assert "audit verify" in result.output
    # A line's history is that line's alone; its id holds a slash.
    result = _audit(data_dir, server, "history", "invoice-line", f"{INVOICE}/L1")
    assert result.exit_code == 0, result.output
    assert _seqs(result.output) == ["2"]


def test_history_pages_with_limit_and_all(
    server: ServerThread, data_dir: Path, writer: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import cef_cli.audit

    _post_world(server, writer)
    result = _audit(data_dir, server, "history", "invoice", INVOICE, "--limit", "2")
    assert result.exit_code == 0, result.output
    assert _seqs(result.output) == ["1", "2"]
    assert "More events follow" in result.output
    assert "--all" in result.output
    # --all follows the cursor page after page (pages of two here).
    monkeypatch.setattr(cef_cli.audit, "HISTORY_PAGE", 2)
    result = _audit(data_dir, server, "history", "invoice", INVOICE, "--all")
    assert result.exit_code == 0, result.output
    assert _seqs(result.output) == [
        "1",
        "2",
        "4",
        "5",
    ]
    assert "More events follow" not in result.output


def test_history_of_an_entity_without_events_suggests_where_to_look(
    server: ServerThread, data_dir: Path
) -> None:
    result = _audit(data_dir, server, "history", "invoice", "no-such-invoice")
    assert result.exit_code == 0, result.output
    assert "no events about invoice no-such-invoice" in result.output
    assert "audit events --entity no-such-invoice" in _words(result.output)


def test_summary_counts_the_period_then_points_at_the_refusals(
    server: ServerThread, data_dir: Path, writer: dict[str, str]
) -> None:
    _post_world(server, writer)
    result = _audit(data_dir, server, "summary", "--since", "2000-01-01T00:00:00Z")
    assert result.exit_code == 0, result.output
    _fits(result.output)
    assert "5 events from 2000-01-01T00:00:00.000000Z to now" in result.output
    rows = [line.split() for line in result.output.splitlines()]
    [submit] = [row for row in rows if row[:1] == ["invoice.submit"]]
    assert submit == ["invoice.submit", "2", "2", "0", "0"]  # events, success, failure, denied
    [everything] = [row for row in rows if row[:1] == ["all"]]
    assert everything == ["all", "5", "4", "0", "1"]
    assert "audit events --outcome denied --since 2000-01-01T00:00:00Z" in _words(result.output)


def test_summary_with_a_time_without_zone_says_what_to_change(server: ServerThread, data_dir: Path) -> None:
    result = _audit(data_dir, server, "summary", "--since", "2026-11-01T00:00:00")
    assert result.exit_code == 1
    assert "needs a time zone" in result.output


def test_history_and_summary_help_give_an_example() -> None:
    for command in ("history", "summary"):
        result = runner.invoke(cef, ["audit", command, "--help"])
        assert result.exit_code == 0
        assert f"For example: cef audit {command}" in " ".join(result.output.split())


def test_a_token_file_reaches_an_audit_service_without_a_local_issuer(
    server: ServerThread, tmp_path: Path, writer: dict[str, str], reader: dict[str, str]
) -> None:
    _post(server, writer, 0, 5)
    # A directory with no development issuer: the token comes from the file (as one from an
    # identity provider would), and the next command printed carries it on.
    elsewhere = tmp_path / "no-keys"
    token = tmp_path / "token"
    token.write_text(reader["Authorization"].removeprefix("Bearer ") + "\n")
    kept = tmp_path / "kept.jsonl"
    args = ["--data-dir", str(elsewhere), "--url", server.url, "--token-file", str(token)]
    result = runner.invoke(cef, ["audit", "verify", *args, "--checkpoints", str(kept)])
    assert result.exit_code == 0, result.output
    assert "VALID" in result.output
    result = runner.invoke(cef, ["audit", "summary", *args])
    assert result.exit_code == 0, result.output
    assert f"--token-file {token}" in " ".join(w for w in result.output.split() if w != "\\")
    # Without it, no issuer to mint from; with a file that is not one token, a usage error.
    result = runner.invoke(cef, ["audit", "verify", "--data-dir", str(elsewhere), "--url", server.url])
    assert result.exit_code != 0
    token.write_text("Bearer something else\n")
    result = runner.invoke(cef, ["audit", "verify", *args])
    assert result.exit_code == 2
    assert "must hold one bearer token" in " ".join(result.output.split())
