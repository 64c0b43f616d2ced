"""A dump of the CEF database holds no NHS number, date of birth or full postcode."""

from __future__ import annotations

import csv
import io

import generate_world
from api_support import Api, identifiers_in

from cef_common.testing import database_values


async def test_database_dump_has_no_identifiers(api: Api, world: generate_world.World) -> None:
    await api.load_world(world)
    for inv in world.invoices:
        assert (await api.submit(inv.header, inv.backing)).status_code == 201
    assert identifiers_in(database_values(api.app.state.engine), world) == []


NHS, POSTCODE, DOB = "9434765919", "TS1 7HA", "1985-03-02"


def _with_cell(backing: bytes, column: str, value: str) -> bytes:
    rows = list(csv.DictReader(io.StringIO(backing.decode("utf-8-sig"))))
    rows[0][column] = value
    out = io.StringIO()
    writer = csv.DictWriter(out, list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


async def test_errors_never_echo_an_identifier_sent_where_a_code_belongs(
    api: Api, world: generate_world.World
) -> None:
    await api.load_world(world)
    inv = world.invoices[0]
    staff = api.h("invoices:validate", org=inv.header["commissioner_code"])
    answers = []

    r = await api.client.get(f"/v1/invoices/{POSTCODE}", headers=staff)
    assert r.status_code == 404
    assert r.json()["instance"] == "/v1/invoices/{invoice_id}"
    answers.append(r.text)
    for field, value in (("provider_code", NHS), ("commissioner_code", "TS17HA"), ("invoice_number", NHS)):
        r = await api.submit({**inv.header, field: value}, inv.backing, org=inv.header["provider_code"])
        assert r.status_code in (403, 422), r.text
        answers.append(r.text)
    r = await api.submit({**inv.header, "invoice_number": f"INV {DOB}"}, inv.backing)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "invoice_number"
    answers.append(r.text)

    # An identifier in a code column: the outcome is the contract's (no such HRG is priced), but the
    # value is not kept or shown with the line.
    r = await api.submit(
        {**inv.header, "invoice_number": "CELLS-1"}, _with_cell(inv.backing, "hrg_code", NHS)
    )
    assert r.status_code == 201, r.text
    invoice_id = r.json()["id"]
    lines = await api.lines(invoice_id, "invoices:validate", inv.header["commissioner_code"])
    answers.append(str(lines))
    first = lines[0]
    assert first["hrg_code"] is None
    assert "MALFORMED_LINE" not in first["reasons"]

    r = await api.client.post(
        f"/v1/invoices/{invoice_id}/lines/{POSTCODE}/decision",
        json={"decision": "reject", "reason": "x"},
        headers=staff,
    )
    assert r.status_code in (404, 409), r.text
    answers.append(r.text)
    r = await api.client.post(
        f"/v1/invoices/{invoice_id}/lines/{lines[0]['line_ref']}/decision",
        json={"decision": "reject", "reason": f"patient {NHS} moved"},
        headers=staff,
    )
    assert r.status_code == 422, r.text
    answers.append(r.text)

    text = "\n".join(answers)
    for value in (NHS, "943 476 5919", POSTCODE, "TS17HA", DOB):
        assert value not in text
    dump = "\n".join(v for _, v in database_values(api.app.state.engine))
    assert NHS not in dump
    assert DOB not in dump
