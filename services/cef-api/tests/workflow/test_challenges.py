"""Challenges: the query line's state machine step by step, who may raise, see and answer them,
overdue ones first, and messages that must not identify anyone."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from workflow_support import ANSWER, COMMISSIONER, MESSAGE, Desk

from cef_api.invoices.lifecycle import LINE_TRANSITIONS
from cef_api.invoices.models import ChallengeStatus, QueryState

ACTIONS = {"challenge": "challenged", "respond": "responded", "accept": "accepted", "reject": "rejected"}
ACCEPT = {"decision": "accept", "amount": "100.00"}
REJECT = {"decision": "reject", "reason": "no referral was on file for this attendance"}


def _today() -> date:
    return datetime.now(UTC).date()


def _state(desk: Desk, line_ref: str, index: int = 0) -> str:
    ((state,),) = desk.sql(
        "SELECT query_state FROM invoice_line JOIN invoice ON invoice.seq = invoice_line.invoice_seq "
        "WHERE invoice.id = :id AND line_ref = :ref",
        id=desk.id(index),
        ref=line_ref,
    )
    return str(state or QueryState.QUERY)


async def _bring(desk: Desk, line_ref: str, state: str) -> str | None:
    """Moves a fresh query line to `state` the way people do; returns its latest challenge's id."""
    if state == QueryState.QUERY:
        return None
    r = await desk.challenge(line_ref)
    assert r.status_code == 201, r.text
    challenge_id = str(r.json()["id"])
    if state == QueryState.RESPONDED:
        assert (await desk.respond(challenge_id)).status_code == 200
    elif state in (QueryState.ACCEPTED, QueryState.REJECTED):
        body = ACCEPT if state == QueryState.ACCEPTED else REJECT
        assert (await desk.decide(line_ref, body)).status_code == 200
    assert _state(desk, line_ref) == state
    return challenge_id


async def _act(desk: Desk, action: str, line_ref: str, challenge_id: str | None) -> Any:
    if action == "challenge":
        return await desk.challenge(line_ref)
    if action == "respond":
        return await desk.respond(challenge_id or str(uuid.uuid4()))
    return await desk.decide(line_ref, ACCEPT if action == "accept" else REJECT)


async def test_every_step_of_the_line_state_machine_is_allowed_or_refused_naming_the_state(
    desk: Desk,
) -> None:
    lines = await desk.query_lines(0)
    cases = [(state, action) for state in QueryState.ALL for action in ACTIONS]
    assert len(lines) >= len(cases)
    for (state, action), line in zip(cases, lines, strict=False):
        ref = line["line_ref"]
        challenge_id = await _bring(desk, ref, state)
        r = await _act(desk, action, ref, challenge_id)
        target = ACTIONS[action]
        where = f"{action} from {state}"
        if action == "respond" and challenge_id is None:
            # A line nobody challenged has no challenge to answer.
            assert r.status_code == 404, where
        elif target in LINE_TRANSITIONS[state]:
            assert r.status_code in (200, 201), f"{where}: {r.text}"
            assert _state(desk, ref) == target, where
        else:
            assert r.status_code == 409, f"{where}: {r.text}"
            problem = r.json()
            assert problem["code"] == "invalid-transition", where
            if action == "respond":
                # The challenge's own state: answered already, or closed by the decision.
                expected = (
                    ChallengeStatus.RESPONDED if state == QueryState.RESPONDED else ChallengeStatus.CLOSED
                )
                assert problem["state"] == expected, where
                assert f"the challenge is {expected}" in problem["detail"], where
            else:
                assert problem["state"] == state, where
                assert f"is {state};" in problem["detail"], where
                assert problem["allowed_from"] == [
                    s for s, targets in LINE_TRANSITIONS.items() if target in targets
                ], where
            assert _state(desk, ref) == state, f"{where} changed the line"


async def test_challenge_answer_and_challenge_again_then_the_decision_closes_it(desk: Desk) -> None:
    line = (await desk.query_lines(0))[0]
    ref = line["line_ref"]
    r = await desk.challenge(ref)
    assert r.status_code == 201
    first = r.json()
    assert first["status"] == "open"
    assert first["line"]["state"] == "challenged"
    assert first["line_ref"] == ref
    assert first["due_date"] == (_today() + timedelta(days=desk.api.settings.challenge_due_days)).isoformat()
    assert first["overdue"] is False
    assert "patient_token" not in str(first)

    r = await desk.respond(first["id"], corrected_amount="503.46")
    assert r.status_code == 200, r.text
    answered = r.json()
    assert (answered["status"], answered["line"]["state"]) == ("responded", "responded")
    assert (answered["response_message"], answered["corrected_amount"]) == (ANSWER, "503.46")

    # Asked again: the answered challenge is superseded, a new one waits for the provider.
    due = (_today() + timedelta(days=3)).isoformat()
    r = await desk.challenge(ref, message="Thank you; please also send the discharge summary.", due_date=due)
    assert r.status_code == 201, r.text
    second = r.json()
    assert second["due_date"] == due
    old = await desk.client.get(f"/v1/challenges/{first['id']}", headers=desk.staff())
    assert old.json()["status"] == "closed"

    assert (await desk.decide(ref, ACCEPT)).status_code == 200
    now = await desk.client.get(f"/v1/challenges/{second['id']}", headers=desk.provider())
    assert (now.json()["status"], now.json()["line"]["state"]) == ("closed", "accepted")

    events = desk.events("invoice.line.challenge")
    assert [e["detail"]["from"] for e in events] == ["query", "responded"]
    assert {e["detail"]["to"] for e in events} == {"challenged"}
    event = events[0]
    assert event["entity"] == {
        "type": "invoice-challenge",
        "id": f"{desk.id(0)}/challenge/{first['id']}",
        "count": None,
    }
    assert event["detail"]["invoice_id"] == desk.id(0)
    assert event["detail"]["line_ref"] == ref
    assert event["detail"]["message_length"] == len(MESSAGE)
    (response,) = desk.events("invoice.line.challenge.response")
    assert response["entity"]["id"] == event["entity"]["id"]
    assert (response["detail"]["from"], response["detail"]["to"]) == ("challenged", "responded")
    assert response["detail"]["corrected_amount"] == "503.46"
    # Messages are shown to the other party, never recorded in an event.
    outbox = desk.outbox_text()
    assert MESSAGE not in outbox
    assert ANSWER not in outbox


async def test_lines_that_are_no_query_and_invoices_that_are_not_validated_refuse_challenges(
    desk: Desk,
) -> None:
    staff_lines = await desk.api.lines(desk.id(0), "invoices:validate", COMMISSIONER)
    for outcome in ("valid", "rejected"):
        line = next(x for x in staff_lines if x["outcome"] == outcome)
        r = await desk.challenge(line["line_ref"])
        assert r.status_code == 409
        assert (r.json()["code"], r.json()["state"]) == ("invalid-transition", outcome)
    r = await desk.challenge("no-such-line")
    assert r.status_code == 404
    assert "no-such-line" not in r.text

    # RVW withdraws its invoice: its open challenge closes and nothing more can happen to it.
    line = (await desk.query_lines(1))[0]
    r = await desk.challenge(line["line_ref"], 1)
    challenge_id = r.json()["id"]
    r = await desk.client.post(f"/v1/invoices/{desk.id(1)}/withdraw", json={}, headers=desk.provider(1))
    assert r.status_code == 200, r.text
    r = await desk.respond(challenge_id, 1)
    assert (r.status_code, r.json()["state"]) == (409, "closed")
    r = await desk.challenge((await desk.query_lines(1))[1]["line_ref"], 1)
    assert (r.status_code, r.json()["code"]) == (409, "invoice-not-ready")


@pytest.mark.parametrize(
    "message",
    [
        "The patient 943 476 5919 was seen twice, please check.",
        "Patient born 12/03/1961 is not on the trace; please check.",
        "Please check the address, the patient lives at LS1 4AP now.",
    ],
)
async def test_messages_holding_an_identifier_are_refused_and_audited_as_refusals(
    desk: Desk, message: str
) -> None:
    line = (await desk.query_lines(0))[0]
    ref = line["line_ref"]
    r = await desk.challenge(ref, message=message)
    assert r.status_code == 422
    assert r.json()["code"] == "message-contains-identifier"
    assert message not in r.text
    assert _state(desk, ref) == "query"
    assert desk.sql("SELECT count(*) FROM challenge")[0][0] == 0

    r = await desk.challenge(ref)
    challenge_id = r.json()["id"]
    r = await desk.respond(challenge_id, message=message)
    assert (r.status_code, r.json()["code"]) == (422, "message-contains-identifier")
    assert _state(desk, ref) == "challenged"

    r = await desk.bulk({"reason_code": line["reasons"][0], "decision": "reject", "reason": message})
    assert (r.status_code, r.json()["code"]) == (422, "message-contains-identifier")

    refusals = [e for e in desk.events("access.refused") if e["subtype"] == "message-contains-identifier"]
    assert len(refusals) == 3
    assert {e["outcome"] for e in refusals} == {"denied"}
    assert {e["detail"]["route"] for e in refusals} == {
        "/v1/invoices/{invoice_id}/lines/{line_ref}/challenge",
        "/v1/challenges/{challenge_id}/response",
        "/v1/invoices/{invoice_id}/queries/decision",
    }
    assert message not in desk.outbox_text()


async def test_a_due_date_in_the_past_is_refused(desk: Desk) -> None:
    ref = (await desk.query_lines(0))[0]["line_ref"]
    yesterday = (_today() - timedelta(days=1)).isoformat()
    r = await desk.challenge(ref, due_date=yesterday)
    assert (r.status_code, r.json()["code"]) == (422, "due-date-in-past")
    r = await desk.challenge(ref, message="too short")
    assert r.status_code == 422
    r = await desk.challenge(ref, due_date=_today().isoformat())
    assert r.status_code == 201


async def test_overdue_challenges_come_first_then_by_due_date(desk: Desk) -> None:
    today = _today()
    refs = [x["line_ref"] for x in (await desk.query_lines(0))[:5]]
    ids = {}
    for ref, days in zip(refs, (5, 2, 10, 1, 1), strict=True):
        r = await desk.challenge(ref, due_date=(today + timedelta(days=days)).isoformat())
        ids[ref] = r.json()["id"]
    # Two fall due in the past: one still open (overdue), one answered (not overdue).
    assert (await desk.respond(ids[refs[4]])).status_code == 200
    for ref, days in ((refs[3], -3), (refs[4], -1)):
        desk.sql(
            "UPDATE challenge SET due_date = :due WHERE id = :id",
            due=today + timedelta(days=days),
            id=ids[ref],
        )
    want = [refs[3], refs[4], refs[1], refs[0], refs[2]]
    for limit in (100, 2, 1):
        items = await desk.challenges(desk.staff(), limit=limit)
        assert [x["line_ref"] for x in items] == want, limit
    items = await desk.challenges(desk.provider())
    assert [x["overdue"] for x in items] == [True, False, False, False, False]
    open_only = await desk.challenges(desk.staff(), status="open")
    assert [x["line_ref"] for x in open_only] == [refs[3], refs[1], refs[0], refs[2]]
    page = (await desk.client.get("/v1/challenges", headers=desk.staff())).json()
    assert [x["code"] for x in page["reasons_explained"]] == sorted(
        {code for x in page["items"] for code in x["line"]["reasons"]}
    )
    for bad in ("x", "2.20261203.1", "0.20261340.1", "0.2026120.1", "1.20261203.99999999999", "¹.20261203.1"):
        r = await desk.client.get("/v1/challenges", params={"cursor": bad}, headers=desk.staff())
        assert (r.status_code, r.json()["code"]) == (400, "bad-cursor"), bad


async def test_each_party_sees_only_its_own_challenges(desk: Desk) -> None:
    ids = []
    for index in range(3):
        ref = (await desk.query_lines(index))[0]["line_ref"]
        ids.append((await desk.challenge(ref, index)).json()["id"])
    rtr, rvw = desk.provider(0), desk.provider(1)
    assert {x["id"] for x in await desk.challenges(rtr)} == {ids[0], ids[2]}
    assert {x["id"] for x in await desk.challenges(rvw)} == {ids[1]}
    assert {x["id"] for x in await desk.challenges(desk.staff())} == set(ids)
    assert [x["id"] for x in await desk.challenges(rtr, invoice_id=desk.id(2))] == [ids[2]]
    assert await desk.challenges(rvw, invoice_id=desk.id(0)) == []
    other_staff = desk.staff(org="00K")
    assert await desk.challenges(other_staff) == []

    missing = await desk.client.get(f"/v1/challenges/{uuid.uuid4()}", headers=rvw)
    assert missing.status_code == 404
    for headers in (rvw, other_staff):
        r = await desk.client.get(f"/v1/challenges/{ids[0]}", headers=headers)
        assert (r.status_code, r.json()) == (404, missing.json())
    r = await desk.respond(ids[0], 1)  # RVW answering RTR's challenge
    assert r.status_code == 404
    assert {**r.json(), "instance": None} == {**missing.json(), "instance": None}
    r = await desk.client.post(
        f"/v1/challenges/{ids[0]}/response", json={"message": ANSWER}, headers=desk.staff()
    )
    assert r.status_code == 403
    finance = desk.api.h("invoices:read", org=COMMISSIONER)
    assert (await desk.client.get("/v1/challenges", headers=finance)).status_code == 403
    # Raising one: the invoice's own staff only.
    ref = (await desk.query_lines(0))[1]["line_ref"]
    url = f"/v1/invoices/{desk.id(0)}/lines/{ref}/challenge"
    r = await desk.client.post(url, json={"message": MESSAGE}, headers=other_staff)
    assert r.status_code == 404
    r = await desk.client.post(url, json={"message": MESSAGE}, headers=rtr)
    assert r.status_code == 403
    hidden = [e for e in desk.events("access.refused") if e["detail"]["reason"] == "not-visible"]
    assert len(hidden) >= 4
    # Reading challenges reveals no patient token, so it is not audited as a read.
    assert not [e for e in desk.events() if e["action"] == "read" and "challenge" in e["type"]]
