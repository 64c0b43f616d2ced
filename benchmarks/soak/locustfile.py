"""The soak's users (locust): providers submitting invoices, CEF staff working the query queue, and
finance reading what is approved to pay, all against one CEF API.

Started by benchmarks/soak/run_soak.py (`make soak`), which sets these environment variables:

    CEF_SOAK_DATA_DIR     the `cef up` data directory (its development issuer signs the tokens)
    CEF_SOAK_SEED         the world's seed, and CEF_SOAK_PATIENTS its patients: the same world whose
                          reference data the runner loaded, generated again here for its patients
    CEF_SOAK_LINES        lines per invoice
    CEF_SOAK_PROVIDERS, CEF_SOAK_STAFF, CEF_SOAK_FINANCE   how many users of each kind

Every request is named by its route template (`/v1/invoices/{id}`), never by a raw path: the
statistics group by it, and no identifier of a line ever lands in them.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from locust import HttpUser, between, task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import generate_world  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

from cef_common.devtokens import mint_dev_token  # noqa: E402

DATA_DIR = Path(os.environ.get("CEF_SOAK_DATA_DIR", "var"))
SEED = int(os.environ.get("CEF_SOAK_SEED", "1"))
PATIENTS = int(os.environ.get("CEF_SOAK_PATIENTS", "20000"))
LINES = int(os.environ.get("CEF_SOAK_LINES", "100"))
# A token outlives the run: locust never refreshes it.
TOKEN_TTL = 6 * 3600
# How long a provider waits for its invoice to be validated before counting it as an error.
VALIDATION_TIMEOUT = 300.0
POLL_SECONDS = 1.0
# Below uvicorn's keep-alive timeout (5 s), with room for the request that follows: see SoakUser.
IDLE_RECONNECT_SECONDS = 3.5
# Lines a staff member decides one by one before deciding the rest by reason code.
SINGLE_DECISIONS = 3
UNFINISHED = ("received", "validating")
MONTHS = [date(2019, m, 1) for m in range(4, 10)]

# The same world as the runner's, so every line names a patient, practice and tariff it loaded.
WORLD = generate_world.generate(seed=SEED, patients=PATIENTS, invoices=0)
# Its commissioners, found as generate() finds them: those with at least two practices.
COMMISSIONERS = sorted(
    code for code, n in Counter(p.commissioner for p in WORLD.practices).items() if code and n >= 2
)
# The generator the tests and the benchmark use: its scenarios (valid, price mismatch, unknown
# patient, duplicate, ...) give the mix of outcomes of a real month's invoices, and it remembers the
# lines it made, so a duplicate repeats an earlier line as a provider's mistake would. It is called
# between requests, never across one, so locust's greenlets never interleave inside it.
GENERATOR = generate_world._InvoiceGenerator(
    random.Random(SEED + 1), WORLD, COMMISSIONERS, generate_world.SCENARIOS
)
# Invoice numbers are unique across the run: one counter for every provider user of this process.
INVOICE_NUMBERS = itertools.count(1)
# Invoices a staff user has taken to decide: two staff of one commissioner never decide the same one.
CLAIMED: set[str] = set()


def _token(scope: str, org: str, sub: str) -> dict[str, str]:
    token = mint_dev_token(
        DATA_DIR / "keys", scopes=[scope], audience="cef-api", sub=sub, org=org, ttl_seconds=TOKEN_TTL
    )
    return {"Authorization": f"Bearer {token}"}


def _org_of(counter: itertools.count[int], orgs: list[str]) -> tuple[str, int]:
    """The next user's organisation, round robin, and the user's number."""
    n = next(counter)
    return orgs[n % len(orgs)], n


def _problem(response: Any) -> str:
    """A refusal's status and problem code and title: never its detail, which may quote the file."""
    try:
        problem = response.json()
        return f"status {response.status_code}: {problem.get('code')}: {problem.get('title')}"
    except ValueError:
        return f"status {response.status_code}"


class SoakUser(HttpUser):
    """What every soak user shares: a pause of 1 to 3 s between tasks, and a fresh connection after
    an idle spell that nears the server's keep-alive timeout (see `fresh_after_idle`)."""

    abstract = True
    wait_time = between(1, 3)
    idle_since = 0.0


def fresh_after_idle(work: Callable[[Any], None]) -> Callable[[Any], None]:
    """A task that first drops its user's idle connections if it has been idle too long.

    uvicorn closes a keep-alive connection idle for 5 s. A client that sends on it as it closes gets
    "connection reset": a race of the client's, not a failure of the service (browsers resend such a
    request on a new connection). Users pause at most 3 s, but a busy machine wakes one late."""

    @functools.wraps(work)
    def task_body(user: SoakUser) -> None:
        if user.idle_since and time.monotonic() - user.idle_since > IDLE_RECONNECT_SECONDS:
            user.client.close()
        try:
            work(user)
        finally:
            user.idle_since = time.monotonic()

    return task_body


class Provider(SoakUser):
    """A trust submitting 100-line invoices to a commissioner, waiting for each to be validated,
    then reading its line outcomes."""

    fixed_count = int(os.environ.get("CEF_SOAK_PROVIDERS", "20"))
    _numbers = itertools.count()

    def on_start(self) -> None:
        providers = [code for code, _, _ in WORLD.providers]
        self.provider_code, n = _org_of(self._numbers, providers)
        self.provider = next(p for p in WORLD.providers if p[0] == self.provider_code)
        self.headers = _token("invoices:submit", self.provider_code, f"{self.provider_code}-soak-{n}")

    @task
    @fresh_after_idle
    def submit_and_wait(self) -> None:
        commissioner = random.choice(COMMISSIONERS)
        invoice = GENERATOR.invoice(
            next(INVOICE_NUMBERS), self.provider, commissioner, random.choice(MONTHS), LINES
        )
        started = time.monotonic()
        with self.client.post(
            "/v1/invoices",
            files={
                "invoice": ("invoice.json", json.dumps(invoice.header).encode(), "application/json"),
                "backing_data": ("backing.csv", invoice.backing, "text/csv"),
            },
            headers=self.headers,
            name="/v1/invoices",
            catch_response=True,
        ) as response:
            if response.status_code not in (201, 202):
                response.failure(_problem(response))
                return
            body: dict[str, Any] = response.json()
        invoice_id = body["id"]
        while body["status"] in UNFINISHED:
            if time.monotonic() - started > VALIDATION_TIMEOUT:
                self._flow(started, RuntimeError(f"not validated after {VALIDATION_TIMEOUT:.0f} s"))
                return
            time.sleep(POLL_SECONDS)
            polled = self.client.get(
                f"/v1/invoices/{invoice_id}", headers=self.headers, name="/v1/invoices/{id}"
            )
            if polled.status_code != 200:
                return
            body = polled.json()
        if body["status"] == "failed":
            self._flow(started, RuntimeError(f"validation failed: {body.get('failure_reason')}"))
            return
        self._flow(started, None)
        self.client.get(
            f"/v1/invoices/{invoice_id}/lines",
            params={"limit": 1000},
            headers=self.headers,
            name="/v1/invoices/{id}/lines",
        )

    def _flow(self, started: float, error: Exception | None) -> None:
        """Records submission to validated as one more row of the statistics, beside the requests."""
        self.environment.events.request.fire(
            request_type="FLOW",
            name="invoice submitted → validated",
            response_time=(time.monotonic() - started) * 1000,
            response_length=0,
            exception=error,
            context={},
        )


class Staff(SoakUser):
    """CEF staff of one commissioner: read the query queue, take a validated invoice, decide its
    query lines (a few one by one, the rest by reason code) and approve it."""

    fixed_count = int(os.environ.get("CEF_SOAK_STAFF", "6"))
    _numbers = itertools.count()

    def on_start(self) -> None:
        self.commissioner, n = _org_of(self._numbers, COMMISSIONERS)
        self.headers = _token("invoices:validate", self.commissioner, f"{self.commissioner}-soak-staff-{n}")

    @task(2)
    @fresh_after_idle
    def read_queue(self) -> None:
        """The work queue as a person pages it: oldest invoice first, 100 lines a page."""
        response = self.client.get(
            "/v1/queries", params={"limit": 100}, headers=self.headers, name="/v1/queries"
        )
        if response.status_code == 200 and (cursor := response.json().get("next_cursor")):
            self.client.get(
                "/v1/queries",
                params={"limit": 100, "cursor": cursor},
                headers=self.headers,
                name="/v1/queries",
            )

    @task(3)
    @fresh_after_idle
    def decide_and_approve(self) -> None:
        listed = self.client.get(
            "/v1/invoices",
            params={"status": "validated", "limit": 50},
            headers=self.headers,
            name="/v1/invoices",
        )
        if listed.status_code != 200:
            return
        free = [item["id"] for item in listed.json()["items"] if item["id"] not in CLAIMED]
        if not free:
            return
        invoice_id = free[0]
        CLAIMED.add(invoice_id)
        queue = self.client.get(
            "/v1/queries",
            params={"invoice_id": invoice_id, "limit": 1000},
            headers=self.headers,
            name="/v1/queries",
        )
        if queue.status_code != 200:
            return
        undecided: list[dict[str, Any]] = queue.json()["items"]
        # A person reads the lines before deciding them (staff see the detail; the read is audited).
        self.client.get(
            f"/v1/invoices/{invoice_id}/lines",
            params={"outcome": "query", "limit": 100},
            headers=self.headers,
            name="/v1/invoices/{id}/lines",
        )
        singles = [item for item in undecided if item["line_ref"] is not None][:SINGLE_DECISIONS]
        for item in singles:
            if item["claimed_amount"] is not None:
                decision: dict[str, str] = {"decision": "accept", "amount": item["claimed_amount"]}
            else:
                decision = {"decision": "reject", "reason": "no amount was claimed for this line"}
            self.client.post(
                f"/v1/invoices/{invoice_id}/lines/{item['line_ref']}/decision",
                json=decision,
                headers=self.headers,
                name="/v1/invoices/{id}/lines/{line_ref}/decision",
            )
        left = [item for item in undecided if item not in singles]
        codes = sorted({code for item in left for code in item["reasons"]})
        for i, code in enumerate(codes):
            carrying = [item for item in left if code in item["reasons"]]
            if not carrying:
                continue  # decided already under an earlier code
            left = [item for item in left if code not in item["reasons"]]
            # Alternately pay and refuse: both kinds of bulk decision are exercised.
            if i % 2 == 0 and all(item["claimed_amount"] is not None for item in carrying):
                bulk: dict[str, str] = {"reason_code": code, "decision": "accept", "amount": "claimed"}
            else:
                bulk = {"reason_code": code, "decision": "reject", "reason": "not payable as claimed"}
            self.client.post(
                f"/v1/invoices/{invoice_id}/queries/decision",
                json=bulk,
                headers=self.headers,
                name="/v1/invoices/{id}/queries/decision",
            )
        self.client.post(
            f"/v1/invoices/{invoice_id}/approve", headers=self.headers, name="/v1/invoices/{id}/approve"
        )


class Finance(SoakUser):
    """Finance of one commissioner: page through the invoices approved to pay and look at one's
    payments."""

    fixed_count = int(os.environ.get("CEF_SOAK_FINANCE", "3"))
    _numbers = itertools.count()

    def on_start(self) -> None:
        self.commissioner, n = _org_of(self._numbers, COMMISSIONERS)
        self.headers = _token("invoices:read", self.commissioner, f"{self.commissioner}-soak-finance-{n}")

    @task
    @fresh_after_idle
    def read_approved(self) -> None:
        seen: list[str] = []
        params: dict[str, Any] = {"limit": 100}
        for _ in range(3):
            response = self.client.get(
                "/v1/invoices/approved-to-pay",
                params=params,
                headers=self.headers,
                name="/v1/invoices/approved-to-pay",
            )
            if response.status_code != 200:
                return
            page = response.json()
            seen += [item["id"] for item in page["items"]]
            if not page.get("next_cursor"):
                break
            params = {"limit": 100, "cursor": page["next_cursor"]}
        if seen:
            self.client.get(
                f"/v1/invoices/{random.choice(seen)}/payments",
                headers=self.headers,
                name="/v1/invoices/{id}/payments",
            )
