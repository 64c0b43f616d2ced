"""Every kind of identifier, sent through every field and path of the three services over real
processes, never comes back: not in an answer, a log line, an audit event or an outbox row.

The world: the demo patients plus generated NHS numbers (valid check digits), dates of birth and
full postcodes, in the spellings people type. Every route of every service (from its OpenAPI
document) gets one in each path parameter, query parameter, header and JSON body field, with a
token of each role and with none; invoice headers and backing-data cells get them where a code
belongs; reference files get them in columns that are not identifiers. The identifiers that are
legitimately submitted (the identifier columns of backing data and of the patients file) go the
same way: they may only ever sit encrypted in the tokeniser."""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from cef_common.devtokens import mint_dev_token
from cef_common.testing import database_values

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo"
SERVICES = ("tokeniser", "cef-api", "audit")
# Answers that hand identifiers out by design, to the people allowed them: re-identification.
REIDENTIFYING = re.compile(r"/(reidentify|detokenise)$")


# --- the world of identifiers ------------------------------------------------------------------


def nhs_check_digit(nine: str) -> int | None:
    total = sum(int(d) * w for d, w in zip(nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    return 0 if check == 11 else None if check == 10 else check


def generated_nhs_numbers(rng: random.Random, n: int) -> list[str]:
    found: list[str] = []
    while len(found) < n:
        nine = str(rng.randint(400_000_000, 799_999_999))
        check = nhs_check_digit(nine)
        if check is not None:
            found.append(nine + str(check))
    return found


def generated_postcodes(rng: random.Random, n: int) -> list[str]:
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    return [
        f"{rng.choice(['ZX', 'ZY', 'QW'])}{rng.randint(1, 29)} {rng.randint(0, 9)}"
        f"{rng.choice(letters)}{rng.choice(letters)}"
        for _ in range(n)
    ]


def generated_dates_of_birth(rng: random.Random, n: int) -> list[date]:
    return [date(1931, 1, 1) + timedelta(days=rng.randint(0, 27_000)) for _ in range(n)]


@dataclass(frozen=True)
class Identifier:
    kind: str  # nhs_number, date_of_birth or postcode
    value: str  # canonical: 10 digits, ISO date, postcode with its space

    def spellings(self) -> list[str]:
        """How a caller might send it."""
        if self.kind == "nhs_number":
            v = self.value
            return [v, f"{v[:3]} {v[3:6]} {v[6:]}", f"{v[:3]}-{v[3:6]}-{v[6:]}"]
        if self.kind == "postcode":
            return [self.value, self.value.replace(" ", ""), self.value.lower()]
        d = date.fromisoformat(self.value)
        return [self.value, d.strftime("%d/%m/%Y")]

    def needles(self) -> set[str]:
        """The spellings to look for, upper-cased too (postcodes)."""
        return {s for spelling in self.spellings() for s in (spelling, spelling.upper())}


def leaked(identifiers: list[Identifier], text: str) -> list[Identifier]:
    """Those of `identifiers` that `text` holds in any common spelling: a spelling without
    separators counts only as a whole run of letters and digits (a short postcode could otherwise
    match inside a token by chance)."""
    words = set(re.findall(r"[A-Za-z0-9]+", text))
    spaced = sorted({n for i in identifiers for n in i.needles() if not n.isalnum()}, key=len, reverse=True)
    found = set(re.findall("|".join(map(re.escape, spaced)), text)) if spaced else set()
    return [i for i in identifiers if i.needles() & (words | found)]


@dataclass
class World:
    identifiers: list[Identifier]
    _cycle: Iterator[tuple[Identifier, str]] = field(init=False)

    def __post_init__(self) -> None:
        pairs = [(i, s) for i in self.identifiers for s in i.spellings()]
        random.Random(7).shuffle(pairs)
        self._cycle = itertools.cycle(pairs)

    def next(self, *, dates: bool = True) -> str:
        """The next spelling of the next identifier, round-robin, so every spelling is sent."""
        while True:
            identifier, spelling = next(self._cycle)
            if dates or identifier.kind != "date_of_birth":
                return spelling

    def nhs_number(self) -> str:
        """The next NHS number, as ten digits."""
        while True:
            identifier, _ = next(self._cycle)
            if identifier.kind == "nhs_number":
                return identifier.value

    def one_of_each(self, *, dates: bool = True) -> list[str]:
        out = []
        for kind in ("nhs_number", "postcode", "date_of_birth"):
            if kind == "date_of_birth" and not dates:
                continue
            while True:
                spelling = self.next()
                if self._kind_of(spelling) == kind:
                    out.append(spelling)
                    break
        return out

    def _kind_of(self, spelling: str) -> str:
        for i in self.identifiers:
            if spelling in i.spellings():
                return i.kind
        raise KeyError(spelling)


def demo_world() -> World:
    rng = random.Random(20261203)
    identifiers: set[Identifier] = set()
    with (DEMO / "reference/patients.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            for kind in ("nhs_number", "date_of_birth", "postcode"):
                if row[kind]:
                    identifiers.add(Identifier(kind, row[kind]))
    identifiers |= {Identifier("nhs_number", v) for v in generated_nhs_numbers(rng, 12)}
    identifiers |= {Identifier("postcode", v) for v in generated_postcodes(rng, 12)}
    identifiers |= {Identifier("date_of_birth", d.isoformat()) for d in generated_dates_of_birth(rng, 12)}
    kept = sorted(
        (i for i in identifiers if not (i.kind == "date_of_birth" and i.value in _non_birth_dates())),
        key=lambda i: (i.kind, i.value),
    )
    return World(kept)


def _non_birth_dates() -> set[str]:
    """Dates the demo world uses other than as dates of birth (activity, registration and invoice
    dates): a date of birth that is also one of them cannot be told from it in a dump."""
    found: set[str] = set()
    for path in [*(DEMO / "invoices").glob("*.csv"), *(DEMO / "reference").glob("*.csv")]:
        if path.name == "patients.csv":
            continue
        found |= set(re.findall(r"\d{4}-\d{2}-\d{2}", path.read_text()))
    for header in (DEMO / "invoices").glob("*.json"):
        found |= {str(v) for v in json.loads(header.read_text()).values()}
    return found


# --- the requests ----------------------------------------------------------------------------------


# Who calls each service: every role it knows, one it does not, and nobody.
ROLES: dict[str, dict[str, tuple[str, str | None]]] = {
    "tokeniser": {
        "tokenise": ("tokenise", None),
        "detokenise": ("detokenise", None),
        "stranger": ("audit:read", None),
    },
    "cef-api": {
        "provider": ("invoices:submit", "RTR"),
        "staff": ("invoices:validate", "00C"),
        "finance": ("invoices:read", "00C"),
        "admin": ("reference:write", None),
        "other-provider": ("invoices:submit", "RVW"),
        "stranger": ("audit:read", None),
    },
    "audit": {
        "auditor": ("audit:read", None),
        "writer": ("audit:write", None),
        "stranger": ("tokenise", None),
    },
}
# The roles that get furthest into a service's routes: they get every kind of identifier per field.
DEEP_ROLES = {"tokenise", "staff", "provider", "writer", "auditor"}
PUBLIC = {"/healthz", "/readyz", "/.well-known/jwks.json"}
HEADERS_SWEPT = ("X-Request-Id", "Idempotency-Key", "traceparent")


@dataclass
class Route:
    service: str
    method: str
    template: str
    path_params: list[str]
    query_params: list[str]
    body: str | None  # "json", "multipart", "csv" or None


def routes_of(client: httpx.Client, service: str) -> list[Route]:
    doc = client.get("/openapi.json").json()
    found = []
    for template, methods in doc["paths"].items():
        for method, op in methods.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            params = op.get("parameters", [])
            content = (op.get("requestBody") or {}).get("content", {})
            body = (
                "multipart"
                if "multipart/form-data" in content or template == "/v1/invoices" and method == "post"
                else "csv"
                if "text/csv" in content or template.startswith("/v1/reference/")
                else "json"
                if content
                else None
            )
            found.append(
                Route(
                    service,
                    method.upper(),
                    template,
                    [p["name"] for p in params if p["in"] == "path"],
                    [p["name"] for p in params if p["in"] == "query"],
                    body,
                )
            )
    return found


def json_bodies(route: Route, ids: dict[str, str]) -> dict[str, Any]:
    """A body each JSON endpoint would accept (as far as its fields go), to put identifiers into."""
    event = {
        "action": "read",
        "type": "sweep.probe",
        "outcome": "success",
        "actor": {"sub": "sweeper", "org": "00C", "client": "sweep"},
        "source": "sweep",
        "entity": {"type": "invoice", "id": ids["invoice_id"], "count": 1},
        "purpose": "checking the sweep",
        "detail": {"note": "a probe", "codes": ["RTR"]},
    }
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("tokeniser", "/v1/tokenise"): {
            "kind": "nhs_number",
            "values": ["9434765919"],
            "context": "cef",
            "key_version": 1,
        },
        ("tokeniser", "/v1/retokenise"): {
            "kind": "nhs_number",
            "tokens": ["x"],
            "context": "cef",
            "key_version": 1,
        },
        ("tokeniser", "/v1/detokenise"): {
            "kind": "nhs_number",
            "tokens": ["x"],
            "purpose": "resolve a query",
            "context": "cef",
            "on_behalf_of": {"sub": "someone", "org": "00C"},
            "invoice_id": ids["invoice_id"],
            "line_ref": ids["line_ref"],
        },
        ("audit", "/v1/events"): event,
        ("audit", "/v1/verify"): {"checkpoints": ["x"]},
        ("cef-api", "/v1/invoices/{invoice_id}/lines/{line_ref}/decision"): {
            "decision": "reject",
            "reason": "not our patient",
            "amount": "1.00",
        },
        ("cef-api", "/v1/invoices/{invoice_id}/lines/{line_ref}/reidentify"): {
            "purpose": "resolve-query",
            "reason": "the query on this line needs the patient",
        },
    }
    return bodies.get((route.service, route.template), {"name": "probe", "value": "probe"})


def slots(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], bool]]:
    """Where in a JSON body a string or a whole number sits (keys and list indexes), and whether it
    is a number (an NHS number fits in one)."""
    if isinstance(value, str):
        yield path, False
    elif isinstance(value, int) and not isinstance(value, bool):
        yield path, True
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from slots(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from slots(v, (*path, i))


def put_at(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


@dataclass
class Sweep:
    clients: dict[str, httpx.Client]
    tokens: dict[str, dict[str, str]]
    world: World
    ids: dict[str, str]
    answers: list[str] = field(default_factory=list)
    covered: set[tuple[str, str, str]] = field(default_factory=set)
    sent: int = 0

    def send(
        self, route: Route, role: str | None, *, path: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        values = {name: self.ids.get(name, "probe") for name in route.path_params}
        values.update(path or {})
        url = route.template.format(**{k: _quote(v) for k, v in values.items()})
        headers = dict(kwargs.pop("headers", {}))
        if role is not None:
            headers.setdefault("Authorization", f"Bearer {self.tokens[route.service][role]}")
        response = self.clients[route.service].request(route.method, url, headers=headers, **kwargs)
        self.sent += 1
        self.covered.add((route.service, route.method, route.template))
        reidentified = response.is_success and REIDENTIFYING.search(route.template)
        if not reidentified:
            self.answers.append(response.text)
        self.answers.append("\n".join(f"{k}: {v}" for k, v in response.headers.items()))
        return response

    def sweep_route(self, route: Route) -> None:
        public = route.template in PUBLIC
        roles: list[str | None] = [None] if public else [None, *ROLES[route.service]]
        for role in roles:
            # The roles that get furthest in: every field, every kind of identifier in path and
            # body. Nobody (refused at once): every field, one identifier each. Any other role
            # (refused for its scope or organisation): path parameters and one header.
            deep = role in DEEP_ROLES
            pick = (lambda: self.world.one_of_each()) if deep else (lambda: [self.world.next()])
            for name in route.path_params:
                for spelling in pick():
                    self.send(route, role, path={name: spelling}, **self.baseline(route))
            # One swept header per role, in turn: every route gets each of them from some role.
            header = HEADERS_SWEPT[self.sent % len(HEADERS_SWEPT)]
            for name in HEADERS_SWEPT if public or deep else [header]:
                base = self.baseline(route)
                headers = {name: self.world.next(), **base.pop("headers", {})}
                self.send(route, role, headers=headers, **base)
            if not (deep or role is None):
                continue
            for name in route.query_params:
                self.send(route, role, params={name: self.world.next()}, **self.baseline(route))
            if route.body == "json":
                body = json_bodies(route, self.ids)
                for slot, number in slots(body):
                    for spelling in [int(self.world.nhs_number())] if number else pick():
                        self.send(route, role, json=put_at(body, slot, spelling))
        # A bearer token that is an identifier.
        base = self.baseline(route)
        base["headers"] = {**base.get("headers", {}), "Authorization": f"Bearer {self.world.next()}"}
        self.send(route, None, **base)

    def baseline(self, route: Route) -> dict[str, Any]:
        if route.body == "json":
            return {"json": json_bodies(route, self.ids)}
        if route.body == "csv":
            # A file no dataset accepts (no header it knows): nothing is replaced.
            return {"content": b"nothing\n", "headers": {"Content-Type": "text/csv"}}
        if route.body == "multipart":
            return {"files": submission(self.ids["header"], self.ids["backing"])}
        return {}


def _quote(value: str) -> str:
    return httpx.URL("http://x/").copy_with(path="/" + value).raw_path.decode()[1:].replace("/", "%2F")


def submission(header: dict[str, Any], backing: str) -> dict[str, tuple[str, bytes, str]]:
    return {
        "invoice": ("invoice.json", json.dumps(header).encode(), "application/json"),
        "backing_data": ("backing.csv", backing.encode(), "text/csv"),
    }


def backing_rows(n: int) -> tuple[list[str], list[dict[str, str]]]:
    with (DEMO / "invoices/RTR-201904-0000.csv").open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(itertools.islice(reader, n))


def to_csv(columns: list[str], rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# Columns of backing data and reference files that hold no identifier, and whether a date is a
# legitimate value there (a date of birth sent as an activity date is just a date).
BACKING_CELLS = {
    "line_ref": True,
    "hrg_code": True,
    "point_of_delivery": True,
    "gp_practice_code": True,
    "service_code": True,
    "amount": True,
    "activity_date": False,
    "discharge_date": False,
}
HEADER_FIELDS = {
    "invoice_number": True,
    "provider_code": True,
    "commissioner_code": True,
    "invoice_date": False,
    "period_start": False,
    "period_end": False,
}
REFERENCE_FILES = {
    "providers": ("providers.csv", {"provider_code": True, "name": True, "market_forces_factor": True}),
    "postcode-districts": ("postcode_districts.csv", {"postcode_district": True, "commissioner_code": True}),
    "specialised-services": (
        "specialised_services.csv",
        {"service_code": True, "name": True, "commissioner_code": True},
    ),
    "tariff": ("tariff.csv", {"hrg_code": True, "hrg_name": True, "point_of_delivery": True, "price": True}),
    "registrations": ("registrations.csv", {"gp_practice_code": True, "registered_from": False}),
}


def wait_for_outboxes(data_dir: Path, deadline: float) -> None:
    """Until every producer's outbox has reached the audit service (or the deadline passes: the
    dump below then still covers the outboxes)."""
    while time.monotonic() < deadline:
        pending = 0
        for name in ("cef-api", "tokeniser"):
            engine = sa.create_engine(f"sqlite:///{data_dir / f'{name}.db'}")
            with engine.connect() as conn:
                pending += conn.execute(
                    sa.text("SELECT count(*) FROM audit_outbox WHERE delivered_at IS NULL")
                ).scalar_one()
            engine.dispose()
        if pending == 0:
            return
        time.sleep(0.3)


def test_no_identifier_sent_anywhere_comes_back_or_is_kept(up: Any) -> None:
    world = demo_world()
    keys = up.data_dir / "keys"
    tokens = {
        service: {
            role: mint_dev_token(keys, scopes=[scope], audience=service, sub=f"sweep-{role}", org=org)
            for role, (scope, org) in roles.items()
        }
        for service, roles in ROLES.items()
    }
    clients = {s: httpx.Client(base_url=up.url(s), timeout=60) for s in SERVICES}
    try:
        # A real invoice, legitimately carrying the demo patients' identifiers in its backing data.
        header = json.loads((DEMO / "invoices/RTR-201904-0000.json").read_text())
        columns, rows = backing_rows(25)
        first = clients["cef-api"].post(
            "/v1/invoices",
            files=submission(header, to_csv(columns, rows)),
            headers={"Authorization": f"Bearer {tokens['cef-api']['provider']}"},
        )
        assert first.status_code in (201, 202), first.text
        ids = {
            "invoice_id": first.json()["id"],
            "line_ref": rows[0]["line_ref"].strip(),
            "dataset": "providers",
        }
        ids_with_world: dict[str, Any] = {
            **ids,
            "header": {**header, "invoice_number": "SWEEP-BASE"},
            "backing": to_csv(columns, rows[:2]),
        }
        sweep = Sweep(clients, tokens, world, ids_with_world)
        sweep.answers.append(first.text)

        routes = [r for s in SERVICES for r in routes_of(clients[s], s)]
        assert len(routes) >= 12, [r.template for r in routes]
        for route in routes:
            sweep.sweep_route(route)

        # Invoice headers and backing-data cells, with the provider's token.
        submit = next(r for r in routes if r.body == "multipart")
        for n, (name, dates_ok) in enumerate(HEADER_FIELDS.items()):
            for spelling in [world.next(dates=dates_ok)]:
                bad = {**header, "invoice_number": f"SWEEP-H{n}-{len(sweep.answers)}", name: spelling}
                sweep.send(submit, "provider", files=submission(bad, to_csv(columns, rows[:2])))
        for n, (column, dates_ok) in enumerate(BACKING_CELLS.items()):
            for spelling in [world.next(dates=dates_ok)]:
                cells = [dict(r) for r in rows[:2]]
                cells[1][column] = spelling
                numbered = {**header, "invoice_number": f"SWEEP-C{n}-{len(sweep.answers)}"}
                sweep.send(submit, "provider", files=submission(numbered, to_csv(columns, cells)))

        # Read everything back as each role sees it.
        for role in ("provider", "staff", "finance"):
            auth = {"Authorization": f"Bearer {tokens['cef-api'][role]}"}
            listing = clients["cef-api"].get("/v1/invoices?limit=1000", headers=auth)
            sweep.answers.append(listing.text)
            for item in listing.json().get("items", []):
                lines = clients["cef-api"].get(f"/v1/invoices/{item['id']}/lines?limit=1000", headers=auth)
                sweep.answers.append(lines.text)

        # Reference files with identifiers in columns that hold none (last: a load replaces data).
        load = next(r for r in routes if r.body == "csv")
        for dataset, (filename, cells_of) in REFERENCE_FILES.items():
            with (DEMO / "reference" / filename).open(newline="") as f:
                reader = csv.DictReader(f)
                ref_columns, ref_rows = list(reader.fieldnames or []), list(itertools.islice(reader, 3))
            for column, dates_ok in cells_of.items():
                for spelling in [world.next(dates=dates_ok)]:
                    cells = [dict(r) for r in ref_rows]
                    cells[-1][column] = spelling
                    sweep.send(
                        load,
                        "admin",
                        path={"dataset": dataset},
                        content=to_csv(ref_columns, cells).encode(),
                        headers={"Content-Type": "text/csv"},
                    )

        audit_auth = {"Authorization": f"Bearer {tokens['audit']['auditor']}"}
        wait_for_outboxes(up.data_dir, time.monotonic() + 30)
        events = clients["audit"].get("/v1/events?limit=1000&order=desc", headers=audit_auth)
        sweep.answers.append(events.text)
    finally:
        for client in clients.values():
            client.close()

    # Every route of every service was driven.
    assert {(r.service, r.method, r.template) for r in routes} <= sweep.covered
    assert sweep.sent > 500

    places: dict[str, str] = {"answers": "\n".join(sweep.answers), "logs": up.log.read_text()}
    for db in sorted(up.data_dir.glob("*.db")):
        engine = sa.create_engine(f"sqlite:///{db}")
        try:
            places[db.name] = "\n".join(f"{table}: {text}" for table, text in database_values(engine))
        finally:
            engine.dispose()
    assert {"audit.db", "cef-api.db", "tokeniser.db"} <= set(places), sorted(places)
    assert "invoice.submit" in places["audit.db"]

    leaks = {}
    for where, text in places.items():
        found = leaked(world.identifiers, text)
        if found:
            leaks[where] = [f"{len(found)} leaked, e.g.", *(_context(text, i) for i in found[:3])]
    assert leaks == {}


def _context(text: str, identifier: Identifier) -> str:
    """Where a leaked identifier sits, for the failure message."""
    for needle in identifier.needles():
        at = text.find(needle)
        if at >= 0:
            return f"{identifier.kind} in …{text[max(0, at - 150) : at + 40]}…".replace("\n", " | ")
    return identifier.kind
