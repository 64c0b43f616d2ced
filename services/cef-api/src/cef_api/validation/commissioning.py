"""The v2 reference datasets held for validation: originating commissioners, devolved districts,
contracts and prior approvals, indexed for the lookups `ReferenceData` offers (checks 12, 13, 16).

They are small, so each implementation of `ReferenceData` holds them whole (a validation job reads
them once), whatever it does with the patient trace."""

from __future__ import annotations

from datetime import date

from cef_api.validation.types import OriginatingCommissioner


class CommissioningLookups:
    """The four datasets, keyed as the lookups ask: codes upper-cased, patients by NHS-number token.

    `contracts` stays None until a contracts dataset is loaded (even one with no rows)."""

    __slots__ = ("_originating", "_devolved", "_contracts", "_approvals")

    def __init__(self) -> None:
        self._originating: dict[tuple[str, str], list[OriginatingCommissioner]] = {}
        self._devolved: dict[str, str] = {}
        self._contracts: dict[tuple[str, str], list[tuple[date, date | None]]] | None = None
        self._approvals: dict[tuple[str, str, str], list[tuple[date, date]]] = {}

    # -- building ----------------------------------------------------------------------------------

    def add_originating(
        self,
        *,
        nhs_token: str,
        care_basis: str,
        commissioner_code: str,
        valid_from: date,
        valid_to: date | None,
    ) -> None:
        self._originating.setdefault((nhs_token, care_basis.upper()), []).append(
            OriginatingCommissioner(commissioner_code.upper(), valid_from, valid_to)
        )

    def add_devolved(self, *, postcode_district: str, nation: str) -> None:
        self._devolved[postcode_district.upper()] = nation.upper()

    def mark_contracts_loaded(self) -> None:
        """A contracts dataset is loaded, rows or none: from now on every activity without a row
        covering it is non-contract."""
        if self._contracts is None:
            self._contracts = {}

    def add_contract(
        self, *, commissioner_code: str, provider_code: str, valid_from: date, valid_to: date | None
    ) -> None:
        if self._contracts is None:
            self._contracts = {}
        self._contracts.setdefault((commissioner_code.upper(), provider_code.upper()), []).append(
            (valid_from, valid_to)
        )

    def add_prior_approval(
        self, *, commissioner_code: str, reference: str, nhs_token: str, valid_from: date, valid_to: date
    ) -> None:
        key = (commissioner_code.upper(), reference.upper(), nhs_token)
        self._approvals.setdefault(key, []).append((valid_from, valid_to))

    # -- the lookups of ReferenceData ----------------------------------------------------------------

    def originating_commissioners(self, nhs_token: str, care_basis: str) -> list[OriginatingCommissioner]:
        return self._originating.get((nhs_token, care_basis), [])

    def devolved_nation(self, outward_code: str) -> str | None:
        return self._devolved.get(outward_code)

    def contracts_loaded(self) -> bool:
        return self._contracts is not None

    def contract_covers(self, commissioner_code: str, provider_code: str, on: date) -> bool:
        if self._contracts is None:
            return False
        for valid_from, valid_to in self._contracts.get((commissioner_code, provider_code), ()):
            if valid_from <= on and (valid_to is None or on <= valid_to):
                return True
        return False

    def prior_approval(self, commissioner_code: str, reference_upper: str, nhs_token: str, on: date) -> bool:
        windows = self._approvals.get((commissioner_code, reference_upper, nhs_token), ())
        return any(valid_from <= on <= valid_to for valid_from, valid_to in windows)
