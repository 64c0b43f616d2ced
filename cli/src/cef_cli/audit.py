"""`cef audit` commands: verify the audit log against kept checkpoints, list its events, show one
entity's history and summarise a period."""

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
    command_line,
    console,
    data_dir_args,
    fail,
    group,
    local_token,
    out,
    print_table,
    problem_text,
    service_env,
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


TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        envvar="CEF_AUDIT_TOKEN_FILE",
        help="A file holding a bearer token the audit service accepts for audit:read (e.g. from your "
        "organisation's identity provider), for an audit service other than the local `cef up` "
        "[default: a token of the local development issuer under DATA_DIR/keys].",
        dir_okay=False,
        show_default=False,
    ),
]


def _token(data_dir: Path, sub: str, token_file: Path | None) -> str:
    """The caller's token from --token-file, else one minted by the local development issuer."""
    if token_file is None:
        return local_token(data_dir, scope="audit:read", audience="audit", sub=sub)
    try:
        token = token_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read the token file {token_file}: {type(exc).__name__}", code=USAGE)
    if not token or any(c.isspace() for c in token):
        fail(f"{token_file} must hold one bearer token (a JWT) and nothing else", code=USAGE)
    return token


def _client(data_dir: Path, url: str | None, sub: str, token_file: Path | None = None) -> httpx.Client:
    import httpx

    token = _token(data_dir, sub, token_file)
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
    token_file: TokenFileOption = None,
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
    with _client(data_dir, url, "cef-audit-verify", token_file) as client:
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
    token_file: TokenFileOption = None,
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
    with _client(data_dir, url, "cef-audit-events", token_file) as client:
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


# `cef audit history --all` reads the history a page of this many events at a time.
HISTORY_PAGE = 1000


def _next(why: str, args: list[str], data_dir: Path, url: str | None, token_file: Path | None = None) -> None:
    """Prints the next useful command, as the user can paste it."""
    where = ["--url", url] if url else []
    if token_file is not None:
        where += ["--token-file", str(token_file)]
    line = command_line(["audit", *args, *where, *data_dir_args(data_dir)], env_prefix=service_env("audit"))
    out.print(f"\n{why}:\n{line}", soft_wrap=True, highlight=False, markup=False)


@app.command("history")
def history(
    entity_type: Annotated[
        str,
        typer.Argument(
            metavar="TYPE",
            help="The entity's type: invoice (its history includes its lines, challenges and payments), "
            "invoice-line, invoice-challenge, invoice-payment, ...",
        ),
    ],
    entity_id: Annotated[
        str,
        typer.Argument(metavar="ID", help="The entity's id; a line's is INVOICE_ID/LINE_REF."),
    ],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Events to show, oldest first.")] = 50,
    all_: Annotated[bool, typer.Option("--all", help="Show every event, however many.")] = False,
    purpose: Annotated[str | None, typer.Option(help="Why you are looking (recorded in the log).")] = None,
    data_dir: DataDirOption = Path("var"),
    url: UrlOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """Show one entity's history, oldest first.

    An invoice's history includes the events of its lines, challenges and payments.

    For example: cef audit history invoice 0b7c2f0e-3a5d-4d7e-9a51-6f0f5c1d2e3a --all"""
    from urllib.parse import quote

    from rich.markup import escape

    # The id is one path segment: a line's id holds a slash, a provider's line_ref may hold '?'.
    path = f"/v1/entities/{quote(entity_type, safe='')}/{quote(entity_id, safe='')}/events"
    params: dict[str, Any] = {"limit": HISTORY_PAGE if all_ else limit}
    if purpose:
        params["purpose"] = purpose
    items: list[dict[str, Any]] = []
    more = False
    with _client(data_dir, url, "cef-audit-history", token_file) as client:
        while True:
            response = _get(client, path, params=params)
            if response.status_code != 200:
                fail(_problem(response))
            page = response.json()
            items += page["items"]
            more = page["next_cursor"] is not None
            if not (all_ and more):
                break
            params["cursor"] = page["next_cursor"]
    if not items:
        out.print(f"no events about {entity_type} {entity_id}", highlight=False, markup=False)
        _next("Look for it among all events", ["events", "--entity", entity_id], data_dir, url, token_file)
        return
    # Five columns, the narrow ones never wrapped: 80 columns with a whole event type.
    shown = table("seq", "recorded at", "actor", "event", "outcome")
    for column in (shown.columns[0], shown.columns[1], shown.columns[4]):
        column.no_wrap = True
    parts = f"{entity_id}/"
    for e in items:
        entity = e.get("entity") or {}
        event = f"{e['type']}\n{e['action']}"
        # An invoice's part, named by what follows the invoice's id: L1, challenge/7, payment/1.
        if isinstance(entity.get("id"), str) and entity["id"].startswith(parts):
            event += f" {entity['id'][len(parts) :]}"
        cells = (
            str(e["seq"]),
            e["recorded_at"][:19].replace("T", " "),
            "\n".join(x for x in (e["actor"]["sub"], e["actor"].get("org")) if x),
            event,
            e["outcome"],
        )
        # What callers wrote (subjects, entity ids) is text, never rich markup.
        shown.add_row(*(escape(cell) for cell in cells))
    print_table(shown)
    if more:
        _next(
            "More events follow; see them all with",
            ["history", entity_type, entity_id, "--all"],
            data_dir,
            url,
            token_file,
        )
    else:
        _next("Check that nobody rewrote these events", ["verify"], data_dir, url, token_file)


@app.command("summary")
def summary(
    since: Annotated[
        str | None, typer.Option(help="Recorded at or after (ISO 8601 with a zone, e.g. 2026-11-01T00:00Z).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Recorded before (ISO 8601 with a zone).")] = None,
    purpose: Annotated[str | None, typer.Option(help="Why you are looking (recorded in the log).")] = None,
    data_dir: DataDirOption = Path("var"),
    url: UrlOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """Count a period's events: by type and outcome, and by organisation.

    For example: cef audit summary --since 2026-11-01T00:00Z --until 2026-12-01T00:00Z"""
    from rich.markup import escape

    params = {k: v for k, v in {"since": since, "until": until, "purpose": purpose}.items() if v}
    with _client(data_dir, url, "cef-audit-summary", token_file) as client:
        response = _get(client, "/v1/summary", params=params)
    if response.status_code != 200:
        fail(_problem(response))
    body: dict[str, Any] = response.json()
    period = f"from {body['since'] or 'the start'} to {body['until'] or 'now'}"
    out.print(f"{body['total']:,} events {period}", highlight=False, markup=False)
    outcomes = list(body["by_outcome"])
    by_type = table("type", "events", *outcomes)
    for column in by_type.columns[1:]:
        column.justify = "right"
    for name, count in body["by_type"].items():
        per = body["by_type_outcome"].get(name, {})
        by_type.add_row(escape(name), f"{count:,}", *(f"{per.get(o, 0):,}" for o in outcomes))
    by_type.add_section()
    by_type.add_row("all", f"{body['total']:,}", *(f"{body['by_outcome'][o]:,}" for o in outcomes))
    print_table(by_type)
    by_org = table("organisation", "events")
    by_org.columns[1].justify = "right"
    for org, count in body["by_org"].items():
        by_org.add_row(escape(org), f"{count:,}")
    print_table(by_org)
    window = [
        arg for name, value in (("--since", since), ("--until", until)) if value for arg in (name, value)
    ]
    if body["by_outcome"].get("denied"):
        _next(
            "See the refused requests", ["events", "--outcome", "denied", *window], data_dir, url, token_file
        )
    else:
        _next("Check that nobody rewrote the log", ["verify"], data_dir, url, token_file)
