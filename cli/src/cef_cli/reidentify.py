"""`cef invoices reidentify` (CEF staff: one line's patient, once) and `cef audit reidentifications`
(auditors: who re-identified whom). Light at import, as every command module: httpx and rich are
imported inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from cef_cli.common import (
    DataDirOption,
    call,
    console,
    fail,
    local_token,
    out,
    print_table,
    problem_text,
    service_url,
    table,
)

PURPOSES = ("resolve-query", "provider-challenge", "audit-request")


def reidentify_line(
    invoice_id: Annotated[str, typer.Argument(help="The invoice's id.")],
    line_ref: Annotated[str, typer.Argument(help="The line's line_ref, as the line detail shows it.")],
    purpose: Annotated[str, typer.Option(help=f"Why: one of {', '.join(PURPOSES)}.")],
    reason: Annotated[
        str,
        typer.Option(help="What you need the identity for, in words (10-1000 characters; no identifiers)."),
    ],
    org: Annotated[str, typer.Option(help="Your commissioner's ODS code (the invoice's commissioner).")],
    sub: Annotated[str, typer.Option(help="Who you are (the development token's subject).")] = "cef-staff",
    data_dir: DataDirOption = Path("var"),
) -> None:
    """Re-identify one invoice line's patient as CEF staff of its commissioner: prints the NHS number,
    date of birth and postcode once. Audited, and limited per person per day."""
    import httpx

    if purpose not in PURPOSES:
        fail(f"--purpose must be one of {', '.join(PURPOSES)}", code=2)
    token = local_token(data_dir, scope="invoices:validate", audience="cef-api", org=org.upper(), sub=sub)
    with httpx.Client(
        base_url=service_url("cef-api"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(60, connect=5),
    ) as client:
        r = call(
            client,
            "POST",
            # A provider's line_ref may hold '?', '#' or spaces: it is one path segment.
            f"/v1/invoices/{quote(invoice_id, safe='')}/lines/{quote(line_ref, safe='')}/reidentify",
            json={"purpose": purpose, "reason": reason},
        )
    if r.status_code != 200:
        retry = f" (retry after {r.headers['retry-after']} s)" if "retry-after" in r.headers else ""
        fail(problem_text(r) + retry)
    body: dict[str, Any] = r.json()
    console.print(
        "[bold yellow]warning:[/] patient-identifiable data, shown once for the stated purpose. Do not copy, "
        "paste, save or forward it; this re-identification is recorded in the audit log.",
        highlight=False,
    )
    out.print(f"invoice {body['invoice_id']} line {body['line_ref']} ({body['purpose']})", highlight=False)
    out.print(f"  NHS number     {body.get('nhs_number') or '(unknown)'}", highlight=False)
    out.print(f"  date of birth  {body.get('date_of_birth') or '(none on the line)'}", highlight=False)
    out.print(f"  postcode       {body.get('postcode') or '(none on the line)'}", highlight=False)


def reidentifications(
    person: Annotated[str | None, typer.Option(help="The person's subject (sub).")] = None,
    patient_token: Annotated[
        str | None, typer.Option("--patient-token", help="The patient's token (patient_token).")
    ] = None,
    outcome: Annotated[list[str] | None, typer.Option(help="success, denied or failure.")] = None,
    since: Annotated[str | None, typer.Option(help="Recorded at or after (ISO 8601 with a zone).")] = None,
    until: Annotated[str | None, typer.Option(help="Recorded before (ISO 8601 with a zone).")] = None,
    purpose: Annotated[str | None, typer.Option(help="Why you are looking (recorded in the log).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many to show, newest first.")] = 50,
    data_dir: DataDirOption = Path("var"),
) -> None:
    """List re-identifications of patients (newest first): by person, by patient token, or both."""
    import httpx

    params: dict[str, Any] = {
        k: v
        for k, v in {
            "person": person,
            "patient_token": patient_token,
            "outcome": outcome,
            "since": since,
            "until": until,
            "purpose": purpose,
        }.items()
        if v
    }
    token = local_token(data_dir, scope="audit:read", audience="audit", sub="cef-audit-reidentifications")
    with httpx.Client(
        base_url=service_url("audit"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(60, connect=5),
    ) as client:
        r = call(client, "GET", "/v1/reidentifications", params={**params, "limit": limit, "order": "desc"})
    if r.status_code != 200:
        fail(problem_text(r))
    shown = table("recorded at", "person", "invoice, line", "patient token", "purpose, outcome")
    # A token is what an auditor copies into the next query: whole, on one line.
    shown.columns[3].no_wrap = True
    shown.columns[3].min_width = 27
    for e in r.json()["items"]:
        detail = e.get("detail") or {}
        line = detail.get("line_ref")
        shown.add_row(
            e["recorded_at"][:19].replace("T", " "),
            "\n".join(x for x in (e["actor"]["sub"], e["actor"].get("org")) if x),
            f"{detail.get('invoice_id')}\n{line if isinstance(line, str) else '(not known)'}",
            str(detail.get("patient_token") or ""),
            f"{e.get('purpose') or ''}\n{e['outcome']}"
            + (f": {detail['reason']}" if e["outcome"] != "success" and detail.get("reason") else ""),
        )
    print_table(shown)


def register(*, audit: typer.Typer, invoices: typer.Typer) -> None:
    """Adds `cef audit reidentifications` and `cef invoices reidentify`."""
    audit.command("reidentifications")(reidentifications)
    invoices.command("reidentify")(reidentify_line)
