"""`cef audit` commands: verify the audit log against kept checkpoints, and list its events."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cef_cli.common import (
    UNREACHABLE,
    DataDirOption,
    call,
    console,
    fail,
    group,
    local_token,
    out,
    print_table,
    problem_text,
    service_url,
    table,
)

if TYPE_CHECKING:
    import httpx

# `cef audit verify`'s exit statuses (also in its --help and the README).
VALID, BROKEN, USAGE = 0, 1, 2
CHECKPOINTS_FILE = "audit-checkpoints.jsonl"

app = group("The audit log: verify that nobody rewrote it, and query it.")

UrlOption = Annotated[
    str | None, typer.Option("--url", help="Base URL of the audit service (default: the local `cef up`).")
]


def _client(data_dir: Path, url: str | None, sub: str) -> httpx.Client:
    import httpx

    token = local_token(data_dir, scope="audit:read", audience="audit", sub=sub)
    return httpx.Client(
        base_url=(url or service_url("audit")).rstrip("/"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(600.0, connect=5.0),
    )


_problem = problem_text


def _get(client: httpx.Client, path: str, **kwargs: Any) -> httpx.Response:
    return call(client, "GET", path, **kwargs)


def _load_kept(path: Path) -> list[dict[str, Any]]:
    """Checkpoints kept by earlier runs: one JSON object per line, each with the key that signed it."""
    if not path.exists():
        return []
    kept = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or not {"length", "head", "jws", "jwk"} <= entry.keys():
                raise ValueError("missing fields")
        except ValueError:
            fail(f"{path}, line {number}: not a kept checkpoint (JSON with length, head, jws, jwk)")
        kept.append(entry)
    return kept


def _check_kept_signatures(path: Path, kept: list[dict[str, Any]]) -> None:
    """Each kept checkpoint must still verify with the key it was kept with: the file itself may
    have been edited."""
    from cef_audit.integrity.verify import open_checkpoint

    for entry in kept:
        try:
            length, head, _ = open_checkpoint(entry["jws"], {"keys": [entry["jwk"]]})
        except ValueError as exc:
            fail(f"{path}: the kept checkpoint at length {entry['length']} does not verify ({exc})")
        if (length, head) != (entry["length"], entry["head"]):
            fail(f"{path}: the kept checkpoint at length {entry['length']} differs from what was signed")


@app.command("verify")
def verify(
    data_dir: DataDirOption = Path("var"),
    url: UrlOption = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints",
            help=f"File of checkpoints you keep (JSON Lines; created, then appended to) [default: "
            f"DATA_DIR/{CHECKPOINTS_FILE}]. Keep a copy away from the audit database: it is what "
            "catches a rewrite of the whole log.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Verify the audit log and the checkpoints you keep.

    Recomputes the audit log's hash chain, checks it against every checkpoint (the service's and the
    ones kept in --checkpoints), then keeps the latest signed checkpoint.

    Exit status: 0 valid; 1 invalid (broken chain, a checkpoint that does not match, or an edited
    checkpoint file); 2 wrong usage; 3 the audit service did not answer or refused to verify."""
    from cef_audit.integrity.verify import open_checkpoint

    if checkpoints is None:
        checkpoints = data_dir / CHECKPOINTS_FILE
    kept = _load_kept(checkpoints)
    _check_kept_signatures(checkpoints, kept)
    with _client(data_dir, url, "cef-audit-verify") as client:
        jwks_response = _get(client, "/.well-known/jwks.json")
        if jwks_response.status_code != 200:
            fail(f"cannot read the audit service's keys: {_problem(jwks_response)}", code=UNREACHABLE)
        jwks = jwks_response.json()
        pinned = {entry["jwk"].get("kid") for entry in kept}
        if kept and not pinned & {k.get("kid") for k in jwks.get("keys", [])}:
            console.print(
                "[yellow]warning:[/] the audit service signs with a key none of your kept checkpoints "
                "was signed with; confirm the key change with its operators before trusting new checkpoints"
            )
        response = call(client, "POST", "/v1/verify", json={"checkpoints": [e["jws"] for e in kept]})
        if response.status_code != 200:
            fail(f"verification could not run: {_problem(response)}", code=UNREACHABLE)
        report = response.json()
        latest_response = _get(client, "/v1/checkpoints")
    latest: dict[str, Any] | None = None
    problems: list[str] = list(report.get("problems", []))
    if latest_response.status_code == 200:
        latest = latest_response.json()
        try:
            length, head, _ = open_checkpoint(latest["jws"], jwks)
            if (length, head) != (latest["length"], latest["head"]):
                raise ValueError("its fields differ from what was signed")
        except (ValueError, KeyError) as exc:
            problems.append(f"the latest checkpoint does not verify: {exc}")
            latest = None
    elif latest_response.status_code != 404:
        problems.append(f"cannot fetch the latest checkpoint: {_problem(latest_response)}")
    longest_kept = max((e["length"] for e in kept), default=0)
    if latest is not None and latest["length"] < longest_kept:
        problems.append(
            f"the log's latest checkpoint covers {latest['length']} events, fewer than the {longest_kept} "
            "of one you kept: events were removed"
        )

    if problems or not report.get("valid"):
        out.print(
            f"[bold red]INVALID[/]: the audit log cannot be trusted from event {report.get('first_bad_seq')}"
        )
        for problem in problems or [report.get("reason")]:
            out.print(f"  - {problem}", highlight=False, markup=False)
        raise typer.Exit(BROKEN)

    added = ""
    if latest is not None and latest["length"] not in {e["length"] for e in kept}:
        key = next((k for k in jwks.get("keys", []) if k.get("kid") == latest["kid"]), None)
        entry = {**{k: latest[k] for k in ("length", "head", "issued_at", "kid", "jws")}, "jwk": key}
        checkpoints.parent.mkdir(parents=True, exist_ok=True)
        with checkpoints.open("a") as f:
            f.write(json.dumps(entry, separators=(",", ":")) + "\n")
        added = f"; kept the checkpoint at length {latest['length']} in {checkpoints}"
    out.print(
        f"[bold green]VALID[/]: {report['length']:,} events, head {report['head'][:16]}…; "
        f"{report['checkpoints_checked']} stored and {len(kept)} kept checkpoints hold{added}"
    )


@app.command("events")
def events(
    data_dir: DataDirOption = Path("var"),
    url: UrlOption = None,
    actor: Annotated[str | None, typer.Option(help="The actor's subject.")] = None,
    org: Annotated[str | None, typer.Option(help="The actor's organisation (ODS code).")] = None,
    action: Annotated[list[str] | None, typer.Option(help="create, read, update, delete or execute.")] = None,
    type_: Annotated[
        list[str] | None, typer.Option("--type", help="e.g. patient.detokenise or patient.*")
    ] = None,
    entity: Annotated[str | None, typer.Option(help="The entity's id, e.g. an invoice id.")] = None,
    outcome: Annotated[list[str] | None, typer.Option(help="success, failure or denied.")] = None,
    since: Annotated[str | None, typer.Option(help="Recorded at or after (ISO 8601 with a zone).")] = None,
    until: Annotated[str | None, typer.Option(help="Recorded before (ISO 8601 with a zone).")] = None,
    purpose: Annotated[str | None, typer.Option(help="Why you are looking (recorded in the log).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Events to show (table).")] = 50,
    format: Annotated[
        str, typer.Option("--format", help="table, or an export of every match: jsonl, csv, fhir.")
    ] = "table",
) -> None:
    """List audit events, or export every match.

    A table shows the newest first; an export (--format) streams every match in seq order."""
    import httpx
    from rich.markup import escape

    if format not in ("table", "jsonl", "csv", "fhir"):
        fail("--format must be one of table, jsonl, csv, fhir", code=USAGE)
    params: dict[str, Any] = {
        k: v
        for k, v in {
            "actor": actor,
            "org": org,
            "action": action,
            "type": type_,
            "entity": entity,
            "outcome": outcome,
            "since": since,
            "until": until,
            "purpose": purpose,
        }.items()
        if v
    }
    with _client(data_dir, url, "cef-audit-events") as client:
        if format != "table":
            try:
                with client.stream("GET", "/v1/events/export", params={**params, "format": format}) as r:
                    if r.status_code != 200:
                        r.read()
                        fail(_problem(r))
                    for chunk in r.iter_bytes():
                        sys.stdout.buffer.write(chunk)
            except httpx.HTTPError as exc:
                fail(
                    f"cannot reach the audit service at {client.base_url}: {type(exc).__name__}",
                    code=UNREACHABLE,
                )
            return
        response = _get(client, "/v1/events", params={**params, "limit": limit, "order": "desc"})
    if response.status_code != 200:
        fail(_problem(response))
    # Six columns, two facts to a cell (actor and org; type, then action and outcome): 80 columns.
    shown = table("seq", "recorded at", "actor", "event", "entity", "purpose")
    for column in shown.columns[:2]:
        column.no_wrap = True
    for e in response.json()["items"]:
        entity_ = e.get("entity") or {}
        what = "/".join(str(x) for x in (entity_.get("type"), entity_.get("id")) if x)
        if entity_.get("count") is not None:
            what += f" ×{entity_['count']}"
        cells = (
            str(e["seq"]),
            e["recorded_at"][:19].replace("T", " "),
            "\n".join(x for x in (e["actor"]["sub"], e["actor"].get("org")) if x),
            f"{e['type']}\n{e['action']}, {e['outcome']}",
            what,
            e.get("purpose") or "",
        )
        # What callers wrote (subjects, entity ids, purposes) is text, never rich markup.
        shown.add_row(*(escape(cell) for cell in cells))
    print_table(shown)
