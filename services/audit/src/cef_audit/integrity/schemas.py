"""Request and response bodies of the verification and checkpoint endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cef_common.openapi import model_examples

# Synthetic: a checkpoint's shape, signed by no key.
_CHECKPOINT_EXAMPLE: dict[str, Any] = {
    "origin": "cef-audit",
    "length": 1042,
    "head": "a3f9c2e18d7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a19",
    "issued_at": "2026-11-23T09:05:00.000000Z",
    "kid": "Xq3bW0u8h5dJ2kLr9sVtY1cN4mP7aE6fG0iZoQwHnB8",
    "jws": "eyJhbGciOiJFUzI1NiIsImtpZCI6IlhxM2JXMHU4In0.eyJsZW5ndGgiOjEwNDJ9.c2lnbmF0dXJlLWV4YW1wbGU",
}


class CheckpointOut(BaseModel):
    model_config = ConfigDict(json_schema_extra=model_examples([_CHECKPOINT_EXAMPLE]))

    origin: str
    length: int = Field(description="events covered: seq 1..length")
    head: str = Field(description="hash of event `length`")
    issued_at: str
    kid: str = Field(description="key id of the signing key, published at /.well-known/jwks.json")
    jws: str = Field(description="JWS (ES256, compact) over the RFC 8785 JSON {origin, length, head, time}")


class KeptCheckpoints(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=model_examples([{"checkpoints": [_CHECKPOINT_EXAMPLE["jws"]]}])
    )

    checkpoints: list[str] = Field(
        default_factory=list,
        max_length=100_000,
        description="checkpoints an auditor kept, as their `jws` strings; each must still hold",
    )


class VerifyOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=model_examples(
            [
                {
                    "valid": True,
                    "length": 1042,
                    "head": _CHECKPOINT_EXAMPLE["head"],
                    "first_bad_seq": None,
                    "reason": None,
                    "problems": [],
                    "events_checked": 1042,
                    "checkpoints_checked": 2,
                    "kept_checkpoints_checked": 1,
                    "latest_checkpoint": _CHECKPOINT_EXAMPLE,
                    "duration_ms": 12.5,
                }
            ]
        )
    )

    valid: bool
    length: int
    head: str
    first_bad_seq: int | None = Field(description="the first event that cannot be trusted (null when valid)")
    reason: str | None
    problems: list[str]
    events_checked: int
    checkpoints_checked: int
    kept_checkpoints_checked: int
    latest_checkpoint: dict[str, Any] | None
    duration_ms: float
