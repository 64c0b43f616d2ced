"""Typed client of the tokeniser: identifiers go in, in large batches; tokens come back."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson
import structlog

from cef_api.config import Settings
from cef_common.app import peer_client
from cef_common.auth import ServiceTokens
from cef_common.errors import ServiceUnavailable

log = structlog.get_logger(__name__)

Kind = Literal["nhs_number", "date_of_birth", "postcode"]
CONTEXT = "cef"
# A harmless probe (not anyone's identifier) for readiness and for the key version in force.
PROBE: dict[str, Any] = {"kind": "date_of_birth", "values": ["2000-01-01"], "context": CONTEXT}


class TokeniserUnavailable(ServiceUnavailable):
    """The tokeniser did not answer, or answered with something other than tokens."""

    code = "tokeniser-unavailable"


@dataclass(frozen=True, slots=True)
class TokenBatch:
    key_version: int
    tokens: list[str | None]


class TokeniserClient:
    """One client per service process; safe to share between threads (httpx.Client is)."""

    def __init__(self, client: httpx.Client, *, batch_size: int) -> None:
        self._client = client
        self.batch_size = batch_size

    @classmethod
    def from_settings(cls, settings: Settings, tokens: ServiceTokens) -> TokeniserClient:
        client = peer_client(
            settings,
            tokens,
            base_url=settings.tokeniser_url,
            audience="tokeniser",
            scopes=["tokenise"],
            read_timeout=settings.tokeniser_read_timeout,
        )
        return cls(client, batch_size=settings.tokenise_batch_size)

    def close(self) -> None:
        self._client.close()

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            # orjson both ways: a batch is ~100,000 values, and this runs beside validation's GIL.
            response = self._client.post(
                "/v1/tokenise", content=orjson.dumps(body), headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise TokeniserUnavailable(
                f"the tokeniser could not be reached ({type(exc).__name__}); try again shortly"
            ) from None
        if response.status_code != 200:
            # The tokeniser's problem detail never carries the values, so it is safe to pass on.
            detail = ""
            try:
                detail = str(response.json().get("detail", ""))[:300]
            except ValueError:
                pass
            raise TokeniserUnavailable(
                f"the tokeniser answered {response.status_code}{': ' + detail if detail else ''}"
            )
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise TokeniserUnavailable("the tokeniser's answer is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise TokeniserUnavailable("the tokeniser's answer has no tokens")
        return data

    def tokenise(self, kind: Kind, values: Sequence[str], *, key_version: int | None = None) -> TokenBatch:
        """Tokens for `values` in input order (None where the tokeniser found a value invalid).

        Splits into calls of `batch_size` values; every call is pinned to the key version of the
        first answer so that all tokens of one request compare with each other."""
        tokens: list[str | None] = []
        version = key_version
        for start in range(0, len(values), self.batch_size):
            chunk = list(values[start : start + self.batch_size])
            body: dict[str, Any] = {"kind": kind, "values": chunk, "context": CONTEXT}
            if version is not None:
                body["key_version"] = version
            data = self._post(body)
            got = data["tokens"]
            if len(got) != len(chunk):
                raise TokeniserUnavailable("the tokeniser returned a different number of tokens than values")
            version = int(data["key_version"])
            tokens.extend(t if isinstance(t, str) else None for t in got)
        if version is None:
            version = self.current_key_version()
        return TokenBatch(key_version=version, tokens=tokens)

    def current_key_version(self) -> int:
        return int(self._post(dict(PROBE))["key_version"])

    def wait_until_ready(self, timeout: float) -> None:
        """Retries an empty tokenise call until the tokeniser answers (bounded by `timeout`)."""
        deadline = time.monotonic() + timeout
        delay = 0.5
        while True:
            try:
                self._post(dict(PROBE))
                return
            except TokeniserUnavailable:
                if time.monotonic() >= deadline:
                    raise
                log.info("tokeniser_not_ready", retry_in=delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


class ReidentificationUnavailable(ServiceUnavailable):
    """The tokeniser could not give the identities back (unreachable, refused, or could not audit)."""

    code = "reidentification-unavailable"


@dataclass(frozen=True, slots=True)
class OnBehalfOf:
    """The person this service re-identifies for, from their verified token."""

    sub: str
    issuer: str
    org: str | None


class Detokeniser:
    """This service's re-identification calls to the tokeniser, with its own token (scope
    detokenise), always for a named person and one invoice line. Separate from TokeniserClient so
    that the token validation uses can never re-identify."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    @classmethod
    def from_settings(cls, settings: Settings, tokens: ServiceTokens) -> Detokeniser:
        return cls(
            peer_client(
                settings, tokens, base_url=settings.tokeniser_url, audience="tokeniser", scopes=["detokenise"]
            )
        )

    def close(self) -> None:
        self._client.close()

    def detokenise(
        self,
        kind: Kind,
        tokens: Sequence[str],
        *,
        purpose: str,
        on_behalf_of: OnBehalfOf,
        invoice_id: str,
        line_ref: str,
    ) -> list[str | None]:
        """The originals of `tokens` in order (None where the tokeniser knows none). The tokeniser has
        committed its audit event, naming the person, the invoice, the line and the purpose, before
        it answers; the values are never logged here."""
        body = {
            "kind": kind,
            "tokens": list(tokens),
            "purpose": purpose,
            "context": CONTEXT,
            "on_behalf_of": {"sub": on_behalf_of.sub, "org": on_behalf_of.org, "issuer": on_behalf_of.issuer},
            "invoice_id": invoice_id,
            "line_ref": line_ref,
        }
        try:
            response = self._client.post(
                "/v1/detokenise", content=orjson.dumps(body), headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise ReidentificationUnavailable(
                f"the tokeniser could not be reached ({type(exc).__name__}); nothing was re-identified: "
                "try again shortly"
            ) from None
        if response.status_code != 200:
            # The tokeniser's problems carry codes and reasons, never values: safe to pass on.
            code, detail = "", ""
            try:
                problem = response.json()
                if isinstance(problem, dict):
                    code, detail = str(problem.get("code", ""))[:60], str(problem.get("detail", ""))[:300]
            except ValueError:
                pass
            raise ReidentificationUnavailable(
                f"the tokeniser answered {response.status_code}{f' ({code})' if code else ''}"
                f"{': ' + detail if detail else ''}; nothing was re-identified",
                extra={"tokeniser_status": response.status_code, "tokeniser_code": code or None},
            )
        try:
            values = orjson.loads(response.content)["values"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise ReidentificationUnavailable("the tokeniser's answer has no values") from None
        if not isinstance(values, list) or len(values) != len(tokens):
            raise ReidentificationUnavailable(
                "the tokeniser returned a different number of values than tokens"
            )
        return [v if isinstance(v, str) else None for v in values]
