"""What the tokeniser's tests share beyond fixtures."""

from __future__ import annotations

from typing import Any

# What a peer re-identifies for: the person, the invoice and the line (POST /v1/detokenise needs them).
WORK: dict[str, Any] = {
    "on_behalf_of": {"sub": "staff-1", "org": "00C", "issuer": "https://login.example.nhs.uk"},
    "invoice_id": "0b7c2f0e-3a5d-4d7e-9a51-6f0f5c1d2e3a",
    "line_ref": "L0042",
}
