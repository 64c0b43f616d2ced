"""Loading reference datasets (checked whole, tokenised in bulk, replaced atomically as a new
version) and reading them back for validation."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from cef_api.invoices.models import Invoice, InvoiceStatus
from cef_api.locks import transaction_lock
from cef_api.reference import repository
from cef_api.reference.models import ReferenceVersion
from cef_api.reference.parsers import DATASETS, parse_dataset
from cef_api.tokeniser_client import TokeniserClient
from cef_api.validation.commissioning import CommissioningLookups
from cef_api.validation.types import OriginatingCommissioner, Registration, TariffEntry, TracePatient
from cef_common.audit import build_event, record_event
from cef_common.auth import Principal
from cef_common.errors import Conflict, NotFound, Unprocessable

log = structlog.get_logger(__name__)

SOURCE = "cef-api"
# Read per batch of lines (or whole, when small enough): the trace and the registrations.
PATIENT_DATASETS = ("patients", "registrations")
# Every dataset holding NHS-number tokens: all are joined with the lines' tokens, so all are made
# under one key version.
TOKENISED_DATASETS = (*PATIENT_DATASETS, "originating-commissioners", "prior-approvals")
MAX_TOKEN_ERRORS = 20


@dataclass(frozen=True, slots=True)
class LoadResult:
    dataset: str
    rows: int
    version: int
    key_version: int | None
    dob_key_version: int | None = None


def _require_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise NotFound(
            # Not quoted: the name is the caller's text (a path segment).
            f"there is no reference dataset of that name; use one of: {', '.join(DATASETS)}",
            code="unknown-dataset",
        )


def _patient_key_version(versions: dict[str, ReferenceVersion], dataset: str) -> int | None:
    """The datasets of NHS-number tokens are joined on them, so all must be made under one key: the
    key of the others in force (patients first, then registrations, ...), or None for the current."""
    for other in TOKENISED_DATASETS:
        current = versions.get(other)
        if other != dataset and current is not None and current.key_version is not None:
            return current.key_version
    return None


def _token_errors(dataset: str, what: str, rows_index: list[int]) -> Unprocessable:
    errors = [
        {"line": i + 2, "column": what, "message": f"the tokeniser refused this {what}"} for i in rows_index
    ]
    return Unprocessable(
        f"{dataset}: {len(rows_index)} value(s) of {what} are not valid; "
        "correct the lines listed and load again",
        code="reference-file-invalid",
        extra={"dataset": dataset, "errors": errors[:MAX_TOKEN_ERRORS]},
    )


def _tokenise_column(
    tokeniser: TokeniserClient,
    dataset: str,
    kind: str,
    column: str,
    values: list[str | None],
    key_version: int | None,
) -> tuple[list[str | None], int]:
    """Tokens for a column (None where the value is missing), one call per batch of unique values."""
    unique = sorted({v for v in values if v is not None})
    batch = tokeniser.tokenise(kind, unique, key_version=key_version)  # type: ignore[arg-type]
    by_value = dict(zip(unique, batch.tokens, strict=True))
    bad = [i for i, v in enumerate(values) if v is not None and by_value[v] is None]
    if bad:
        raise _token_errors(dataset, column, bad)
    return [by_value[v] if v is not None else None for v in values], batch.key_version


def _rows_for_storage(
    dataset: str, parsed: list[Any], version: int, tokeniser: TokeniserClient, key_version: int | None
) -> tuple[list[dict[str, Any]], int | None, int | None]:
    """Table rows of a dataset; NHS numbers and dates of birth leave as tokens, postcodes as districts."""
    if dataset == "patients":
        nhs, kv = _tokenise_column(
            tokeniser, dataset, "nhs_number", "nhs_number", [r.nhs_number for r in parsed], key_version
        )
        dobs, dob_kv = _tokenise_column(
            tokeniser,
            dataset,
            "date_of_birth",
            "date_of_birth",
            [r.date_of_birth.isoformat() if r.date_of_birth else None for r in parsed],
            None,
        )
        seen: dict[str | None, int] = {}
        for i, token in enumerate(nhs):
            if token in seen:
                raise Unprocessable(
                    f"patients: lines {seen[token] + 2} and {i + 2} are the same patient; "
                    "a trace holds each NHS number once",
                    code="reference-file-invalid",
                    extra={
                        "dataset": dataset,
                        "errors": [
                            {
                                "line": i + 2,
                                "column": "nhs_number",
                                "message": f"repeats line {seen[token] + 2}",
                            }
                        ],
                    },
                )
            seen[token] = i
        return (
            [
                {"version": version, "nhs_token": n, "dob_token": d, "outward_code": r.outward_code}
                for r, n, d in zip(parsed, nhs, dobs, strict=True)
            ],
            kv,
            dob_kv,
        )
    if dataset in _KEYED_BY_NHS_NUMBER:
        nhs, kv = _tokenise_column(
            tokeniser, dataset, "nhs_number", "nhs_number", [r.nhs_number for r in parsed], key_version
        )
        rows = [{**_stored(r), "version": version, "nhs_token": n} for r, n in zip(parsed, nhs, strict=True)]
        return rows, kv, None
    return [{**_stored(r), "version": version} for r in parsed], None, None


# Datasets whose rows are a patient's (registrations, originating commissioners, prior approvals):
# the NHS number is stored as its token, every other field as it was parsed.
_KEYED_BY_NHS_NUMBER = frozenset({"registrations", "originating-commissioners", "prior-approvals"})


def _stored(row: Any) -> dict[str, Any]:
    """A parsed row's fields as its table's columns (they share their names), but the NHS number,
    which is stored only as a token; amounts as their exact decimal text."""
    stored: dict[str, Any] = {}
    for f in fields(row):
        if f.name != "nhs_number":
            value = getattr(row, f.name)
            stored[f.name] = str(value) if isinstance(value, Decimal) else value
    return stored


def versions_in_use(session: Session) -> dict[str, set[int]]:
    """Versions recorded by invoices still being validated (their rows must stay readable)."""
    columns = Invoice.__table__.c  # type: ignore[attr-defined]
    stmt = sa.select(columns.reference_versions).where(columns.status.in_(InvoiceStatus.OPEN))
    used: dict[str, set[int]] = defaultdict(set)
    for (raw,) in session.execute(stmt):
        for dataset, version in json.loads(raw or "{}").items():
            used[dataset].add(int(version))
    return used


def prune_superseded(session: Session) -> int:
    """Deletes superseded versions that no open invoice still reads."""
    current = repository.current_versions(session)
    used = versions_in_use(session)
    deleted = 0
    for dataset, version in current.items():
        deleted += repository.delete_versions(session, dataset, {version.version, *used.get(dataset, set())})
    return deleted


def load_dataset(
    session: Session,
    *,
    dataset: str,
    data: bytes,
    tokeniser: TokeniserClient,
    principal: Principal | None,
    actor: str,
) -> LoadResult:
    """Checks every row, tokenises, and replaces the dataset as a new version in the caller's transaction.

    A bad file raises before anything is written; the caller's transaction makes the swap atomic."""
    _require_dataset(dataset)
    parsed = parse_dataset(dataset, data)
    versions = repository.current_versions(session)
    key_version = _patient_key_version(versions, dataset) if dataset in TOKENISED_DATASETS else None
    rows, made_under, dob_made_under = _rows_for_storage(dataset, parsed, 0, tokeniser, key_version)
    transaction_lock(session, f"reference:{dataset}")
    version = repository.next_version(session, dataset)
    for row in rows:
        row["version"] = version
    try:
        session.add(
            ReferenceVersion(
                dataset=dataset,
                version=version,
                rows=len(rows),
                key_version=made_under,
                dob_key_version=dob_made_under,
                loaded_at=datetime.now(UTC),
                loaded_by=actor[:200],
            )
        )
        session.flush()
    except IntegrityError:
        raise Conflict(
            f"another load of {dataset} finished first; send this one again to replace it",
            code="reference-load-conflict",
        ) from None
    repository.insert_rows(session, dataset, rows)
    pruned = prune_superseded(session)
    record_event(
        session,
        build_event(
            source=SOURCE,
            action="update",
            type="reference.load",
            outcome="success",
            principal=principal,
            entity_type="reference-dataset",
            entity_id=dataset,
            count=len(rows),
            detail={
                "version": version,
                "key_version": made_under,
                "dob_key_version": dob_made_under,
                "superseded_rows_removed": pruned,
            },
        ),
    )
    log.info("reference_loaded", dataset=dataset, rows=len(rows), version=version)
    return LoadResult(
        dataset=dataset,
        rows=len(rows),
        version=version,
        key_version=made_under,
        dob_key_version=dob_made_under,
    )


def record_refused_load(session: Session, *, dataset: str, principal: Principal | None, code: str) -> None:
    record_event(
        session,
        build_event(
            source=SOURCE,
            action="update",
            type="reference.load",
            outcome="failure",
            principal=principal,
            entity_type="reference-dataset",
            entity_id=dataset,
            detail={"code": code},
        ),
    )


# --- reading back for validation ------------------------------------------------------------------


@dataclass
class ReferenceSnapshot:
    """The small datasets of one set of versions, in memory for a whole validation job."""

    versions: dict[str, int]
    key_version: int | None  # of NHS-number tokens
    dob_key_version: int | None
    tariffs: dict[tuple[str, str], TariffEntry] = field(default_factory=dict)
    mffs: dict[str, Decimal] = field(default_factory=dict)
    practices: dict[str, str] = field(default_factory=dict)
    districts: dict[str, str] = field(default_factory=dict)
    specialised: dict[str, str] = field(default_factory=dict)
    # The v2 datasets, whole (small): originating commissioners, devolved districts, contracts,
    # prior approvals.
    commissioning: CommissioningLookups = field(default_factory=CommissioningLookups)
    # The whole trace and registrations, when small enough to hold (see `memory_rows`).
    everyone: BatchReference | None = None

    @classmethod
    def load(
        cls, session: Session, versions: dict[str, ReferenceVersion], *, memory_rows: int = 0
    ) -> ReferenceSnapshot:
        patient_versions = [versions[d].key_version for d in TOKENISED_DATASETS if d in versions]
        patients = versions.get("patients")
        snap = cls(
            versions={d: v.version for d, v in versions.items()},
            key_version=next((k for k in patient_versions if k is not None), None),
            dob_key_version=patients.dob_key_version if patients is not None else None,
        )
        if v := versions.get("tariff"):
            for r in repository.all_rows(
                session,
                "tariff",
                v.version,
                ["hrg_code", "point_of_delivery", "price", "trim_point_days", "excess_bed_day_price"],
            ):
                entry = TariffEntry(
                    hrg_code=r.hrg_code.upper(),
                    point_of_delivery=r.point_of_delivery.upper(),
                    price=Decimal(r.price),
                    trim_point_days=int(r.trim_point_days),
                    excess_bed_day_price=Decimal(r.excess_bed_day_price),
                )
                snap.tariffs[(entry.hrg_code, entry.point_of_delivery)] = entry
        if v := versions.get("providers"):
            for r in repository.all_rows(
                session, "providers", v.version, ["provider_code", "market_forces_factor"]
            ):
                snap.mffs[r.provider_code.upper()] = Decimal(r.market_forces_factor)
        if v := versions.get("gp-practices"):
            for r in repository.all_rows(
                session, "gp-practices", v.version, ["gp_practice_code", "commissioner_code"]
            ):
                if r.commissioner_code:
                    snap.practices[r.gp_practice_code.upper()] = r.commissioner_code
        if v := versions.get("postcode-districts"):
            for r in repository.all_rows(
                session, "postcode-districts", v.version, ["postcode_district", "commissioner_code"]
            ):
                snap.districts[r.postcode_district.upper()] = r.commissioner_code
        if v := versions.get("specialised-services"):
            for r in repository.all_rows(
                session, "specialised-services", v.version, ["service_code", "commissioner_code"]
            ):
                snap.specialised[r.service_code.upper()] = r.commissioner_code
        snap._load_commissioning(session, versions)
        patient_rows = sum(versions[d].rows for d in PATIENT_DATASETS if d in versions)
        if patient_rows <= memory_rows:
            snap.everyone = snap._patients(session, None)
        return snap

    def _load_commissioning(self, session: Session, versions: dict[str, ReferenceVersion]) -> None:
        """The v2 datasets, each read whole once (they are small beside the trace)."""
        lookups = self.commissioning
        if v := versions.get("originating-commissioners"):
            columns = ["nhs_token", "care_basis", "commissioner_code", "valid_from", "valid_to"]
            for r in repository.all_rows(session, "originating-commissioners", v.version, columns):
                lookups.add_originating(
                    nhs_token=r.nhs_token,
                    care_basis=r.care_basis,
                    commissioner_code=r.commissioner_code,
                    valid_from=r.valid_from,
                    valid_to=r.valid_to,
                )
        if v := versions.get("devolved-districts"):
            for r in repository.all_rows(
                session, "devolved-districts", v.version, ["postcode_district", "nation"]
            ):
                lookups.add_devolved(postcode_district=r.postcode_district, nation=r.nation)
        if v := versions.get("contracts"):
            # Loaded, even with no rows: activity no row covers is non-contract (check 16).
            lookups.mark_contracts_loaded()
            columns = ["commissioner_code", "provider_code", "valid_from", "valid_to"]
            for r in repository.all_rows(session, "contracts", v.version, columns):
                lookups.add_contract(
                    commissioner_code=r.commissioner_code,
                    provider_code=r.provider_code,
                    valid_from=r.valid_from,
                    valid_to=r.valid_to,
                )
        if v := versions.get("prior-approvals"):
            columns = ["commissioner_code", "reference", "nhs_token", "valid_from", "valid_to"]
            for r in repository.all_rows(session, "prior-approvals", v.version, columns):
                lookups.add_prior_approval(
                    commissioner_code=r.commissioner_code,
                    reference=r.reference,
                    nhs_token=r.nhs_token,
                    valid_from=r.valid_from,
                    valid_to=r.valid_to,
                )

    def for_patients(self, session: Session, nhs_tokens: list[str]) -> BatchReference:
        """The snapshot plus the trace and registrations of one batch's patients."""
        if self.everyone is not None:
            return self.everyone
        return self._patients(session, nhs_tokens)

    def _patients(self, session: Session, nhs_tokens: list[str] | None) -> BatchReference:
        patients: dict[str, TracePatient] = {}
        registrations: dict[str, list[Registration]] = defaultdict(list)
        # Districts, practice codes and dates repeat across the trace: one object each, not one per
        # row (a trace of a million patients is held whole when it fits in memory_rows).
        shared: dict[Any, Any] = {}
        one = shared.setdefault
        if (v := self.versions.get("patients")) is not None:
            columns = ["nhs_token", "dob_token", "outward_code"]
            found = (
                repository.rows_for_tokens(session, "patients", v, nhs_tokens, columns)
                if nhs_tokens is not None
                else repository.all_rows(session, "patients", v, columns)
            )
            for r in found:
                patients[r.nhs_token] = TracePatient(
                    dob_token=r.dob_token, outward_code=one(r.outward_code, r.outward_code)
                )
        if (v := self.versions.get("registrations")) is not None:
            columns = ["nhs_token", "gp_practice_code", "registered_from", "registered_to"]
            rows = (
                repository.rows_for_tokens(session, "registrations", v, nhs_tokens, columns)
                if nhs_tokens is not None
                else repository.all_rows(session, "registrations", v, columns)
            )
            for r in rows:
                code = r.gp_practice_code.upper()
                registrations[r.nhs_token].append(
                    Registration(
                        gp_practice_code=one(code, code),
                        registered_from=one(r.registered_from, r.registered_from),
                        registered_to=one(r.registered_to, r.registered_to),
                    )
                )
        return BatchReference(self, patients, dict(registrations))


@dataclass
class BatchReference:
    """`ReferenceData` for one batch of lines."""

    snapshot: ReferenceSnapshot
    patients: dict[str, TracePatient]
    regs: dict[str, list[Registration]]

    def tariff(self, hrg_code: str, point_of_delivery: str) -> TariffEntry | None:
        return self.snapshot.tariffs.get((hrg_code, point_of_delivery))

    def market_forces_factor(self, provider_code: str) -> Decimal | None:
        return self.snapshot.mffs.get(provider_code)

    def patient(self, nhs_token: str) -> TracePatient | None:
        return self.patients.get(nhs_token)

    def registrations(self, nhs_token: str) -> list[Registration]:
        return self.regs.get(nhs_token, [])

    def practice_commissioner(self, gp_practice_code: str) -> str | None:
        return self.snapshot.practices.get(gp_practice_code)

    def district_commissioner(self, outward_code: str) -> str | None:
        return self.snapshot.districts.get(outward_code)

    def specialised_commissioner(self, service_code: str) -> str | None:
        return self.snapshot.specialised.get(service_code)

    def originating_commissioners(self, nhs_token: str, care_basis: str) -> list[OriginatingCommissioner]:
        return self.snapshot.commissioning.originating_commissioners(nhs_token, care_basis)

    def devolved_nation(self, outward_code: str) -> str | None:
        return self.snapshot.commissioning.devolved_nation(outward_code)

    def contracts_loaded(self) -> bool:
        return self.snapshot.commissioning.contracts_loaded()

    def contract_covers(self, commissioner_code: str, provider_code: str, on: date) -> bool:
        return self.snapshot.commissioning.contract_covers(commissioner_code, provider_code, on)

    def prior_approval(self, commissioner_code: str, reference_upper: str, nhs_token: str, on: date) -> bool:
        return self.snapshot.commissioning.prior_approval(commissioner_code, reference_upper, nhs_token, on)
