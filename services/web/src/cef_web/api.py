"""Calls from the web app to the CEF API and the audit service, as the signed-in person.

A refusal or failure of a service becomes an `ApiProblem`: pages show its detail (the services'
problem details say what to fix and never hold an identifier) in the NHS.UK error summary."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import Request
from starlette.responses import StreamingResponse

from cef_common.context import request_id_var
from cef_common.http import TraceAuth
from cef_web.auth import DelegatedTokens, Person


@dataclass
class ApiProblem(Exception):
    """A service's refusal or failure, as its problem details tell it."""

    status: int
    code: str
    title: str
    detail: str
    errors: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}"

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiProblem:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        raw_errors = body.get("errors")
        errors: list[Any] = raw_errors if isinstance(raw_errors, list) else []
        known = {"type", "title", "status", "detail", "code", "instance", "errors"}
        return cls(
            status=response.status_code,
            code=str(body.get("code") or f"http-{response.status_code}"),
            title=str(body.get("title") or response.reason_phrase or "Error"),
            detail=str(body.get("detail") or f"the service answered {response.status_code}"),
            errors=[e for e in errors if isinstance(e, dict)],
            extra={k: v for k, v in body.items() if k not in known},
        )


class Unavailable(ApiProblem):
    """A service could not be reached."""


class ServiceClient:
    """One service (cef-api or audit), called with the person's token."""

    def __init__(self, client: httpx.AsyncClient, tokens: DelegatedTokens, audience: str) -> None:
        self.client = client
        # Each call is a client span under the page's request span; its traceparent is sent on.
        self.client.auth = TraceAuth()
        self.tokens = tokens
        self.audience = audience

    def _headers(self, person: Person) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.tokens.for_person(person, self.audience)}"}
        rid = request_id_var.get()
        if rid:
            headers["X-Request-ID"] = rid
        return headers

    async def request(
        self,
        person: Person,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        files: Any = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        query = {k: v for k, v in (params or {}).items() if v not in (None, "", [])}
        try:
            response = await self.client.request(
                method,
                path,
                params=query,
                json=json,
                files=files,
                data=data,
                headers={**self._headers(person), **(headers or {})},
            )
        except httpx.HTTPError:
            raise Unavailable(
                status=503,
                code="service-unavailable",
                title="Service unavailable",
                detail=f"the {self.audience} service could not be reached; try again in a moment",
            ) from None
        if response.status_code not in ok:
            raise ApiProblem.from_response(response)
        return response

    async def get(self, person: Person, path: str, **params: Any) -> Any:
        return (await self.request(person, "GET", path, params=params)).json()

    async def post(
        self, person: Person, path: str, body: Any = None, *, ok: tuple[int, ...] = (200, 201)
    ) -> Any:
        response = await self.request(person, "POST", path, json=body, ok=ok)
        return response.json() if response.content else {}

    async def stream(
        self,
        person: Person,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        accept: str = "text/csv",
    ) -> tuple[httpx.Response, AsyncIterator[bytes]]:
        """A streamed GET (a CSV export): the response, once its status is known, and its body.
        The services answer CSV only when asked for it (`accept`)."""
        query = {k: v for k, v in (params or {}).items() if v not in (None, "", [])}
        request = self.client.build_request(
            "GET", path, params=query, headers={**self._headers(person), "Accept": accept}
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError:
            raise Unavailable(
                status=503,
                code="service-unavailable",
                title="Service unavailable",
                detail=f"the {self.audience} service could not be reached; try again in a moment",
            ) from None
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            raise ApiProblem.from_response(response)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_bytes():
                    yield chunk
            finally:
                await response.aclose()

        return response, body()


async def download(
    client: ServiceClient,
    person: Person,
    path: str,
    params: Mapping[str, Any] | None = None,
    *,
    filename: str,
    accept: str = "text/csv",
) -> StreamingResponse:
    """A service's export passed through to the browser as a file, streamed (never held whole), with
    the service's own filename when it gives one."""
    upstream, chunks = await client.stream(person, path, params, accept=accept)
    disposition = upstream.headers.get("content-disposition") or f'attachment; filename="{filename}"'
    return StreamingResponse(
        chunks,
        media_type=upstream.headers.get("content-type", accept),
        headers={"Content-Disposition": disposition, "Cache-Control": "no-store"},
    )


def cef_api(request: Request) -> ServiceClient:
    client: ServiceClient = request.app.state.cef_api
    return client


def audit_api(request: Request) -> ServiceClient:
    client: ServiceClient = request.app.state.audit_api
    return client
