"""Request and response bodies of the verification and checkpoint endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class CheckpointOut(BaseModel):
    origin: str
    length: int = Field(description="events covered: seq 1..length")
    head: str = Field(description="hash of event `length`")
    issued_at: str
    kid: str = Field(description="key id of the signing key, published at /.well-known/jwks.json")
    jws: str = Field(description="JWS (ES256, compact) over the RFC 8785 JSON {origin, length, head, time}")


class KeptCheckpoints(BaseModel):
    checkpoints: list[str] = Field(
        default_factory=list,
        max_length=100_000,
        description="checkpoints an auditor kept, as their `jws` strings; each must still hold",
    )


class VerifyOut(BaseModel):
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
