"""Checks 14 and 15 through the API, on both databases: spells look back across the providers of one
commissioner (never across commissioners), across batches and invoices, in submission order; a
rejected line never counts, and a withdrawn invoice's spells stop counting."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import generate_world
import sqlalchemy as sa
from api_support import Api, api_settings, running_api

from cef_common.testing import DevIssuer

COLUMNS = (
    "line_ref",
    "nhs_number",
    "point_of_delivery",
    "hrg_code",
    "activity_date",
    "discharge_date",
    "amount",
)


class Pricing:
    """Prices lines of one world by the tariff formula of validation-rules.md, independently of the
    engine, so that a line is valid unless a pathway check says otherwise."""

    def __init__(self, world: generate_world.World) -> None:
        self.tariff = {(t.hrg_code, t.point_of_delivery): t for t in world.tariff}
        self.mff = {code: mff for code, _, mff in world.providers}
        self.hrg = sorted({t.hrg_code for t in world.tariff})[0]

    def amount(self, provider: str, pod: str, admission: date, discharge: date | None) -> str:
        t = self.tariff[(self.hrg, pod)]
        mff = self.mff[provider]
        price = generate_world.q(t.price * mff)
        if pod in ("EL", "NEL") and discharge is not None:
            excess = max(0, (discharge - admission).days - t.trim_point_days)
            price += excess * generate_world.q(t.excess_bed_day_price * mff)
        return f"{price:.2f}"


def _patients(world: generate_world.World, commissioner: str, count: int) -> list[str]:
    """NHS numbers of traced patients registered only with a practice of `commissioner`."""
    found = [
        p.nhs_number
        for p in world.patients
        if p.in_trace and len(p.registrations) == 1 and p.registrations[0][0].commissioner == commissioner
    ]
    assert len(found) >= count
    return found[:count]


def _invoice(
    pricing: Pricing,
    number: str,
    provider: str,
    commissioner: str,
    lines: list[tuple[str, str, str, date, date | None]],
) -> tuple[dict[str, str], bytes]:
    """(line_ref, nhs_number, pod, activity, discharge) lines of April 2019, each priced exactly;
    a line_ref starting with "out" is dated in March, outside the period (rejected)."""
    header = {
        "invoice_number": number,
        "provider_code": provider,
        "commissioner_code": commissioner,
        "invoice_date": "2019-05-05",
        "period_start": "2019-04-01",
        "period_end": "2019-04-30",
    }
    rows = [",".join(COLUMNS)]
    for ref, nhs, pod, activity, discharge in lines:
        amount = pricing.amount(provider, pod, activity, discharge)
        dates = [activity.isoformat(), discharge.isoformat() if discharge else ""]
        rows.append(",".join([ref, nhs, pod, pricing.hrg, *dates, amount]))
    return header, ("\n".join(rows) + "\n").encode()


async def _submit(api: Api, header: dict[str, str], backing: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    r = await api.submit(header, backing)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "validated", body
    got = await api.lines(body["id"], "invoices:submit", header["provider_code"])
    return body, {x["line_ref"]: (x["outcome"], tuple(x["reasons"])) for x in got}


def _spells(api: Api) -> list[tuple[Any, ...]]:
    with api.app.state.engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT s.invoice_seq, s.line_no, s.commissioner_code, s.admission, s.discharge "
                    "FROM invoice_spell s ORDER BY s.invoice_seq, s.line_no"
                )
            )
        )


async def test_spells_look_back_across_providers_of_one_commissioner_in_order(
    data_dir: Path, api_db: str, tokeniser: Any, dev_issuer: DevIssuer, world: generate_world.World
) -> None:
    # Two-line batches: a line's earlier spells come from the database as well as from its batch.
    settings = api_settings(data_dir, api_db, tokeniser.url, validation_batch_lines=2)
    async with running_api(settings, dev_issuer) as api:
        await api.load_world(world)
        pricing = Pricing(world)
        codes = sorted({p.commissioner for p in world.practices})
        here, elsewhere = codes[0], codes[1]
        p, q, r = _patients(world, here, 3)
        other = _patients(world, elsewhere, 1)[0]
        d = lambda day: date(2019, 4, day)  # noqa: E731

        header, backing = _invoice(
            pricing,
            "RTR-1",
            "RTR",
            here,
            [
                ("a1", p, "EL", d(10), d(15)),  # p: nights 10-14
                ("a2", p, "OPFU", d(12), None),  # during a1
                ("a3", p, "OPFA", d(15), None),  # a1's discharge day: not during
                ("a4", p, "OPFU", d(10), None),  # a1's admission day: not during
                ("a5", q, "NEL", d(2), d(8)),  # q: nights 2-7
                ("a6", r, "EL", d(1), d(5)),  # r: nights 1-4
                ("a7", other, "EL", d(2), d(8)),  # another commissioner's patient: rejected
                ("a8", q, "EL", d(3), d(3)),  # discharged on the day: no nights
            ],
        )
        body, got = await _submit(api, header, backing)
        assert got == {
            "a1": ("valid", ()),
            "a2": ("query", ("ATTENDANCE_DURING_SPELL",)),
            "a3": ("valid", ()),
            "a4": ("valid", ()),
            "a5": ("valid", ()),
            "a6": ("valid", ()),
            "a7": ("rejected", ("NOT_RESPONSIBLE_COMMISSIONER",)),
            "a8": ("valid", ()),
        }
        # The summary is recounted: a2 is a query, and its amount is not validated.
        summary = body["summary"]
        assert (summary["valid"], summary["query"], summary["rejected"]) == (6, 1, 1)
        valid_total = sum(
            Decimal(pricing.amount("RTR", pod, a, dis))
            for ref, _, pod, a, dis in [
                ("a1", p, "EL", d(10), d(15)),
                ("a3", p, "OPFA", d(15), None),
                ("a4", p, "OPFU", d(10), None),
                ("a5", q, "NEL", d(2), d(8)),
                ("a6", r, "EL", d(1), d(5)),
                ("a8", q, "EL", d(3), d(3)),
            ]
        )
        assert Decimal(summary["validated_amount"]) == valid_total
        first_seq = _spells(api)[0][0]
        assert [(row[1], row[2]) for row in _spells(api)] == [(1, here), (5, here), (6, here)]

        # Another provider, the same commissioner: a2's look-back spans both providers.
        header, backing = _invoice(
            pricing,
            "RVW-1",
            "RVW",
            here,
            [
                ("b1", p, "NEL", d(14), d(20)),  # shares the night of the 14th with a1
                ("b2", r, "EL", d(5), d(7)),  # back to back with a6
                ("b3", q, "DC", d(4), None),  # during a5
                ("out1", p, "EL", date(2019, 3, 28), d(25)),  # rejected (outside the period), flagged
                ("b4", p, "OPFU", d(22), None),  # inside out1 only, which never counts
            ],
        )
        withdrawn, got = await _submit(api, header, backing)
        assert got == {
            "b1": ("query", ("OVERLAPPING_SPELL",)),
            "b2": ("valid", ()),
            "b3": ("query", ("ATTENDANCE_DURING_SPELL",)),
            "out1": ("rejected", ("ACTIVITY_OUTSIDE_PERIOD", "OVERLAPPING_SPELL")),
            "b4": ("valid", ()),
        }
        assert [(row[1]) for row in _spells(api) if row[0] != first_seq] == [1, 2]

        # Another commissioner: nothing of `here` counts (its patient is rejected there, unflagged).
        header, backing = _invoice(pricing, "RTR-2", "RTR", elsewhere, [("c1", p, "EL", d(10), d(15))])
        _, got = await _submit(api, header, backing)
        assert got == {"c1": ("rejected", ("NOT_RESPONSIBLE_COMMISSIONER",))}

        # RVW withdraws its invoice: b1's spell stops counting.
        r_ = await api.client.post(
            f"/v1/invoices/{withdrawn['id']}/withdraw",
            json={"reason": "sent twice"},
            headers=api.h("invoices:submit", org="RVW"),
        )
        assert r_.status_code == 200, r_.text
        assert all(row[0] == first_seq for row in _spells(api))
        header, backing = _invoice(
            pricing,
            "RVW-2",
            "RVW",
            here,
            [("e1", p, "OPFU", d(17), None), ("e2", p, "EL", d(16), d(19)), ("e3", p, "OPFA", d(17), None)],
        )
        _, got = await _submit(api, header, backing)
        assert got == {
            "e1": ("valid", ()),  # only b1 contained the 17th
            "e2": ("valid", ()),
            "e3": ("query", ("ATTENDANCE_DURING_SPELL",)),  # e2, above it, does
        }


def _stored_invoice(session: Any, number: str, provider: str, commissioner: str, status: str) -> int:
    import uuid
    from datetime import UTC, datetime

    from cef_api.invoices.models import Invoice

    invoice = Invoice(
        id=str(uuid.uuid4()),
        invoice_number=number,
        provider_code=provider,
        commissioner_code=commissioner,
        invoice_date=date(2019, 5, 3),
        period_start=date(2019, 4, 1),
        period_end=date(2019, 4, 30),
        status=status,
        submitted_at=datetime.now(UTC),
        submitted_by="tests",
        idempotency_key=None,
        request_hash="0" * 64,
        backing_bytes=1,
        background=True,
    )
    session.add(invoice)
    session.flush()
    assert invoice.seq is not None
    return invoice.seq


def test_one_invoice_per_commissioner_validates_at_a_time_whatever_its_provider(
    database_factory: Any, db_kind: str
) -> None:
    from sqlmodel import Session

    from cef_api.invoices import repository
    from cef_api.invoices.models import InvoiceStatus
    from cef_api.main import MIGRATIONS
    from cef_common import db

    engine = db.make_engine(database_factory(db_kind, MIGRATIONS))
    try:
        with Session(engine) as session:
            first = _stored_invoice(session, "A", "RTR", "00K", InvoiceStatus.RECEIVED)
            other_provider = _stored_invoice(session, "B", "RVW", "00K", InvoiceStatus.RECEIVED)
            other_commissioner = _stored_invoice(session, "C", "RVW", "02Y", InvoiceStatus.RECEIVED)
            session.commit()
            # Submission order first: the later invoice of another provider waits for the earlier one.
            assert not repository.try_claim(session, other_provider, "00K")
            assert repository.try_claim(session, first, "00K")
            # While it validates, no other invoice to that commissioner starts, whoever sent it ...
            assert not repository.try_claim(session, other_provider, "00K")
            # ... and another commissioner's chain is not held up.
            assert repository.try_claim(session, other_commissioner, "02Y")
            repository.update_invoice(session, first, status=InvoiceStatus.VALIDATED)
            assert repository.try_claim(session, other_provider, "00K")
            session.commit()
        assert repository.chain_lock_name("00k") == repository.chain_lock_name("00K") == "chain:00K"
    finally:
        engine.dispose()
