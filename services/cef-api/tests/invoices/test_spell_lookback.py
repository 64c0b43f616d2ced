"""The pathway checks' look-back read per batch (a commissioner's spells beyond `reference_memory_rows`),
on both databases: only the batch's patients and the spells that reach into the batch's dates are
read, and the lines are decided as when the whole history is held in memory."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import generate_world
import pytest
from api_support import Api, api_settings, running_api

from cef_common.testing import DevIssuer

PATHWAY = {"OVERLAPPING_SPELL", "ATTENDANCE_DURING_SPELL"}


def _patients(world: generate_world.World, commissioner: str, count: int) -> list[str]:
    found = [
        p.nhs_number
        for p in world.patients
        if p.in_trace and len(p.registrations) == 1 and p.registrations[0][0].commissioner == commissioner
    ]
    assert len(found) >= count
    return found[:count]


def _backing(hrg: str, lines: list[tuple[str, str, str, date, date | None]]) -> bytes:
    rows = ["line_ref,nhs_number,point_of_delivery,hrg_code,activity_date,discharge_date,amount"]
    for ref, nhs, pod, activity, discharge in lines:
        rows.append(f"{ref},{nhs},{pod},{hrg},{activity},{discharge or ''},1.00")
    return ("\n".join(rows) + "\n").encode()


async def _pathway_reasons(
    api: Api, number: str, provider: str, commissioner: str, backing: bytes
) -> dict[str, set[str]]:
    header = {
        "invoice_number": number,
        "provider_code": provider,
        "commissioner_code": commissioner,
        "invoice_date": "2019-05-05",
        "period_start": "2019-04-01",
        "period_end": "2019-04-30",
    }
    r = await api.submit(header, backing)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "validated"
    got = await api.lines(r.json()["id"], "invoices:submit", provider)
    # Every line is priced wrong on purpose (a query, never rejected): only the pathway reasons matter.
    assert all(x["outcome"] == "query" for x in got)
    return {x["line_ref"]: set(x["reasons"]) & PATHWAY for x in got}


@pytest.mark.parametrize("memory_rows", [0, 1_000_000])
async def test_a_long_history_read_per_batch_decides_as_one_held_in_memory(
    data_dir: Path,
    api_db: str,
    tokeniser: Any,
    dev_issuer: DevIssuer,
    world: generate_world.World,
    memory_rows: int,
) -> None:
    settings = api_settings(
        data_dir, api_db, tokeniser.url, validation_batch_lines=2, reference_memory_rows=memory_rows
    )
    async with running_api(settings, dev_issuer) as api:
        await api.load_world(world)
        hrg = sorted({t.hrg_code for t in world.tariff})[0]
        here = sorted({p.commissioner for p in world.practices})[0]
        p, q = _patients(world, here, 2)
        d = lambda day: date(2019, 4, day)  # noqa: E731

        first = _backing(hrg, [("a1", p, "EL", d(10), d(15)), ("a2", q, "NEL", d(2), d(8))])
        assert await _pathway_reasons(api, "RTR-1", "RTR", here, first) == {"a1": set(), "a2": set()}

        # Two-line batches: after the first invoice, the chain's spells are more than 0 rows, so with
        # memory_rows 0 each batch reads its patients' spells within its dates from the database.
        second = _backing(
            hrg,
            [
                ("b1", p, "OPFU", d(12), None),  # during a1 (another provider's invoice)
                ("b2", q, "OPFU", d(8), None),  # a2's discharge day, the batch's first day: not during
                ("b3", p, "NEL", d(14), d(16)),  # shares the night of the 14th with a1
                ("b4", p, "EL", d(15), d(17)),  # shares the night of the 15th with b3, same batch
                ("b5", p, "OPFU", d(16), None),  # during b4, an earlier batch of this invoice
                ("b6", q, "DC", d(5), None),  # during a2, which began before this batch's dates
                ("b7", q, "EL", d(8), d(9)),  # back to back with a2
                ("b8", p, "OPFA", d(17), None),  # b4's discharge day
            ],
        )
        assert await _pathway_reasons(api, "RVW-1", "RVW", here, second) == {
            "b1": {"ATTENDANCE_DURING_SPELL"},
            "b2": set(),
            "b3": {"OVERLAPPING_SPELL"},
            "b4": {"OVERLAPPING_SPELL"},
            "b5": {"ATTENDANCE_DURING_SPELL"},
            "b6": {"ATTENDANCE_DURING_SPELL"},
            "b7": set(),
            "b8": set(),
        }
