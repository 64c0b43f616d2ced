"""Factories and helpers shared by the audit service's tests."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from cef_common.audit import AuditActor, AuditEntity, AuditEventIn


def make_event(n: int = 0, **overrides: Any) -> AuditEventIn:
    values: dict[str, Any] = {
        "action": "read",
        "type": "invoice.read",
        "outcome": "success",
        "actor": AuditActor(sub=f"user-{n % 3}", org="RX1" if n % 2 else "Q99", client="portal"),
        "source": "cef-api",
        "entity": AuditEntity(type="invoice", id=f"inv-{n}", count=n),
        "purpose": "validation",
        "request_id": f"req-{n}",
        "detail": {"n": n},
        **overrides,
    }
    return AuditEventIn(**values)


def event_json(n: int = 0, **overrides: Any) -> dict[str, Any]:
    return make_event(n, **overrides).model_dump(mode="json")


def execute(url: str, sql: str, params: dict[str, Any] | None = None) -> None:
    """Runs SQL as the database owner (what someone with database access could do)."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(sql), params or {})
    finally:
        engine.dispose()
