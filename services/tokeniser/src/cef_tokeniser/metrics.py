"""The tokeniser's own metrics: re-identifications (successful POST /v1/detokenise calls).

Counted here, where every re-identification happens (the CEF API's reidentify endpoint and any
other configured peer both end here), once the call's audit event is committed. Labelled by kind
only (nhs_number, date_of_birth, postcode: a fixed set); never by caller, invoice or token."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class Reidentifications:
    """Counters of re-identification calls and of the tokens they turned back into identifiers."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "cef_reidentifications",
            "Re-identification calls answered (POST /v1/detokenise, audited), by kind.",
            ["kind"],
            registry=registry,
        )
        self.tokens = Counter(
            "cef_reidentified_tokens",
            "Tokens turned back into identifiers by those calls, by kind.",
            ["kind"],
            registry=registry,
        )

    def record(self, kind: str, *, resolved: int) -> None:
        self.calls.labels(kind).inc()
        self.tokens.labels(kind).inc(resolved)
