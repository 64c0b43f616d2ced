"""Errors of tokenising and re-identifying, each saying what the caller should change."""

from __future__ import annotations

from cef_common.errors import Forbidden, ServiceUnavailable, Unprocessable


class ContextNotAllowed(Forbidden):
    code = "context-not-allowed"


class UnknownKeyVersion(Unprocessable):
    code = "unknown-key-version"


class AuditUnavailable(ServiceUnavailable):
    code = "audit-unavailable"


class StoreUnavailable(ServiceUnavailable):
    code = "token-store-unavailable"
