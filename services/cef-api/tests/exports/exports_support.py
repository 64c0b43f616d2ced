"""Helpers of the export tests: an invoice whose first line_refs would be formulas in a spreadsheet,
the outbox's events, CSV parsed back."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

import generate_world
import sqlalchemy as sa
from api_support import Api

# What a provider might type as a line_ref, each a formula to a spreadsheet that opens it raw.
FORMULA_REFS = ('=HYPERLINK("http://evil.invalid","x")', "+1", "@x", "-2")


@dataclass
class Submitted:
    api: Api
    invoice: dict[str, Any]
    inv: generate_world.Invoice
    refs: dict[str, str]  # the world's line_ref -> the one submitted

    @property
    def provider(self) -> dict[str, str]:
        return self.api.h("invoices:submit", org=self.inv.header["provider_code"])

    @property
    def staff(self) -> dict[str, str]:
        return self.api.h("invoices:validate", org=self.inv.header["commissioner_code"], sub="cef-officer")

    @property
    def finance(self) -> dict[str, str]:
        return self.api.h("invoices:read", org=self.inv.header["commissioner_code"])

    @property
    def lines_url(self) -> str:
        return f"/v1/invoices/{self.invoice['id']}/lines"


def with_line_refs(backing: bytes, refs: dict[str, str]) -> bytes:
    """The backing file with some line_refs replaced (columns, order and everything else kept)."""
    text = backing.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        row["line_ref"] = refs.get(row["line_ref"].strip(), row["line_ref"])
        writer.writerow(row)
    return out.getvalue().encode()


def events(api: Api, kind: str) -> list[dict[str, Any]]:
    with api.app.state.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT payload FROM audit_outbox ORDER BY id"))
        return [e for e in (json.loads(p) for (p,) in rows) if e["type"] == kind]


def parse(body: bytes) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(body.decode(), newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows
