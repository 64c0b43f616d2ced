"""Factories of small worlds: reference data, invoice headers and backing data lines, built in memory."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from cef_api.reference.parsers import (
    ContractRow,
    DevolvedDistrictRow,
    GpPracticeRow,
    OriginatingCommissionerRow,
    PatientRow,
    PostcodeDistrictRow,
    PriorApprovalRow,
    ProviderRow,
    RegistrationRow,
    SpecialisedServiceRow,
    TariffRow,
    parse_dataset,
)
from cef_api.validation.csvfile import RawLine
from cef_api.validation.engine import prepare_line, validate_line
from cef_api.validation.memory import InMemoryDuplicateIndex, InMemoryReferenceData
from cef_api.validation.postcode import outward_code
from cef_api.validation.rules.pathway import InMemorySpellIndex
from cef_api.validation.types import InvoiceHeader, LineOutcome


def fake_tokenise(kind: str, value: str) -> str:
    """Deterministic stand-in for the tokeniser: same kind and value, same token; reveals nothing."""
    return hashlib.sha256(f"{kind}\x00{value}".encode()).hexdigest()[:24]


def with_check_digit(nine: str) -> str | None:
    """The valid NHS number starting with these nine digits, or None when no check digit exists."""
    total = sum(int(d) * w for d, w in zip(nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    return None if check == 10 else nine + str(check)


def nhs_numbers(start: int = 999_000_000) -> Iterable[str]:
    """Valid NHS numbers from the 999 range (never issued), in order."""
    n = start
    while True:
        number = with_check_digit(f"{n:09d}")
        if number is not None:
            yield number
        n += 1


@dataclass
class World:
    """A reference world: rows as the parsers produce them, plus helpers to run lines through it."""

    gp_practices: list[GpPracticeRow] = field(default_factory=list)
    patients: list[PatientRow] = field(default_factory=list)
    registrations: list[RegistrationRow] = field(default_factory=list)
    postcode_districts: list[PostcodeDistrictRow] = field(default_factory=list)
    tariff: list[TariffRow] = field(default_factory=list)
    providers: list[ProviderRow] = field(default_factory=list)
    specialised_services: list[SpecialisedServiceRow] = field(default_factory=list)
    # v2 datasets; contracts None: no contracts dataset loaded (check 16 does not run).
    originating_commissioners: list[OriginatingCommissionerRow] = field(default_factory=list)
    devolved_districts: list[DevolvedDistrictRow] = field(default_factory=list)
    contracts: list[ContractRow] | None = None
    prior_approvals: list[PriorApprovalRow] = field(default_factory=list)

    def practice(self, code: str, commissioner: str | None, status: str = "A") -> World:
        self.gp_practices.append(GpPracticeRow(code, f"Practice {code}", commissioner, status))
        return self

    def patient(
        self, nhs_number: str, date_of_birth: date | None = None, postcode: str | None = None
    ) -> World:
        self.patients.append(PatientRow(nhs_number, date_of_birth, outward_code(postcode), postcode))
        return self

    def registration(self, nhs_number: str, practice: str, start: date, end: date | None = None) -> World:
        self.registrations.append(RegistrationRow(nhs_number, practice, start, end))
        return self

    def district(self, district: str, commissioner: str) -> World:
        self.postcode_districts.append(PostcodeDistrictRow(district, commissioner))
        return self

    def price(
        self,
        hrg_code: str,
        point_of_delivery: str,
        price: str,
        trim_point_days: int = 0,
        excess_bed_day_price: str = "0",
    ) -> World:
        self.tariff.append(
            TariffRow(
                hrg_code,
                f"HRG {hrg_code}",
                point_of_delivery,
                Decimal(price),
                trim_point_days,
                Decimal(excess_bed_day_price),
            )
        )
        return self

    def provider(self, code: str, market_forces_factor: str) -> World:
        self.providers.append(ProviderRow(code, f"Trust {code}", Decimal(market_forces_factor)))
        return self

    def specialised(self, service_code: str, commissioner: str = "X24") -> World:
        self.specialised_services.append(SpecialisedServiceRow(service_code, service_code, commissioner))
        return self

    def originating(
        self, nhs_number: str, care_basis: str, commissioner: str, start: date, end: date | None = None
    ) -> World:
        self.originating_commissioners.append(
            OriginatingCommissionerRow(nhs_number, care_basis, commissioner, start, end)
        )
        return self

    def devolved(self, district: str, nation: str = "W") -> World:
        self.devolved_districts.append(DevolvedDistrictRow(district, nation))
        return self

    def contracts_loaded(self) -> World:
        """A contracts dataset is loaded (with no rows until `contract` adds some)."""
        if self.contracts is None:
            self.contracts = []
        return self

    def contract(self, commissioner: str, provider: str, start: date, end: date | None = None) -> World:
        self.contracts_loaded()
        assert self.contracts is not None
        self.contracts.append(ContractRow(commissioner, provider, start, end))
        return self

    def approval(self, commissioner: str, reference: str, nhs_number: str, start: date, end: date) -> World:
        self.prior_approvals.append(PriorApprovalRow(commissioner, reference, nhs_number, start, end))
        return self

    def reference(self) -> InMemoryReferenceData:
        return InMemoryReferenceData.from_rows(
            gp_practices=self.gp_practices,
            patients=self.patients,
            registrations=self.registrations,
            postcode_districts=self.postcode_districts,
            tariff=self.tariff,
            providers=self.providers,
            specialised_services=self.specialised_services,
            originating_commissioners=self.originating_commissioners,
            devolved_districts=self.devolved_districts,
            contracts=self.contracts,
            prior_approvals=self.prior_approvals,
            tokenise=fake_tokenise,
        )


def reference_from_files(files: dict[str, bytes]) -> InMemoryReferenceData:
    """Reference data as the service loads it: each dataset's file (keyed by its name in
    `PUT /v1/reference/{dataset}`) through its parser, patients tokenised with fake_tokenise. The v2
    datasets are optional: a dataset without its file is not loaded."""
    rows = {dataset: parse_dataset(dataset, body) for dataset, body in files.items()}
    return InMemoryReferenceData.from_rows(
        gp_practices=rows["gp-practices"],
        patients=rows["patients"],
        registrations=rows["registrations"],
        postcode_districts=rows["postcode-districts"],
        tariff=rows["tariff"],
        providers=rows["providers"],
        specialised_services=rows["specialised-services"],
        originating_commissioners=rows.get("originating-commissioners", ()),
        devolved_districts=rows.get("devolved-districts", ()),
        contracts=rows.get("contracts"),
        prior_approvals=rows.get("prior-approvals", ()),
        tokenise=fake_tokenise,
    )


def header(
    *,
    provider_code: str = "RTR",
    commissioner_code: str = "00K",
    period_start: date = date(2019, 7, 1),
    period_end: date = date(2019, 7, 31),
    invoice_number: str = "RTR-201907-0001",
) -> InvoiceHeader:
    return InvoiceHeader(
        invoice_number=invoice_number,
        provider_code=provider_code,
        commissioner_code=commissioner_code,
        invoice_date=period_end,
        period_start=period_start,
        period_end=period_end,
    )


def standard_world() -> World:
    """A small world most tests start from: one provider, a priced HRG, practices, districts."""
    return (
        World()
        .provider("RTR", "1.139")
        .price("HN12A", "EL", "3604.51", 12, "389.00")
        .price("HN12A", "NEL", "4144.79", 3, "385.00")
        .price("HN12A", "DC", "2523.53")
        .price("WF01A", "OPFU", "100.00")
        .practice("A81001", "00K")
        .practice("A81003", "00K", status="C")
        .practice("B82001", "02Y")
        .district("TS18", "00K")
        .district("YO1", "03Q")
        .specialised("NCBPS13B", "X24")
    )


LINE_DEFAULTS: dict[str, str | None] = {
    "line_ref": "00001",
    "nhs_number": None,
    "date_of_birth": None,
    "postcode": None,
    "gp_practice_code": None,
    "service_code": None,
    "point_of_delivery": "DC",
    "hrg_code": "HN12A",
    "activity_date": "2019-07-10",
    "discharge_date": None,
    "amount": "2874.30",  # 2523.53 × 1.139 = 2874.30067 → 2874.30
}


def raw_line(line_no: int = 1, **values: str | None) -> RawLine:
    """A RawLine as read_backing_data makes it: values trimmed, empty → None."""
    merged = {**LINE_DEFAULTS, **values}
    return RawLine(line_no, {k: (v.strip() or None) if v is not None else None for k, v in merged.items()})


def run(
    world_reference: InMemoryReferenceData,
    lines: Sequence[RawLine],
    *,
    invoice: InvoiceHeader | None = None,
    duplicates: InMemoryDuplicateIndex | None = None,
    spells: InMemorySpellIndex | None = None,
) -> list[LineOutcome]:
    """Prepare and validate lines as the service does, tokenising with fake_tokenise. `spells`
    None: the pathway checks (14, 15) do not run, as in the v1 rules."""
    invoice = invoice or header()
    duplicates = duplicates if duplicates is not None else InMemoryDuplicateIndex()
    outcomes = []
    for raw in lines:
        line = prepare_line(raw)
        outcomes.append(
            validate_line(
                line,
                nhs_token=fake_tokenise("nhs_number", line.nhs_number) if line.nhs_number else None,
                dob_token=fake_tokenise("date_of_birth", line.date_of_birth.isoformat())
                if line.date_of_birth
                else None,
                header=invoice,
                reference=world_reference,
                duplicates=duplicates,
                spells=spells,
            )
        )
    return outcomes


def backing_csv(
    rows: Sequence[dict[str, Any]], *, columns: Sequence[str] | None = None, crlf: bool = False
) -> str:
    """Backing data text with a header row (columns default to the first row's keys)."""
    columns = list(columns or rows[0].keys())
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return out.getvalue()
