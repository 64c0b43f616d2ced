"""Generated worlds through the HTTP API match the outcomes they were designed to have."""

from __future__ import annotations

from decimal import Decimal

import generate_world
from api_support import Api


def _compare(world: generate_world.World, got: dict[tuple[str, str], dict]) -> list[str]:
    bad = []
    for inv in world.invoices:
        for e in inv.expected:
            g = got[(inv.name, e.line_ref)]
            want = (e.outcome, list(e.reasons), e.responsible_commissioner, e.expected_amount)
            have = (
                g["outcome"],
                sorted(g["reasons"]),
                g["responsible_commissioner"] or "",
                g["expected_amount"] or "",
            )
            if want != have:
                bad.append(f"{inv.name}/{e.line_ref}: got {have}, want {want}")
    return bad


async def test_generated_world_matches_its_design(api: Api, world: generate_world.World) -> None:
    await api.load_world(world)
    got: dict[tuple[str, str], dict] = {}
    for inv in world.invoices:
        r = await api.submit(inv.header, inv.backing)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["status"] == "validated"
        summary = generate_world.summary_of(inv)
        assert body["summary"] == {
            "lines": int(summary["lines"]),
            "valid": int(summary["valid"]),
            "query": int(summary["query"]),
            "rejected": int(summary["rejected"]),
            "claimed_amount": summary["claimed_amount"],
            "validated_amount": summary["validated_amount"],
        }
        for item in await api.lines(body["id"], "invoices:submit", inv.header["provider_code"]):
            got[(inv.name, item["line_ref"])] = item
            assert set(item) == {
                "line_ref",
                "outcome",
                "reasons",
                "responsible_commissioner",
                "expected_amount",
            }
    assert _compare(world, got) == []
    assert sum(Decimal(i["expected_amount"] or 0) for i in got.values()) > 0


async def test_small_batches_and_per_batch_reference_reads_give_the_same_outcomes(
    data_dir, api_db, tokeniser, dev_issuer, world: generate_world.World
) -> None:
    """Nothing held in memory (trace and duplicate keys read per batch of 7 lines)."""
    from api_support import api_settings, running_api

    settings = api_settings(
        data_dir,
        api_db,
        tokeniser.url,
        validation_batch_lines=7,
        reference_memory_rows=0,
        tokenise_batch_size=5,
    )
    async with running_api(settings, dev_issuer) as api:
        await api.load_world(world)
        got: dict[tuple[str, str], dict] = {}
        for inv in world.invoices:
            r = await api.submit(inv.header, inv.backing)
            assert r.status_code == 201, r.text
            for item in await api.lines(r.json()["id"], "invoices:submit", inv.header["provider_code"]):
                got[(inv.name, item["line_ref"])] = item
    assert _compare(world, got) == []
