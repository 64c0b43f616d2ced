"""A world generator for the CEF: reference data, invoices and their expected outcomes, from a seed.

Every line is drawn *by design* (a scenario: valid, price mismatch, unknown patient, duplicate,
...) so its expected outcome is known from how it was made, with the price computed here by
the tariff formula of validation-rules.md: nothing is computed with the engine under test.
Used by the tests (small worlds), the demo (`--demo`: writes demo/) and the benchmark (one
1,000,000-line invoice).

    .venv/bin/python benchmarks/generate_world.py OUT_DIR [--seed N] [--patients N] [--invoices N]
        [--lines N] [--epraccur FILE]
    .venv/bin/python benchmarks/generate_world.py --demo
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEMO_EPRACCUR = REPO / "demo" / "reference" / "epraccur.csv"
SHARED_EPRACCUR = Path(__file__).resolve().parents[2] / "shared/data/reference/epraccur.csv"
# The demo world's practices: the commissioners of Teesside and Durham (Open Government Licence).
DEMO_COMMISSIONERS = ("00K", "00M", "00C")

POINTS_OF_DELIVERY = ("EL", "NEL", "DC", "OPFA", "OPFU")
SPELLS = ("EL", "NEL")
ATTENDANCES = ("DC", "OPFA", "OPFU")
PENNY = Decimal("0.01")
SPECIALISED = (
    ("NCBPS01C", "Adult congenital heart disease services"),
    ("NCBPS13B", "Specialised cardiac services (adults)"),
    ("NCBPS23X", "Specialised renal services (adults)"),
)
PROVIDERS = (
    ("RTR", "South Tees Hospitals NHS Foundation Trust", Decimal("1.139")),
    ("RVW", "North Tees and Hartlepool NHS Foundation Trust", Decimal("0.982")),
    ("RXP", "County Durham and Darlington NHS Foundation Trust", Decimal("1.047")),
)
COLUMNS = (
    "line_ref",
    "nhs_number",
    "date_of_birth",
    "postcode",
    "gp_practice_code",
    "service_code",
    "point_of_delivery",
    "hrg_code",
    "activity_date",
    "discharge_date",
    "amount",
)

# Scenario → relative weight in an ordinary invoice.
SCENARIOS = {
    "valid": 50,
    "valid_moved": 6,
    "valid_residence": 5,
    "price_mismatch": 5,
    "tariff_not_found": 3,
    "patient_not_found": 4,
    "dob_mismatch": 3,
    "residence_unknown": 3,
    "line_postcode": 3,
    "not_responsible": 4,
    "nhs_invalid": 3,
    "outside_period": 3,
    "malformed": 4,
    "specialised": 2,
    "duplicate": 3,
}


def q(value: Decimal) -> Decimal:
    return value.quantize(PENNY, rounding=ROUND_HALF_UP)


def nhs_check_digit(nine: str) -> int | None:
    total = sum(int(d) * w for d, w in zip(nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    return None if check == 10 else 0 if check == 11 else check


def nhs_number(rng: random.Random, used: set[str]) -> str:
    while True:
        nine = "999" + f"{rng.randrange(10**6):06d}"
        check = nhs_check_digit(nine)
        if check is not None and (n := f"{nine}{check}") not in used:
            used.add(n)
            return n


def invalid_nhs_number(rng: random.Random) -> str:
    while True:
        nine = "999" + f"{rng.randrange(10**6):06d}"
        check = nhs_check_digit(nine)
        if check is not None:
            return f"{nine}{(check + rng.randrange(1, 10)) % 10}"


@dataclass(frozen=True)
class Practice:
    code: str
    commissioner: str
    status: str


@dataclass(frozen=True)
class Tariff:
    hrg_code: str
    name: str
    point_of_delivery: str
    price: Decimal
    trim_point_days: int
    excess_bed_day_price: Decimal


@dataclass
class Patient:
    nhs_number: str
    date_of_birth: date
    postcode: str | None
    in_trace: bool
    # (practice, from, to)
    registrations: list[tuple[Practice, date, date | None]] = field(default_factory=list)


@dataclass(frozen=True)
class ExpectedLine:
    line_ref: str
    outcome: str
    reasons: tuple[str, ...]
    responsible_commissioner: str
    expected_amount: str
    claimed_amount: Decimal | None


@dataclass
class Invoice:
    name: str
    header: dict[str, str]
    backing: bytes
    expected: list[ExpectedLine]


@dataclass
class World:
    epraccur: bytes
    practices: list[Practice]
    patients: list[Patient]
    districts: dict[str, str]
    tariff: list[Tariff]
    providers: tuple[tuple[str, str, Decimal], ...]
    invoices: list[Invoice] = field(default_factory=list)

    def reference_files(self) -> dict[str, bytes]:
        """Dataset → file body, in the order `cef reference load` uses."""
        return {
            "gp-practices": self.epraccur,
            "providers": _csv(
                ["provider_code", "name", "market_forces_factor"],
                [[c, n, str(m)] for c, n, m in self.providers],
            ),
            "tariff": _csv(
                [
                    "hrg_code",
                    "hrg_name",
                    "point_of_delivery",
                    "price",
                    "trim_point_days",
                    "excess_bed_day_price",
                ],
                [
                    [
                        t.hrg_code,
                        t.name,
                        t.point_of_delivery,
                        str(t.price),
                        str(t.trim_point_days) if t.point_of_delivery in SPELLS else "",
                        str(t.excess_bed_day_price) if t.point_of_delivery in SPELLS else "",
                    ]
                    for t in self.tariff
                ],
            ),
            "specialised-services": _csv(
                ["service_code", "name", "commissioner_code"], [[c, n, "X24"] for c, n in SPECIALISED]
            ),
            "postcode-districts": _csv(
                ["postcode_district", "commissioner_code"],
                [[d, c] for d, c in sorted(self.districts.items())],
            ),
            "patients": _csv(
                ["nhs_number", "date_of_birth", "postcode"],
                [
                    [p.nhs_number, p.date_of_birth.isoformat(), p.postcode or ""]
                    for p in self.patients
                    if p.in_trace
                ],
            ),
            "registrations": _csv(
                ["nhs_number", "gp_practice_code", "registered_from", "registered_to"],
                [
                    [p.nhs_number, pr.code, f.isoformat(), t.isoformat() if t else ""]
                    for p in self.patients
                    for pr, f, t in p.registrations
                ],
            ),
        }

    def write(self, out: Path) -> None:
        names = {
            "gp-practices": "epraccur.csv",
            "providers": "providers.csv",
            "tariff": "tariff.csv",
            "specialised-services": "specialised_services.csv",
            "postcode-districts": "postcode_districts.csv",
            "patients": "patients.csv",
            "registrations": "registrations.csv",
        }
        (out / "reference").mkdir(parents=True, exist_ok=True)
        (out / "invoices").mkdir(parents=True, exist_ok=True)
        (out / "expected").mkdir(parents=True, exist_ok=True)
        for dataset, body in self.reference_files().items():
            (out / "reference" / names[dataset]).write_bytes(body)
        for inv in self.invoices:
            (out / "invoices" / f"{inv.name}.json").write_bytes(json_bytes(inv.header) + b"\n")
            (out / "invoices" / f"{inv.name}.csv").write_bytes(inv.backing)
        (out / "invoices" / "ORDER").write_text("".join(f"{i.name}\n" for i in self.invoices))
        (out / "expected" / "line_outcomes.csv").write_bytes(expected_lines_csv(self.invoices))
        (out / "expected" / "invoice_summaries.csv").write_bytes(expected_summaries_csv(self.invoices))


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2).encode()


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def expected_lines_csv(invoices: list[Invoice]) -> bytes:
    rows = [
        [
            i.header["invoice_number"],
            e.line_ref,
            e.outcome,
            ";".join(e.reasons),
            e.responsible_commissioner,
            e.expected_amount,
        ]
        for i in invoices
        for e in i.expected
    ]
    return _csv(
        ["invoice_number", "line_ref", "outcome", "reasons", "responsible_commissioner", "expected_amount"],
        rows,
    )


def summary_of(invoice: Invoice) -> dict[str, str]:
    e = invoice.expected
    claimed = sum((x.claimed_amount for x in e if x.claimed_amount is not None), Decimal("0.00"))
    validated = sum(
        (x.claimed_amount for x in e if x.outcome == "valid" and x.claimed_amount is not None),
        Decimal("0.00"),
    )
    return {
        "invoice_number": invoice.header["invoice_number"],
        "lines": str(len(e)),
        "valid": str(sum(x.outcome == "valid" for x in e)),
        "query": str(sum(x.outcome == "query" for x in e)),
        "rejected": str(sum(x.outcome == "rejected" for x in e)),
        "claimed_amount": f"{claimed:.2f}",
        "validated_amount": f"{validated:.2f}",
    }


def expected_summaries_csv(invoices: list[Invoice]) -> bytes:
    rows = [summary_of(i) for i in invoices]
    header = ["invoice_number", "lines", "valid", "query", "rejected", "claimed_amount", "validated_amount"]
    return _csv(header, [[r[h] for h in header] for r in rows])


# --- building a world --------------------------------------------------------------------------------


def read_practices(epraccur: bytes, commissioners: tuple[str, ...] | None) -> tuple[bytes, list[Practice]]:
    text = epraccur.decode("latin-1")
    kept_lines: list[str] = []
    practices: list[Practice] = []
    for line, row in zip(text.splitlines(keepends=True), csv.reader(io.StringIO(text)), strict=False):
        if len(row) < 27:
            continue
        if commissioners is None or row[14] in commissioners:
            kept_lines.append(line)
            if row[14] and row[25] == "4":
                practices.append(Practice(row[0], row[14], row[12]))
    return "".join(kept_lines).encode("latin-1"), practices


def default_epraccur() -> bytes:
    for path in (DEMO_EPRACCUR, SHARED_EPRACCUR):
        if path.is_file():
            return path.read_bytes()
    raise SystemExit("no epraccur.csv: expected demo/reference/epraccur.csv or ../shared/data/reference/")


def _tariff(rng: random.Random, count: int) -> list[Tariff]:
    rows: list[Tariff] = []
    seen: set[str] = set()
    while len(seen) < count:
        hrg = "".join(
            (
                rng.choice("ABDEFHJKLMNW"),
                rng.choice("ABCDFHKNRZ"),
                str(rng.randrange(10, 99)),
                rng.choice("ABCDEFGH"),
            )
        )
        if hrg in seen:
            continue
        seen.add(hrg)
        base = Decimal(rng.randrange(40_000, 900_000)) / 100
        for pod in POINTS_OF_DELIVERY:
            factor = {
                "EL": Decimal("1.00"),
                "NEL": Decimal("1.15"),
                "DC": Decimal("0.70"),
                "OPFA": Decimal("0.12"),
                "OPFU": Decimal("0.08"),
            }[pod]
            spell = pod in SPELLS
            rows.append(
                Tariff(
                    hrg,
                    f"Synthetic HRG {hrg}",
                    pod,
                    q(base * factor),
                    rng.randrange(2, 15) if spell else 0,
                    Decimal(rng.randrange(20_000, 45_000)) / 100 if spell else Decimal("0"),
                )
            )
    return rows


def _postcode(rng: random.Random, district: str) -> str:
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    return f"{district} {rng.randrange(1, 10)}{rng.choice(letters)}{rng.choice(letters)}"


def generate(
    *,
    seed: int = 1,
    patients: int = 400,
    invoices: int = 4,
    lines_per_invoice: int = 100,
    epraccur: bytes | None = None,
    commissioners: tuple[str, ...] = DEMO_COMMISSIONERS,
    scenarios: dict[str, int] | None = None,
) -> World:
    rng = random.Random(seed)
    epraccur_subset, practices = read_practices(epraccur or default_epraccur(), commissioners)
    by_commissioner: dict[str, list[Practice]] = {}
    for p in practices:
        by_commissioner.setdefault(p.commissioner, []).append(p)
    codes = sorted(c for c in by_commissioner if len(by_commissioner[c]) >= 2)
    if len(codes) < 2:
        raise SystemExit("the practice file needs at least two commissioners with practices")
    districts = {f"ZT{n}": codes[n % len(codes)] for n in range(1, 3 * len(codes) + 1)}
    district_of: dict[str, list[str]] = {}
    for d, c in districts.items():
        district_of.setdefault(c, []).append(d)
    tariff = _tariff(rng, 12)
    used: set[str] = set()
    people: list[Patient] = []
    start = date(2010, 1, 1)
    for i in range(patients):
        commissioner = codes[i % len(codes)]
        dob = date(1930, 1, 1) + timedelta(days=rng.randrange(0, 90 * 365))
        kind = rng.random()
        district = rng.choice(district_of[commissioner])
        p = Patient(nhs_number(rng, used), dob, _postcode(rng, district), True)
        if kind < 0.65:
            p.registrations.append((rng.choice(by_commissioner[commissioner]), start, None))
        elif kind < 0.75:
            # Moved: an earlier registration elsewhere, ended; the later one decides.
            other = rng.choice([c for c in codes if c != commissioner])
            moved = date(2018, 1, 1) + timedelta(days=rng.randrange(0, 300))
            p.registrations.append((rng.choice(by_commissioner[other]), start, moved - timedelta(days=1)))
            p.registrations.append((rng.choice(by_commissioner[commissioner]), moved, None))
        elif kind < 0.85:
            p.in_trace = False  # registered, missing from the trace
            p.registrations.append((rng.choice(by_commissioner[commissioner]), start, None))
        elif kind < 0.95:
            pass  # in the trace, no GP: residence decides
        else:
            p.in_trace = False  # nobody knows them
        if p.in_trace and rng.random() < 0.05 and not p.registrations:
            p.postcode = None
        people.append(p)
    world = World(epraccur_subset, practices, people, districts, tariff, PROVIDERS)
    generator = _InvoiceGenerator(rng, world, codes, scenarios or SCENARIOS)
    months = [date(2019, m, 1) for m in range(4, 10)]
    for n in range(invoices):
        provider = PROVIDERS[n % 2]
        commissioner = codes[(n // 4) % len(codes)]
        month = months[n % len(months)]
        world.invoices.append(generator.invoice(n, provider, commissioner, month, lines_per_invoice))
    return world


def _month_end(first: date) -> date:
    nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return nxt - timedelta(days=1)


class _InvoiceGenerator:
    def __init__(self, rng: random.Random, world: World, codes: list[str], scenarios: dict[str, int]) -> None:
        self.rng = rng
        self.world = world
        self.codes = codes
        self.names = list(scenarios)
        self.weights = [scenarios[s] for s in self.names]
        self.tariff = {(t.hrg_code, t.point_of_delivery): t for t in world.tariff}
        self.hrgs = sorted({t.hrg_code for t in world.tariff})
        self.mff = {c: m for c, _, m in world.providers}
        # Keys (provider, commissioner, nhs, date, hrg, pod) of lines with a valid NHS number, and
        # of those that count for duplicates (not rejected), per chain.
        self.taken: set[tuple[str, str, str, date, str, str]] = set()
        self.countable: dict[tuple[str, str], list[tuple[Patient, date, str, str, date | None]]] = {}
        # Checks 14 and 15 look back over the spells with nights of lines not rejected, per
        # (commissioner, NHS number), whatever the provider: (admission, discharge).
        self.spells: dict[tuple[str, str], list[tuple[date, date]]] = {}
        self.pools = self._pools()

    def _pools(self) -> dict[str, dict[str, list[Patient]]]:
        pools: dict[str, dict[str, list[Patient]]] = {}
        for p in self.world.patients:
            if p.registrations:
                current = p.registrations[-1][0].commissioner
                kind = "moved" if len(p.registrations) > 1 else "registered" if p.in_trace else "untraced"
            elif p.in_trace and p.postcode:
                current = self.world.districts[p.postcode.split()[0]]
                kind = "residence"
            elif not p.in_trace:
                current, kind = "", "nobody"
            else:
                continue
            pools.setdefault(kind, {}).setdefault(current, []).append(p)
        return pools

    def _patient(self, kind: str, commissioner: str) -> Patient:
        pool = self.pools.get(kind, {}).get(commissioner) or []
        if not pool:
            # Small worlds may lack a kind for a commissioner: fall back to a plain registered patient.
            pool = self.pools["registered"][commissioner]
        return self.rng.choice(pool)

    def _price(self, provider: str, t: Tariff, activity: date, discharge: date | None) -> Decimal:
        mff = self.mff[provider]
        amount = q(t.price * mff)
        if t.point_of_delivery in SPELLS:
            los = (discharge - activity).days if discharge else 0
            amount += max(0, los - t.trim_point_days) * q(t.excess_bed_day_price * mff)
        return amount

    def _activity(self, first: date, last: date) -> date:
        return first + timedelta(days=self.rng.randrange((last - first).days + 1))

    def _fmt_nhs(self, n: str) -> str:
        r = self.rng.random()
        if r < 0.1:
            return f"{n[:3]} {n[3:6]} {n[6:]}"
        if r < 0.2:
            return f"{n[:3]}-{n[3:6]}-{n[6:]}"
        if r < 0.25:
            return f" {n} "
        return n

    def _fmt_amount(self, amount: Decimal) -> str:
        text = f"{amount:.2f}"
        if text.endswith("0") and self.rng.random() < 0.5:
            text = text[:-1]
        return text

    def _fmt_code(self, code: str) -> str:
        return code.lower() if self.rng.random() < 0.1 else code

    def invoice(
        self, n: int, provider: tuple[str, str, Decimal], commissioner: str, month: date, lines: int
    ) -> Invoice:
        code = provider[0]
        first, last = month, _month_end(month)
        number = f"{code}-{month:%Y%m}-{n:04d}"
        header = {
            "invoice_number": number,
            "provider_code": code,
            "commissioner_code": commissioner,
            "invoice_date": (last + timedelta(days=5)).isoformat(),
            "period_start": first.isoformat(),
            "period_end": last.isoformat(),
        }
        rows: list[dict[str, str]] = []
        expected: list[ExpectedLine] = []
        for i in range(1, lines + 1):
            scenario = self.rng.choices(self.names, self.weights)[0]
            row, exp = self._line(f"{i:05d}", scenario, code, commissioner, first, last)
            rows.append(row)
            expected.append(exp)
        return Invoice(number, header, self._file(rows), expected)

    def _file(self, rows: list[dict[str, str]]) -> bytes:
        columns = list(COLUMNS)
        self.rng.shuffle(columns)
        if self.rng.random() < 0.5:
            columns.append("notes")
        buf = io.StringIO()
        crlf = self.rng.random() < 0.5
        w = csv.writer(buf, lineterminator="\r\n" if crlf else "\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([r.get(c, "") for c in columns])
        data = buf.getvalue().encode()
        return b"\xef\xbb\xbf" + data if self.rng.random() < 0.3 else data

    def _choose(
        self, patient: Patient, provider: str, commissioner: str, first: date, last: date, hrgs: list[str]
    ) -> tuple[date, str, str, date | None]:
        for _ in range(1000):
            activity = self._activity(first, last)
            hrg = self.rng.choice(hrgs)
            pod = self.rng.choice(POINTS_OF_DELIVERY)
            key = (provider, commissioner, patient.nhs_number, activity, hrg, pod)
            if key not in self.taken:
                self.taken.add(key)
                discharge = None
                if pod in SPELLS and self.rng.random() < 0.8:
                    discharge = activity + timedelta(days=self.rng.randrange(0, 25))
                elif pod == "DC" and self.rng.random() < 0.2:
                    discharge = activity
                return activity, hrg, pod, discharge
        raise RuntimeError("could not find a fresh activity for a patient: make the world bigger")

    def _line(
        self, ref: str, scenario: str, provider: str, commissioner: str, first: date, last: date
    ) -> tuple[dict[str, str], ExpectedLine]:
        rng = self.rng
        chain = (provider, commissioner)
        reasons: list[str] = []
        responsible = commissioner
        patient_kind = {
            "valid_moved": "moved",
            "valid_residence": "residence",
            "patient_not_found": "untraced",
            "residence_unknown": "nobody",
            "line_postcode": "nobody",
        }.get(scenario, "registered")
        if scenario == "not_responsible":
            other = rng.choice([c for c in self.codes if c != commissioner])
            patient = self._patient("registered", other)
            responsible = other
            reasons.append("NOT_RESPONSIBLE_COMMISSIONER")
        elif scenario in ("residence_unknown", "line_postcode"):
            patient = self._patient("nobody", "")
        else:
            patient = self._patient(patient_kind, commissioner)
        countable = self.countable.setdefault(chain, [])
        if scenario == "duplicate" and countable:
            patient, activity, hrg, pod, discharge = rng.choice(countable)
            reasons.append("DUPLICATE_ACTIVITY")
        else:
            if scenario == "duplicate":
                scenario = "valid"
            span_first, span_last = first, last
            if scenario == "outside_period":
                span_first, span_last = first - timedelta(days=40), first - timedelta(days=1)
            hrgs = ["ZZ99Z"] if scenario == "tariff_not_found" else self.hrgs
            activity, hrg, pod, discharge = self._choose(
                patient, provider, commissioner, span_first, span_last, hrgs
            )
        t = self.tariff.get((hrg, pod))
        if t is None:
            reasons.append("TARIFF_NOT_FOUND")
        if not first <= activity <= last:
            reasons.append("ACTIVITY_OUTSIDE_PERIOD")
        expected_price = self._price(provider, t, activity, discharge) if t else None
        amount = (
            expected_price if expected_price is not None else Decimal(rng.randrange(10_000, 500_000)) / 100
        )
        if scenario == "price_mismatch":
            amount = amount + Decimal(rng.choice(("0.01", "1.00", "-0.01", "25.50")))
            reasons.append("PRICE_MISMATCH")
        nhs = self._fmt_nhs(patient.nhs_number)
        dob = patient.date_of_birth.isoformat() if rng.random() < 0.6 else ""
        postcode = ""
        if scenario == "nhs_invalid":
            nhs = invalid_nhs_number(rng) if rng.random() < 0.7 else rng.choice(("", "12345", "999123456X"))
            reasons.append("NHS_NUMBER_INVALID")
            responsible = ""
        if scenario == "patient_not_found":
            reasons.append("PATIENT_NOT_FOUND")
        if scenario == "dob_mismatch":
            dob = (patient.date_of_birth + timedelta(days=rng.choice((1, -1, 365)))).isoformat()
            reasons.append("DOB_MISMATCH")
        if scenario == "residence_unknown":
            reasons += ["PATIENT_NOT_FOUND", "RESIDENCE_UNKNOWN"]
            responsible = ""
        if scenario == "line_postcode":
            district = rng.choice([d for d, c in self.world.districts.items() if c == commissioner])
            postcode = _postcode(rng, district)
            postcode = postcode.lower() if rng.random() < 0.3 else postcode.replace(" ", "")
            reasons.append("PATIENT_NOT_FOUND")
        if scenario == "specialised":
            service = rng.choice(SPECIALISED)[0]
            responsible = "X24"
            reasons.append("NOT_RESPONSIBLE_COMMISSIONER")
        else:
            service = ""
        if not patient.in_trace and scenario not in (
            "nhs_invalid",
            "residence_unknown",
            "line_postcode",
            "patient_not_found",
        ):
            reasons.append("PATIENT_NOT_FOUND")
        row = {
            "line_ref": ref,
            "nhs_number": nhs,
            "date_of_birth": dob,
            "postcode": postcode,
            "gp_practice_code": patient.registrations[-1][0].code if patient.registrations else "",
            "service_code": service,
            "point_of_delivery": self._fmt_code(pod),
            "hrg_code": self._fmt_code(hrg),
            "activity_date": activity.isoformat(),
            "discharge_date": discharge.isoformat() if discharge else "",
            "amount": self._fmt_amount(amount),
        }
        claimed: Decimal | None = amount
        if scenario == "malformed":
            how = rng.choice(("pod", "amount", "date", "discharge", "hrg"))
            if how == "pod":
                row["point_of_delivery"] = "XX"
            elif how == "amount":
                row["amount"] = rng.choice(("£12.00", "1,234.50", "-5", "1e3", ".5"))
                claimed = None
            elif how == "date":
                row["activity_date"] = rng.choice(("2019-02-30", "01/05/2019", ""))
            elif how == "discharge":
                row["point_of_delivery"] = rng.choice(SPELLS)
                row["discharge_date"] = (activity - timedelta(days=rng.randrange(1, 5))).isoformat()
            else:
                row["hrg_code"] = ""
            exp = ExpectedLine(ref, "rejected", ("MALFORMED_LINE",), "", "", claimed)
            return row, exp
        for k, v in list(row.items()):
            if v and k not in ("nhs_number",) and rng.random() < 0.03:
                row[k] = f" {v} "
        # Checks 14 and 15 (validation-rules.md v2) on every line with a valid NHS number. They draw
        # nothing from the generator, so the files are those v1 made; only the answers move.
        spell_key = (commissioner, patient.nhs_number)
        has_nights = pod in SPELLS and discharge is not None and discharge > activity
        if scenario != "nhs_invalid":
            earlier = self.spells.get(spell_key, [])
            if has_nights and discharge is not None:
                # The nights [activity, discharge) meet an earlier spell's.
                if any(a < discharge and activity < d for a, d in earlier):
                    reasons.append("OVERLAPPING_SPELL")
            elif pod in ATTENDANCES and any(a < activity < d for a, d in earlier):
                reasons.append("ATTENDANCE_DURING_SPELL")
        reasons = sorted(set(reasons))
        rejecting = {
            "NHS_NUMBER_INVALID",
            "ACTIVITY_OUTSIDE_PERIOD",
            "NOT_RESPONSIBLE_COMMISSIONER",
            "DUPLICATE_ACTIVITY",
        }
        outcome = "rejected" if rejecting & set(reasons) else "query" if reasons else "valid"
        # Lines of unknown people are not reused: a copy without the postcode would decide differently.
        if outcome != "rejected" and patient_kind != "nobody":
            countable.append((patient, activity, hrg, pod, discharge))
        if outcome != "rejected" and scenario != "nhs_invalid" and has_nights and discharge is not None:
            self.spells.setdefault(spell_key, []).append((activity, discharge))
        exp = ExpectedLine(
            ref,
            outcome,
            tuple(reasons),
            responsible,
            f"{expected_price:.2f}" if expected_price is not None else "",
            claimed,
        )
        return row, exp


def big_invoice(
    world: World,
    lines: int,
    *,
    seed: int = 99,
    expected: list[ExpectedLine] | None = None,
    not_commissioner: str | None = None,
) -> tuple[dict[str, str], Iterator[bytes]]:
    """A header and a backing file of `lines` lines as byte chunks (for the benchmark); each line's
    expected outcome is appended to `expected`, when given, as its chunk is made. The answers are
    those of an invoice with no earlier one of its commissioner: `not_commissioner` keeps it apart
    from the world's own invoices (checks 9, 14 and 15 look back over its commissioner's)."""
    rng = random.Random(seed)
    gen = _InvoiceGenerator(rng, world, [], SCENARIOS)
    codes = gen.codes = sorted(gen.pools["registered"])
    commissioner = next(c for c in codes if c != not_commissioner)
    code = world.providers[0][0]
    first = date(2019, 1, 1)
    last = date(2019, 12, 31)
    header = {
        "invoice_number": f"{code}-BENCH-{seed}",
        "provider_code": code,
        "commissioner_code": commissioner,
        "invoice_date": "2020-01-05",
        "period_start": first.isoformat(),
        "period_end": last.isoformat(),
    }

    def chunks() -> Iterator[bytes]:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        for i in range(1, lines + 1):
            row, exp = gen._line(
                f"{i:07d}", gen.rng.choices(gen.names, gen.weights)[0], code, commissioner, first, last
            )
            if expected is not None:
                expected.append(exp)
            w.writerow([row[c] for c in COLUMNS])
            if i % 20_000 == 0:
                yield buf.getvalue().encode()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue().encode()

    return header, chunks()


def write_demo() -> Path:
    """demo/: a small world kept in the repository (`cef up` seeds its reference data)."""
    source = SHARED_EPRACCUR.read_bytes() if SHARED_EPRACCUR.is_file() else DEMO_EPRACCUR.read_bytes()
    world = generate(seed=2019, patients=150, invoices=2, lines_per_invoice=25, epraccur=source)
    out = REPO / "demo"
    world.write(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", nargs="?", type=Path)
    parser.add_argument("--demo", action="store_true", help="write the demo world to demo/")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--invoices", type=int, default=4)
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--epraccur", type=Path, help="an ODS epraccur.csv (default: the demo's subset)")
    args = parser.parse_args(argv)
    if args.demo:
        print(f"demo world written to {write_demo()}")
        return 0
    if args.out is None:
        parser.error("give OUT_DIR or --demo")
    world = generate(
        seed=args.seed,
        patients=args.patients,
        invoices=args.invoices,
        lines_per_invoice=args.lines,
        epraccur=args.epraccur.read_bytes() if args.epraccur else None,
    )
    world.write(args.out)
    print(f"world written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
