"""A dump of the CEF database holds no NHS number, date of birth or full postcode."""

from __future__ import annotations

import csv
import io
import re

import generate_world
import sqlalchemy as sa
from api_support import Api


def _identifiers(world: generate_world.World) -> tuple[set[str], set[str], set[str]]:
    nhs = {p.nhs_number for p in world.patients}
    dobs = {p.date_of_birth.isoformat() for p in world.patients}
    postcodes = {p.postcode.replace(" ", "").upper() for p in world.patients if p.postcode}
    other_dates: set[str] = set()
    for inv in world.invoices:
        for row in csv.DictReader(io.StringIO(inv.backing.decode("utf-8-sig"))):
            if row["postcode"].strip():
                postcodes.add(re.sub(r"\s", "", row["postcode"]).upper())
            other_dates.update(row[c].strip() for c in ("activity_date", "discharge_date"))
    for p in world.patients:
        other_dates.update(d.isoformat() for _, f, t in p.registrations for d in (f, t) if d)
    return nhs, dobs - other_dates, postcodes


async def test_database_dump_has_no_identifiers(api: Api, world: generate_world.World) -> None:
    await api.load_world(world)
    for inv in world.invoices:
        assert (await api.submit(inv.header, inv.backing)).status_code == 201
    nhs, dobs, postcodes = _identifiers(world)
    assert dobs
    found = []
    with api.app.state.engine.connect() as conn:
        metadata = sa.MetaData()
        metadata.reflect(conn)
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                for value in row:
                    if value is None:
                        continue
                    text = str(value)
                    squashed = re.sub(r"[\s-]", "", text)
                    found += [
                        f"NHS number in {table.name}" for d in re.findall(r"\d{10}", squashed) if d in nhs
                    ]
                    found += [
                        f"DOB in {table.name}" for d in re.findall(r"\d{4}-\d{2}-\d{2}", text) if d in dobs
                    ]
                    upper = re.sub(r"\s", "", text).upper()
                    found += [f"postcode in {table.name}" for p in postcodes if p in upper]
    assert found == []
