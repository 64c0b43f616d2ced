"""The CEF API's metrics, read from its database when Prometheus scrapes: invoices by status, the
validation jobs queued, running and failed, and the lines validated by outcome.

Read at scrape time from the invoice table (one grouped query over invoices, never over lines),
so the figures are the same whichever replica or worker node is scraped, cover jobs run by any of
them, and cost the validation code nothing. Labels are statuses and outcomes: fixed sets."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from cef_api.invoices.models import Invoice, InvoiceStatus
from cef_common.metrics import DatabaseCollector, ServiceMetrics

# A validation job's state, as an invoice's status tells it.
JOB_STATES = {
    InvoiceStatus.RECEIVED: "queued",
    InvoiceStatus.VALIDATING: "running",
    InvoiceStatus.FAILED: "failed",
}
OUTCOMES = ("valid", "query", "rejected")


class InvoiceCollector(DatabaseCollector):
    """cef_invoices{status}, cef_validation_jobs{state}, cef_lines_validated_total{outcome} and
    cef_lines_in_validation."""

    name = "invoices"

    def families(self) -> list[Any]:
        return [
            GaugeMetricFamily("cef_invoices", "Invoices held, by status.", labels=["status"]),
            GaugeMetricFamily(
                "cef_validation_jobs",
                "Validation jobs by state: queued (received), running (validating), failed.",
                labels=["state"],
            ),
            CounterMetricFamily(
                "cef_lines_validated",
                "Invoice lines validated, by outcome (lines of invoices whose validation finished).",
                labels=["outcome"],
            ),
            GaugeMetricFamily(
                "cef_lines_in_validation", "Lines validated so far of the invoices being validated now."
            ),
        ]

    def fill(self, conn: sa.Connection, families: list[Any]) -> None:
        t = Invoice.__table__  # type: ignore[attr-defined]
        rows = conn.execute(
            sa.select(
                t.c.status,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(t.c.valid), 0),
                sa.func.coalesce(sa.func.sum(t.c.query), 0),
                sa.func.coalesce(sa.func.sum(t.c.rejected), 0),
                sa.func.coalesce(sa.func.sum(t.c.lines_done), 0),
            ).group_by(t.c.status)
        ).all()
        by_status = {row[0]: row for row in rows}
        invoices, jobs, lines, in_validation = families
        for status in InvoiceStatus.ALL:
            row = by_status.get(status)
            invoices.add_metric([status], float(row[1] if row is not None else 0))
        for status, state in JOB_STATES.items():
            row = by_status.get(status)
            jobs.add_metric([state], float(row[1] if row is not None else 0))
        # A failed job's counts are reset to 0 and a running job's are not final: both add nothing.
        for i, outcome in enumerate(OUTCOMES, start=2):
            lines.add_metric([outcome], float(sum(int(row[i]) for row in rows)))
        running = by_status.get(InvoiceStatus.VALIDATING)
        in_validation.add_metric([], float(running[5] if running is not None else 0))


def register_api_metrics(app: FastAPI) -> None:
    """Adds the CEF API's collectors to the app's registry (called once, from create_app)."""
    metrics: ServiceMetrics = app.state.metrics
    metrics.register(InvoiceCollector(lambda: getattr(app.state, "engine", None)))
