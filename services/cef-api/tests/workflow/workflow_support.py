"""What the workflow tests share: a world rich in query lines and the calls each party makes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import generate_world
import httpx
import sqlalchemy as sa
from api_support import Api

COMMISSIONER = "00C"
MESSAGE = "The claimed amount is above the tariff for this HRG: please explain the price."
ANSWER = "Our price list was out of date; the tariff price is right."


def query_world(seed: int = 23) -> generate_world.World:
    """Three invoices to 00C (RTR, RVW, RTR) of 40 lines, most of them queries of several reasons."""
    return generate_world.generate(
        seed=seed,
        patients=120,
        invoices=3,
        lines_per_invoice=40,
        scenarios={
            "valid": 3,
            "price_mismatch": 5,
            "tariff_not_found": 2,
            "patient_not_found": 2,
            "dob_mismatch": 1,
            "not_responsible": 1,
        },
    )


@dataclass
class Desk:
    api: Api
    invoices: list[dict[str, Any]]  # as submitted (InvoiceOut)
    generated: list[generate_world.Invoice]

    @property
    def client(self) -> httpx.AsyncClient:
        return self.api.client

    def staff(self, sub: str = "cef-officer", org: str = COMMISSIONER) -> dict[str, str]:
        return self.api.h("invoices:validate", org=org, sub=sub)

    def provider(self, index: int = 0, sub: str = "trust-clerk") -> dict[str, str]:
        return self.api.h("invoices:submit", org=self.invoices[index]["provider_code"], sub=sub)

    def id(self, index: int = 0) -> str:
        return str(self.invoices[index]["id"])

    async def query_lines(self, index: int = 0) -> list[dict[str, Any]]:
        """The invoice's query lines as staff see them, in line order."""
        lines = await self.api.lines(self.id(index), "invoices:validate", COMMISSIONER)
        return [x for x in lines if x["outcome"] == "query"]

    async def challenge(
        self, line_ref: str, index: int = 0, *, message: str = MESSAGE, **body: Any
    ) -> httpx.Response:
        return await self.client.post(
            f"/v1/invoices/{self.id(index)}/lines/{line_ref}/challenge",
            json={"message": message, **body},
            headers=self.staff(),
        )

    async def respond(
        self, challenge_id: str, index: int = 0, *, message: str = ANSWER, **body: Any
    ) -> httpx.Response:
        return await self.client.post(
            f"/v1/challenges/{challenge_id}/response",
            json={"message": message, **body},
            headers=self.provider(index),
        )

    async def decide(self, line_ref: str, body: dict[str, Any], index: int = 0) -> httpx.Response:
        return await self.client.post(
            f"/v1/invoices/{self.id(index)}/lines/{line_ref}/decision", json=body, headers=self.staff()
        )

    async def bulk(self, body: dict[str, Any], index: int = 0) -> httpx.Response:
        return await self.client.post(
            f"/v1/invoices/{self.id(index)}/queries/decision", json=body, headers=self.staff()
        )

    async def queue(self, headers: dict[str, str] | None = None, **params: Any) -> list[dict[str, Any]]:
        """Every page of the work queue, in order."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            r = await self.client.get("/v1/queries", params=query, headers=headers or self.staff())
            assert r.status_code == 200, r.text
            items += r.json()["items"]
            cursor = r.json()["next_cursor"]
            if not cursor:
                return items

    async def challenges(self, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
        """Every page of the caller's challenges, in order."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            r = await self.client.get("/v1/challenges", params=query, headers=headers)
            assert r.status_code == 200, r.text
            items += r.json()["items"]
            cursor = r.json()["next_cursor"]
            if not cursor:
                return items

    def sql(self, statement: str, **params: Any) -> list[Any]:
        with self.api.app.state.engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result) if result.returns_rows else []

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        rows = self.sql("SELECT payload FROM audit_outbox ORDER BY id")
        events = [json.loads(p) for (p,) in rows]
        return [e for e in events if kind is None or e["type"] == kind]

    def outbox_text(self) -> str:
        return "\n".join(p for (p,) in self.sql("SELECT payload FROM audit_outbox"))
