"""ReferenceData and DuplicateIndex held in plain dicts: for tests, benchmarks and small worlds."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date
from decimal import Decimal

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
)
from cef_api.validation.commissioning import CommissioningLookups
from cef_api.validation.types import (
    DuplicateKey,
    OriginatingCommissioner,
    Registration,
    TariffEntry,
    TracePatient,
)

# tokenise(kind, value) → token, kind as the tokeniser's: "nhs_number", "date_of_birth", "postcode".
Tokenise = Callable[[str, str], str]


class InMemoryReferenceData:
    """ReferenceData over dicts keyed as the protocol asks: upper-cased codes, patients by token."""

    __slots__ = (
        "_tariffs",
        "_market_forces_factors",
        "_patients",
        "_registrations",
        "_practice_commissioners",
        "_district_commissioners",
        "_specialised_commissioners",
        "_commissioning",
    )

    def __init__(
        self,
        *,
        tariffs: dict[tuple[str, str], TariffEntry] | None = None,
        market_forces_factors: dict[str, Decimal] | None = None,
        patients: dict[str, TracePatient] | None = None,
        registrations: dict[str, list[Registration]] | None = None,
        practice_commissioners: dict[str, str] | None = None,
        district_commissioners: dict[str, str] | None = None,
        specialised_commissioners: dict[str, str] | None = None,
        commissioning: CommissioningLookups | None = None,
    ) -> None:
        self._tariffs = tariffs or {}
        self._market_forces_factors = market_forces_factors or {}
        self._patients = patients or {}
        self._registrations = registrations or {}
        self._practice_commissioners = practice_commissioners or {}
        self._district_commissioners = district_commissioners or {}
        self._specialised_commissioners = specialised_commissioners or {}
        self._commissioning = commissioning if commissioning is not None else CommissioningLookups()

    @classmethod
    def from_rows(
        cls,
        *,
        gp_practices: Iterable[GpPracticeRow] = (),
        patients: Iterable[PatientRow] = (),
        registrations: Iterable[RegistrationRow] = (),
        postcode_districts: Iterable[PostcodeDistrictRow] = (),
        tariff: Iterable[TariffRow] = (),
        providers: Iterable[ProviderRow] = (),
        specialised_services: Iterable[SpecialisedServiceRow] = (),
        originating_commissioners: Iterable[OriginatingCommissionerRow] = (),
        devolved_districts: Iterable[DevolvedDistrictRow] = (),
        contracts: Iterable[ContractRow] | None = None,
        prior_approvals: Iterable[PriorApprovalRow] = (),
        tokenise: Tokenise,
    ) -> InMemoryReferenceData:
        """Build from the parsers' rows, tokenising NHS numbers and dates of birth as the service does.

        Practices without a commissioner (blank field 15) are left out: they can name none.
        `contracts` None: no contracts dataset loaded (check 16 does not run); `()`: one with no rows.
        """
        commissioning = CommissioningLookups()
        for row in originating_commissioners:
            commissioning.add_originating(
                nhs_token=tokenise("nhs_number", row.nhs_number),
                care_basis=row.care_basis,
                commissioner_code=row.commissioner_code,
                valid_from=row.valid_from,
                valid_to=row.valid_to,
            )
        for district in devolved_districts:
            commissioning.add_devolved(postcode_district=district.postcode_district, nation=district.nation)
        if contracts is not None:
            commissioning.mark_contracts_loaded()
            for contract in contracts:
                commissioning.add_contract(
                    commissioner_code=contract.commissioner_code,
                    provider_code=contract.provider_code,
                    valid_from=contract.valid_from,
                    valid_to=contract.valid_to,
                )
        for approval in prior_approvals:
            commissioning.add_prior_approval(
                commissioner_code=approval.commissioner_code,
                reference=approval.reference,
                nhs_token=tokenise("nhs_number", approval.nhs_number),
                valid_from=approval.valid_from,
                valid_to=approval.valid_to,
            )
        registrations_by_token: dict[str, list[Registration]] = {}
        for registration in registrations:
            token = tokenise("nhs_number", registration.nhs_number)
            registrations_by_token.setdefault(token, []).append(
                Registration(
                    registration.gp_practice_code, registration.registered_from, registration.registered_to
                )
            )
        return cls(
            tariffs={
                (row.hrg_code, row.point_of_delivery): TariffEntry(
                    row.hrg_code,
                    row.point_of_delivery,
                    row.price,
                    row.trim_point_days,
                    row.excess_bed_day_price,
                )
                for row in tariff
            },
            market_forces_factors={row.provider_code: row.market_forces_factor for row in providers},
            patients={
                tokenise("nhs_number", row.nhs_number): TracePatient(
                    tokenise("date_of_birth", row.date_of_birth.isoformat())
                    if row.date_of_birth is not None
                    else None,
                    row.outward_code,
                )
                for row in patients
            },
            registrations=registrations_by_token,
            practice_commissioners={
                row.gp_practice_code: row.commissioner_code
                for row in gp_practices
                if row.commissioner_code is not None
            },
            district_commissioners={
                row.postcode_district: row.commissioner_code for row in postcode_districts
            },
            specialised_commissioners={
                row.service_code: row.commissioner_code for row in specialised_services
            },
            commissioning=commissioning,
        )

    def tariff(self, hrg_code: str, point_of_delivery: str) -> TariffEntry | None:
        return self._tariffs.get((hrg_code, point_of_delivery))

    def market_forces_factor(self, provider_code: str) -> Decimal | None:
        return self._market_forces_factors.get(provider_code)

    def patient(self, nhs_token: str) -> TracePatient | None:
        return self._patients.get(nhs_token)

    def registrations(self, nhs_token: str) -> list[Registration]:
        return self._registrations.get(nhs_token, [])

    def practice_commissioner(self, gp_practice_code: str) -> str | None:
        return self._practice_commissioners.get(gp_practice_code)

    def district_commissioner(self, outward_code: str) -> str | None:
        return self._district_commissioners.get(outward_code)

    def specialised_commissioner(self, service_code: str) -> str | None:
        return self._specialised_commissioners.get(service_code)

    def originating_commissioners(self, nhs_token: str, care_basis: str) -> list[OriginatingCommissioner]:
        return self._commissioning.originating_commissioners(nhs_token, care_basis)

    def devolved_nation(self, outward_code: str) -> str | None:
        return self._commissioning.devolved_nation(outward_code)

    def contracts_loaded(self) -> bool:
        return self._commissioning.contracts_loaded()

    def contract_covers(self, commissioner_code: str, provider_code: str, on: date) -> bool:
        return self._commissioning.contract_covers(commissioner_code, provider_code, on)

    def prior_approval(self, commissioner_code: str, reference_upper: str, nhs_token: str, on: date) -> bool:
        return self._commissioning.prior_approval(commissioner_code, reference_upper, nhs_token, on)


class InMemoryDuplicateIndex:
    """Set-backed DuplicateIndex: the keys of earlier lines that were not rejected."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[DuplicateKey] = ()) -> None:
        self._keys = set(keys)

    def __contains__(self, key: DuplicateKey) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: DuplicateKey) -> None:
        self._keys.add(key)
