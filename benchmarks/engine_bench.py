"""Engine throughput: lines/s through read_backing_data + prepare_line + validate_line, in memory.

Generates a world (practices, patients, registrations, districts, tariff) and 1,000,000 backing data
lines shaped like the sample's (mostly valid, some queries, malformed and duplicate lines), then
times the hot path alone: no database, no HTTP; tokens come from a precomputed dict, as the service
gets them from one batched tokeniser call per chunk.
Run: `.venv/bin/python benchmarks/engine_bench.py [lines]`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
import sys
import time
from datetime import date, timedelta
from decimal import Decimal

from cef_api.reference.parsers import (
    GpPracticeRow,
    PatientRow,
    PostcodeDistrictRow,
    ProviderRow,
    RegistrationRow,
    SpecialisedServiceRow,
    TariffRow,
)
from cef_api.validation.csvfile import read_backing_data
from cef_api.validation.engine import SummaryAccumulator, prepare_line, validate_line
from cef_api.validation.memory import InMemoryDuplicateIndex, InMemoryReferenceData
from cef_api.validation.postcode import outward_code
from cef_api.validation.rules.pricing import expected_price
from cef_api.validation.types import InvoiceHeader, TariffEntry

COLUMNS = (
    "line_ref,nhs_number,date_of_birth,postcode,gp_practice_code,service_code,"
    "point_of_delivery,hrg_code,activity_date,discharge_date,amount"
).split(",")


def _nhs(n: int) -> str | None:
    nine = f"{n:09d}"
    total = sum(int(d) * w for d, w in zip(nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    return None if check == 10 else nine + str(check)


def _tokenise(kind: str, value: str) -> str:
    return hashlib.blake2b(f"{kind}:{value}".encode(), digest_size=12).hexdigest()


def main() -> None:
    total_lines = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    rng = random.Random(20191)
    practices = [GpPracticeRow(f"A{81000 + i}", f"P{i}", "00K" if i % 10 else "02Y", "A") for i in range(800)]
    districts = [PostcodeDistrictRow(f"TS{i}", "00K") for i in range(1, 30)]
    hrgs = [f"HR{i:02d}A" for i in range(60)]
    points = ("EL", "NEL", "DC", "OPFA", "OPFU")
    tariff = [
        TariffRow(h, h, p, Decimal(rng.randint(10_000, 900_000)) / 100, rng.randint(2, 20), Decimal("301.00"))
        for h in hrgs
        for p in points
    ]
    mff = Decimal("1.139")
    numbers = [x for x in (_nhs(999_000_000 + i) for i in range(60_000)) if x is not None][:50_000]
    patients, registrations = [], []
    for i, number in enumerate(numbers):
        born = date(1930, 1, 1) + timedelta(days=rng.randint(0, 30_000))
        postcode = f"TS{rng.randint(1, 29)} {rng.randint(1, 9)}AB"
        if i % 50:
            patients.append(PatientRow(number, born, outward_code(postcode), postcode))
        if i % 20:
            registrations.append(
                RegistrationRow(
                    number, practices[i % len(practices)].gp_practice_code, date(2015, 6, 1), None
                )
            )
    reference = InMemoryReferenceData.from_rows(
        gp_practices=practices,
        patients=patients,
        registrations=registrations,
        postcode_districts=districts,
        tariff=tariff,
        providers=[ProviderRow("RTR", "RTR", mff)],
        specialised_services=[SpecialisedServiceRow("NCBPS13B", "cardiac", "X24")],
        tokenise=_tokenise,
    )
    tariff_by_key = {(t.hrg_code, t.point_of_delivery): t for t in tariff}
    dob_of = {p.nhs_number: p.date_of_birth for p in patients}

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    start = date(2019, 7, 1)
    for n in range(total_lines):
        number = numbers[rng.randrange(len(numbers))]
        hrg, point = hrgs[rng.randrange(len(hrgs))], points[rng.randrange(5)]
        activity = start + timedelta(days=rng.randrange(31))
        discharge = activity + timedelta(days=rng.randint(0, 25)) if point in ("EL", "NEL") else None
        row = tariff_by_key[(hrg, point)]
        entry = TariffEntry(hrg, point, row.price, row.trim_point_days, row.excess_bed_day_price)
        amount = str(expected_price(entry, mff, point, activity, discharge))
        dob = dob_of.get(number)
        if n % 97 == 0:
            amount = "n/a"
        writer.writerow(
            [
                f"{n:07d}",
                f"{number[:3]} {number[3:6]} {number[6:]}" if n % 5 == 0 else number,
                dob.isoformat() if dob else "",
                "ts18 1hu" if n % 7 == 0 else "TS18 1HU",
                "",
                "NCBPS99Z" if n % 31 == 0 else "",
                point.lower() if n % 11 == 0 else point,
                hrg,
                activity.isoformat(),
                discharge.isoformat() if discharge else "",
                amount,
            ]
        )
    data = out.getvalue().encode()
    chunks = [data[i : i + 65_536] for i in range(0, len(data), 65_536)]
    token_of = {number: _tokenise("nhs_number", number) for number in numbers}
    dob_token_of: dict[date, str] = {}
    header = InvoiceHeader("RTR-201907-BENCH", "RTR", "00K", date(2019, 8, 5), start, date(2019, 7, 31))
    duplicates = InMemoryDuplicateIndex()
    summary = SummaryAccumulator()

    began, began_cpu = time.perf_counter(), time.process_time()
    for raw in read_backing_data(chunks):
        line = prepare_line(raw)
        dob_token = None
        if line.date_of_birth is not None:
            dob_token = dob_token_of.get(line.date_of_birth)
            if dob_token is None:
                dob_token = dob_token_of[line.date_of_birth] = _tokenise(
                    "date_of_birth", line.date_of_birth.isoformat()
                )
        outcome = validate_line(
            line,
            nhs_token=token_of[line.nhs_number] if line.nhs_number is not None else None,
            dob_token=dob_token,
            header=header,
            reference=reference,
            duplicates=duplicates,
        )
        summary.add(outcome)
    elapsed, cpu = time.perf_counter() - began, time.process_time() - began_cpu
    result = summary.result()
    print(
        f"engine: {result.lines:,} lines in {elapsed:.2f} s = {result.lines / elapsed:,.0f} lines/s; "
        f"{cpu:.2f} s of CPU = {result.lines / cpu:,.0f} lines per CPU-second (one core) "
        f"(valid {result.valid:,}, query {result.query:,}, rejected {result.rejected:,}; "
        f"{len(data) / 1e6:.0f} MB of CSV)"
    )


if __name__ == "__main__":
    main()
