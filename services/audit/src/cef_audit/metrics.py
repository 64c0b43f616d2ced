"""The audit service's metrics, read from its database when Prometheus scrapes: the length of the
hash chain, and the last signed checkpoint (its age, and how much of the chain it covers).

Read at scrape time, not counted in the sequencer: the figures are the log's own, the same for
every replica, and appending pays nothing for them."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily

from cef_audit.log.tables import audit_checkpoints, audit_head
from cef_common.metrics import DatabaseCollector, seconds_since


class AuditChainCollector(DatabaseCollector):
    """cef_audit_chain_length, cef_audit_checkpoint_length and cef_audit_last_checkpoint_age_seconds."""

    name = "audit_chain"

    def families(self) -> list[Any]:
        return [
            GaugeMetricFamily("cef_audit_chain_length", "Events in the audit log's hash chain."),
            GaugeMetricFamily(
                "cef_audit_checkpoint_length",
                "Events covered by the last signed checkpoint (the chain length when it was issued).",
            ),
            GaugeMetricFamily(
                "cef_audit_last_checkpoint_age_seconds",
                "Seconds since the last signed checkpoint was issued (absent before the first).",
            ),
        ]

    def fill(self, conn: sa.Connection, families: list[Any]) -> None:
        length = conn.execute(sa.select(audit_head.c.length).where(audit_head.c.id == 1)).scalar()
        families[0].add_metric([], float(length or 0))
        last = conn.execute(
            sa.select(audit_checkpoints.c.length, audit_checkpoints.c.issued_at)
            .order_by(audit_checkpoints.c.length.desc())
            .limit(1)
        ).first()
        families[1].add_metric([], float(last.length if last is not None else 0))
        age = seconds_since(last.issued_at) if last is not None else None
        if age is not None:
            families[2].add_metric([], age)
