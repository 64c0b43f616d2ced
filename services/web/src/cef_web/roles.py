"""The roles of the web app, the scope that makes each, and the service each one calls."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    name: str
    scope: str
    # The service the role's pages call with the person's token.
    audience: str
    label: str
    # What the role's organisation code is: a provider (trust) or a commissioner.
    org_kind: str | None
    home: str
    description: str


ROLES: dict[str, Role] = {
    r.name: r
    for r in (
        Role(
            "provider",
            "invoices:submit",
            "cef-api",
            "Provider finance",
            "provider",
            "/provider/invoices",
            "Submit invoices, follow their validation and answer challenges.",
        ),
        Role(
            "staff",
            "invoices:validate",
            "cef-api",
            "CEF staff",
            "commissioner",
            "/staff/queue",
            "Resolve query lines, challenge and decide them, approve invoices.",
        ),
        Role(
            "finance",
            "invoices:read",
            "cef-api",
            "Finance",
            "commissioner",
            "/finance/approved",
            "Pay approved invoices and record payments.",
        ),
        Role(
            "board",
            "reports:read",
            "cef-api",
            "Board",
            "commissioner",
            "/board/reports",
            "Outcomes of validation by month, provider and reason.",
        ),
        Role(
            "auditor",
            "audit:read",
            "audit",
            "Auditor",
            None,
            "/auditor/events",
            "Search the audit log, follow an entity's history, verify the chain.",
        ),
    )
}

# Scopes the web app may carry for a person, by the service they are for: `cef up` and the
# deployment trust the web app's key for these and nothing else.
SCOPES_FOR = {
    "cef-api": sorted({r.scope for r in ROLES.values() if r.audience == "cef-api"}),
    "audit": sorted({r.scope for r in ROLES.values() if r.audience == "audit"}),
}


def roles_of(scopes: frozenset[str]) -> list[Role]:
    return [r for r in ROLES.values() if r.scope in scopes]
