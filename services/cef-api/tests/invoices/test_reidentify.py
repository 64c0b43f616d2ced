"""Re-identifying one line's patient: only the invoice's own CEF staff, with a purpose and a reason,
everyone else the same audited 404, the identities from the real tokeniser, a per-person daily
limit counted in the database, and no identifier left behind in the CEF API."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import generate_world
import pytest
import sqlalchemy as sa
from api_support import Api, Tokeniser, api_settings, identifiers_in, running_api

from cef_api.invoices.models import Reidentification
from cef_api.invoices.service import purge
from cef_api.tokeniser_client import ReidentificationUnavailable
from cef_common.redact import identifiers_in_free_text as identifiers_in_reason
from cef_common.testing import DevIssuer, database_values

REASON = "The provider disputes the query on this line; checking the patient's registration."


@dataclass
class Case:
    api: Api
    invoice: dict[str, Any]
    inv: generate_world.Invoice
    line: dict[str, Any]  # the staff view of a line with a patient token
    row: dict[str, str]  # that line's backing data row, as the provider sent it

    @property
    def url(self) -> str:
        return f"/v1/invoices/{self.invoice['id']}/lines/{self.line['line_ref']}/reidentify"

    @property
    def commissioner(self) -> str:
        return str(self.inv.header["commissioner_code"])

    def staff(self, sub: str = "staff-1") -> dict[str, str]:
        return self.api.h("invoices:validate", org=self.commissioner, sub=sub)


def _rows(inv: generate_world.Invoice) -> dict[str, dict[str, str]]:
    rows = (
        {k.strip(): (v or "").strip() for k, v in r.items()}
        for r in csv.DictReader(io.StringIO(inv.backing.decode("utf-8-sig")))
    )
    return {r["line_ref"]: r for r in rows}


def _standard_postcode(raw: str) -> str:
    compact = re.sub(r"\s", "", raw).upper()
    return f"{compact[:-3]} {compact[-3:]}"


async def _case(api: Api, world: generate_world.World) -> Case:
    await api.load_world(world)
    inv = world.invoices[0]
    r = await api.submit(inv.header, inv.backing)
    assert r.status_code == 201, r.text
    invoice = r.json()
    rows = _rows(inv)
    staff_view = await api.lines(invoice["id"], "invoices:validate", inv.header["commissioner_code"])
    # A line whose patient is whole: a valid NHS number, a date of birth and a postcode.
    line = next(
        x
        for x in staff_view
        if x["patient_token"]
        and rows[x["line_ref"]]["date_of_birth"].strip()
        and len(re.sub(r"\s", "", rows[x["line_ref"]]["postcode"])) in (6, 7)
    )
    return Case(api, invoice, inv, line, rows[line["line_ref"]])


@pytest.fixture
async def case(sqlite_api: Api, world: generate_world.World) -> Case:
    return await _case(sqlite_api, world)


def _outbox(api: Api, type_: str = "patient.reidentify") -> list[dict[str, Any]]:
    with api.app.state.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT payload FROM audit_outbox ORDER BY id"))
        return [e for e in (json.loads(p) for (p,) in rows) if e["type"] == type_]


def _tokeniser_events(tokeniser: Tokeniser) -> list[dict[str, Any]]:
    app = tokeniser.server.server.config.app
    with app.state.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT payload FROM audit_outbox ORDER BY id"))
        return [e for e in (json.loads(p) for (p,) in rows) if e["type"] == "patient.detokenise"]


async def test_staff_of_the_commissioner_get_the_lines_patient_once_audited(
    api: Api, world: generate_world.World, tokeniser: Tokeniser
) -> None:
    c = await _case(api, world)
    r = await api.client.post(c.url, json={"purpose": "resolve-query", "reason": REASON}, headers=c.staff())
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["nhs_number"] == re.sub(r"\D", "", c.row["nhs_number"])
    assert body["date_of_birth"] == c.row["date_of_birth"].strip()
    assert body["postcode"] == _standard_postcode(c.row["postcode"])
    assert body["patient_token"] == c.line["patient_token"]
    assert (body["invoice_id"], body["line_ref"], body["purpose"]) == (
        c.invoice["id"],
        c.line["line_ref"],
        "resolve-query",
    )

    [event] = _outbox(api)
    assert event["outcome"] == "success"
    assert event["actor"]["sub"] == "staff-1"
    assert event["actor"]["org"] == c.commissioner
    assert event["entity"] == {
        "type": "invoice-line",
        "id": f"{c.invoice['id']}/{c.line['line_ref']}",
        "count": None,
    }
    assert event["purpose"] == "resolve-query"
    assert event["detail"]["patient_token"] == c.line["patient_token"]
    assert event["detail"]["reason"] == REASON
    assert sorted(event["detail"]["kinds"]) == ["date_of_birth", "nhs_number", "postcode"]

    # The tokeniser's own events name the person, the invoice, the line and the purpose.
    events = _tokeniser_events(tokeniser)
    assert {e["detail"]["kind"] for e in events} == {"nhs_number", "date_of_birth", "postcode"}
    for e in events:
        assert e["outcome"] == "success"
        assert e["actor"]["sub"] == "cef-api"
        assert e["purpose"] == "resolve-query"
        assert e["detail"]["on_behalf_of"] == {"sub": "staff-1", "org": c.commissioner, "issuer": "cef-dev"}
        assert (e["detail"]["invoice_id"], e["detail"]["line_ref"]) == (c.invoice["id"], c.line["line_ref"])

    # Nothing of the identities stays behind: not in a table, not in the outbox.
    assert identifiers_in(database_values(api.app.state.engine), world) == []
    assert body["nhs_number"] not in json.dumps(_outbox(api))


async def test_everyone_but_the_invoices_own_staff_gets_the_same_audited_404(case: Case) -> None:
    api, invoice_id, line_ref = case.api, case.invoice["id"], case.line["line_ref"]
    body = {"purpose": "resolve-query", "reason": REASON}
    provider = case.inv.header["provider_code"]
    attempts = [
        (
            "other commissioner",
            f"/v1/invoices/{invoice_id}/lines/{line_ref}/reidentify",
            case.api.h("invoices:validate", org="X24"),
        ),
        ("provider", case.url, api.h("invoices:submit", org=provider)),
        ("finance", case.url, api.h("invoices:read", org=case.commissioner)),
        ("staff without org", case.url, api.h("invoices:validate")),
        ("missing invoice", f"/v1/invoices/{uuid.uuid4()}/lines/{line_ref}/reidentify", case.staff()),
        ("not an id", f"/v1/invoices/9434765919/lines/{line_ref}/reidentify", case.staff()),
        ("missing line", f"/v1/invoices/{invoice_id}/lines/TS181HU/reidentify", case.staff()),
    ]
    answers = []
    for what, url, headers in attempts:
        r = await api.client.post(url, json=body, headers=headers)
        assert r.status_code == 404, what
        assert r.headers["content-type"].startswith("application/problem+json")
        answers.append({k: v for k, v in r.json().items() if k != "instance"})
    assert all(a == answers[0] for a in answers)
    assert answers[0]["code"] == "line-not-found"

    events = _outbox(api)
    assert [e["outcome"] for e in events] == ["denied"] * len(attempts)
    assert [e["detail"]["reason"] for e in events] == [
        "not-commissioner-staff",
        "not-commissioner-staff",
        "not-commissioner-staff",
        "not-commissioner-staff",
        "no-invoice",
        "no-invoice",
        "no-line",
    ]
    # A value the caller typed is recorded only when it is known; else as a digest.
    assert events[0]["detail"]["invoice_id"] == invoice_id
    assert set(events[4]["detail"]["invoice_id"]) == {"digest", "length"}
    assert set(events[6]["detail"]["line_ref"]) == {"digest", "length"}
    text = json.dumps(events)
    assert "9434765919" not in text
    assert "TS181HU" not in text
    assert not any(e["type"] == "patient.detokenise" for e in events)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"purpose": "curiosity", "reason": REASON}, "validation-error"),
        ({"reason": REASON}, "validation-error"),
        ({"purpose": "resolve-query", "reason": "too short"}, "validation-error"),
        ({"purpose": "resolve-query", "reason": "x" * 1001}, "validation-error"),
        ({"purpose": "resolve-query", "reason": REASON, "extra": 1}, "validation-error"),
        (
            {"purpose": "resolve-query", "reason": "patient 943 476 5919 says so"},
            "reason-contains-identifier",
        ),
        ({"purpose": "resolve-query", "reason": "born 1969-09-01, checking"}, "reason-contains-identifier"),
        ({"purpose": "resolve-query", "reason": "lives at ts18 1hu, check"}, "reason-contains-identifier"),
    ],
)
async def test_a_purpose_outside_the_list_or_a_bad_reason_is_422(
    case: Case, body: dict[str, Any], code: str
) -> None:
    r = await case.api.client.post(case.url, json=body, headers=case.staff())
    assert r.status_code == 422
    assert r.json()["code"] == code
    assert "9434765919" not in r.text
    assert "1969-09-01" not in r.text
    assert not any(e["outcome"] == "success" for e in _outbox(case.api))
    assert "943 476 5919" not in json.dumps(_outbox(case.api))


def test_the_reason_check_lets_words_through() -> None:
    assert identifiers_in_reason(REASON) == []
    assert identifiers_in_reason("query 42 on line L0007, HRG AB12C, £123.45") == []
    assert identifiers_in_reason("nhs 9434765919") == ["an NHS number"]
    assert identifiers_in_reason("dob 01/09/1969") == ["a date"]
    for spelled in ("943.476.5919", "94 34 76 59 19", "born 19690901", "01091969", "1st Sept 1969",
                    "Sep 1, 1969", "1969/09/01", "TS181HU", "943  476  5919", "943/476/5919",
                    "943_476_5919", "\uff19\uff14\uff13\uff14\uff17\uff16\uff15\uff19\uff11\uff19",
                    "born 1 1 1980", "TS18-1HU"):  # fmt: skip
        assert identifiers_in_reason(f"the patient, {spelled}, disputes it") != [], spelled


def _seed_reidentifications(api: Api, case: Case, sub: str, ages: list[timedelta]) -> None:
    now = datetime.now(UTC)
    with api.app.state.engine.begin() as conn:
        seq = conn.execute(
            sa.text("SELECT seq FROM invoice WHERE id = :id"), {"id": case.invoice["id"]}
        ).scalar_one()
        # Through the table's own types, as the service writes them (SQLite keeps times as text).
        conn.execute(
            sa.insert(Reidentification.__table__),  # type: ignore[attr-defined]
            [
                {
                    "invoice_seq": seq,
                    "line_ref": case.line["line_ref"],
                    "person_sub": sub,
                    "person_issuer": "cef-dev",
                    "org": case.commissioner,
                    "purpose": "resolve-query",
                    "at": now - age,
                }
                for age in ages
            ],
        )


async def test_the_51st_in_24_hours_is_refused_with_retry_after_and_audited(case: Case) -> None:
    # Fifty earlier ones, as any process of the service would have stored them; the oldest leaves
    # the window in an hour, and one from yesterday already has.
    _seed_reidentifications(case.api, case, "staff-1", [timedelta(hours=23)] + [timedelta(minutes=5)] * 49)
    _seed_reidentifications(case.api, case, "staff-1", [timedelta(hours=25)])
    body = {"purpose": "resolve-query", "reason": REASON}
    r = await case.api.client.post(case.url, json=body, headers=case.staff())
    assert r.status_code == 429
    assert r.json()["code"] == "reidentification-limit-reached"
    assert r.json()["limit"] == 50
    assert 3000 < int(r.headers["retry-after"]) <= 3600
    [event] = _outbox(case.api)
    assert event["outcome"] == "denied"
    assert event["detail"]["reason"] == "reidentification-limit-reached"
    assert event["detail"]["patient_token"] == case.line["patient_token"]
    # The limit is per person: a colleague is not held back.
    r = await case.api.client.post(case.url, json=body, headers=case.staff("staff-2"))
    assert r.status_code == 200


async def test_the_limit_is_a_setting(
    data_dir: Path,
    sqlite_api_db: str,
    tokeniser: Tokeniser,
    dev_issuer: DevIssuer,
    world: generate_world.World,
) -> None:
    settings = api_settings(data_dir, sqlite_api_db, tokeniser.url, reidentify_daily_limit=2)
    async with running_api(settings, dev_issuer) as api:
        c = await _case(api, world)
        body = {"purpose": "audit-request", "reason": REASON}
        statuses = [
            (await api.client.post(c.url, json=body, headers=c.staff())).status_code for _ in range(3)
        ]
    assert statuses == [200, 200, 429]
    assert [e["outcome"] for e in _outbox(api)] == ["success", "success", "denied"]


async def test_purged_tokens_give_410(case: Case) -> None:
    api, staff = case.api, case.staff()
    for e in case.inv.expected:
        if e.outcome == "query":
            r = await api.client.post(
                f"/v1/invoices/{case.invoice['id']}/lines/{e.line_ref}/decision",
                json={"decision": "reject", "reason": "not evidenced"},
                headers=staff,
            )
            assert r.status_code == 200
    assert (
        await api.client.post(f"/v1/invoices/{case.invoice['id']}/approve", headers=staff)
    ).status_code == 200
    purge(api.app.state.engine, older_than_days=1, principal=None, now=datetime.now(UTC) + timedelta(days=2))
    r = await api.client.post(
        case.url, json={"purpose": "provider-challenge", "reason": REASON}, headers=staff
    )
    assert r.status_code == 410
    assert r.json()["code"] == "patient-tokens-purged"
    assert "retention" in r.json()["detail"]
    assert [e["detail"]["reason"] for e in _outbox(api)] == ["patient-tokens-purged"]
    with api.app.state.engine.connect() as conn:
        left = conn.execute(
            sa.text(
                "SELECT count(*) FROM invoice_line WHERE dob_token IS NOT NULL OR postcode_token IS NOT NULL"
            )
        ).scalar_one()
    assert left == 0


class _Down:
    def detokenise(self, *args: Any, **kwargs: Any) -> list[str | None]:
        raise ReidentificationUnavailable(
            "the tokeniser answered 503 (audit-unavailable); nothing was re-identified"
        )


async def test_when_the_tokeniser_cannot_answer_nothing_is_given_and_nothing_counted(case: Case) -> None:
    case.api.app.state.detokeniser = _Down()
    r = await case.api.client.post(
        case.url, json={"purpose": "resolve-query", "reason": REASON}, headers=case.staff()
    )
    assert r.status_code == 503
    assert r.json()["code"] == "reidentification-unavailable"
    assert "audit-unavailable" in r.json()["detail"]
    [event] = _outbox(case.api)
    assert (event["outcome"], event["detail"]["reason"]) == ("failure", "reidentification-unavailable")
    with case.api.app.state.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM reidentification")).scalar_one() == 0


async def test_no_identities_when_the_event_cannot_be_recorded(case: Case) -> None:
    with case.api.app.state.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE audit_outbox"))
    r = await case.api.client.post(
        case.url, json={"purpose": "resolve-query", "reason": REASON}, headers=case.staff()
    )
    assert r.status_code == 503
    assert r.json()["code"] == "audit-unavailable"
    assert re.sub(r"\D", "", case.row["nhs_number"]) not in r.text


async def test_the_tokeniser_refuses_a_person_who_asks_it_directly(
    case: Case, tokeniser: Tokeniser, dev_issuer: DevIssuer
) -> None:
    import httpx

    token = dev_issuer.token("detokenise", aud="tokeniser", org=case.commissioner, sub="staff-1")
    body = {
        "kind": "nhs_number",
        "tokens": [case.line["patient_token"]],
        "purpose": "resolve-query",
        "on_behalf_of": {"sub": "staff-1", "issuer": "cef-dev", "org": case.commissioner},
        "invoice_id": case.invoice["id"],
        "line_ref": case.line["line_ref"],
    }
    async with httpx.AsyncClient(base_url=tokeniser.url) as client:
        r = await client.post("/v1/detokenise", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    assert r.json()["code"] == "detokenise-not-allowed"
    assert re.sub(r"\D", "", case.row["nhs_number"]) not in r.text
    [event] = _tokeniser_events(tokeniser)
    assert (event["outcome"], event["actor"]["sub"]) == ("denied", "staff-1")


class _Fake:
    """The tokeniser's side, answering with a stand-in value for each token."""

    def detokenise(self, kind: str, tokens: list[str], **work: Any) -> list[str | None]:
        return [f"{kind}-of-{t}" for t in tokens]


async def test_concurrent_requests_of_one_person_never_exceed_the_limit(
    api: Api, world: generate_world.World
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from cef_api.invoices.exceptions import ReidentificationLimitReached
    from cef_api.invoices.reidentify import reidentify
    from cef_common.auth import Principal

    c = await _case(api, world)
    person = Principal(
        sub="staff-1", issuer="cef-dev", scopes=frozenset({"invoices:validate"}), org=c.commissioner
    )

    def attempt(_: int) -> str:
        try:
            reidentify(
                engine=api.app.state.engine,
                detokeniser=_Fake(),
                principal=person,
                invoice_id=c.invoice["id"],
                line_ref=c.line["line_ref"],
                purpose="resolve-query",
                reason=REASON,
                daily_limit=3,
            )
            return "given"
        except ReidentificationLimitReached:
            return "refused"

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(attempt, range(10)))
    assert sorted(results) == ["given"] * 3 + ["refused"] * 7
    with api.app.state.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM reidentification")).scalar_one() == 3
    assert sorted(e["outcome"] for e in _outbox(api)) == ["denied"] * 7 + ["success"] * 3
