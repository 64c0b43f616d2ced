"""GET /v1/summary: how many events the log recorded in a period, by type, outcome and organisation
(audit:read; audited). Counted by the database (events.repository.count_events)."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Depends, Query, Request

from cef_audit.access import audit_log, record_own, require_reader
from cef_audit.events.repository import CountRow, EventFilter, count_events
from cef_audit.events.schemas import EventSummary
from cef_audit.log.records import utc_stamp
from cef_audit.log.sequencer import AuditLog
from cef_common.audit import AuditOutcome
from cef_common.auth import Principal
from cef_common.openapi import problems

router = APIRouter(prefix="/v1/summary", tags=["events"])

# What by_org calls the events whose actor names no organisation.
NO_ORG = "(none)"


def _most_first(counts: Counter[str]) -> dict[str, int]:
    # The most frequent first; ties by name, so that the same log always answers the same.
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def summarise(rows: list[CountRow], *, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    """The summary of the counts `count_events` answered (one per type, outcome and organisation)."""
    by_type: Counter[str] = Counter()
    by_outcome: Counter[str] = Counter(dict.fromkeys(get_args(AuditOutcome), 0))
    by_org: Counter[str] = Counter()
    by_type_outcome: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        by_type[row.type] += row.count
        by_outcome[row.outcome] += row.count
        by_org[NO_ORG if row.org is None else row.org] += row.count
        by_type_outcome[row.type][row.outcome] += row.count
    types = _most_first(by_type)
    return {
        "since": utc_stamp(since) if since is not None else None,
        "until": utc_stamp(until) if until is not None else None,
        "total": sum(types.values()),
        "by_type": types,
        "by_outcome": dict(by_outcome),
        "by_org": _most_first(by_org),
        "by_type_outcome": {t: _most_first(by_type_outcome[t]) for t in types},
    }


@router.get(
    "",
    response_model=EventSummary,
    summary="How many events were recorded in a period: in all, by type, by outcome, by organisation "
    "and by type and outcome",
    responses=problems(
        400,
        described={
            400: "naive-datetime: since and until need a time zone, e.g. 2026-11-01T00:00:00Z; also "
            "bad-datetime or purpose-holds-identifier, `detail` says what to change"
        },
    ),
)
def get_summary(
    request: Request,
    principal: Annotated[Principal, Depends(require_reader)],
    log: Annotated[AuditLog, Depends(audit_log)],
    since: Annotated[datetime | None, Query(description="recorded at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="recorded before (ISO 8601)")] = None,
    purpose: Annotated[
        str | None,
        Query(max_length=1000, description="why the auditor is looking (recorded in the query's own event)"),
    ] = None,
) -> dict[str, Any]:
    event_filter = EventFilter(since=since, until=until)
    summary = summarise(count_events(request.app.state.engine, event_filter), since=since, until=until)
    record_own(
        log,
        principal=principal,
        action="read",
        type="audit.query",
        subtype="summary",
        count=summary["total"],
        purpose=purpose,
        detail={"filters": event_filter.described()},
    )
    return summary
