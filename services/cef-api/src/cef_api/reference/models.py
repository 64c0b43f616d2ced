"""Tables of the reference data. A row is in force from the version of its dataset that added it
until the version that retired it (migration 0011): a reload writes only what changed."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import LargeBinary
from sqlmodel import Field, SQLModel


class ReferenceVersion(SQLModel, table=True):
    """One load of one dataset; the highest version of a dataset is the one in force."""

    __tablename__ = "reference_version"

    id: int | None = Field(default=None, primary_key=True)
    dataset: str = Field(max_length=40)
    version: int
    rows: int
    # The tokeniser key versions (per kind) the dataset's tokens were made under.
    key_version: int | None = None  # nhs_number
    dob_key_version: int | None = None  # date_of_birth
    loaded_at: datetime
    loaded_by: str = Field(max_length=200)
    # A keyed digest of the file it was read from (`fingerprints.file_digest`): the same file sent
    # again is recognised whole. None before migration 0011, or without a fingerprint key.
    file_digest: bytes | None = Field(default=None, sa_type=LargeBinary(32))


class RefRow(SQLModel):
    """What every reference row has: its place among the versions, and the fingerprint of the
    record it was read from (large datasets only; see `reference.fingerprints`)."""

    id: int | None = Field(default=None, primary_key=True)
    version: int  # the version that added the row
    retired_in: int | None = None  # the first version the row is not in force in; None: in force
    fingerprint: bytes | None = Field(default=None, sa_type=LargeBinary(15))


class RefGpPractice(RefRow, table=True):
    __tablename__ = "ref_gp_practice"

    gp_practice_code: str = Field(max_length=12)
    name: str = Field(max_length=200)
    commissioner_code: str | None = Field(default=None, max_length=12)
    status: str = Field(max_length=4)


class RefPatient(RefRow, table=True):
    """A patient of the trace as the CEF holds it: tokens and the postcode district only."""

    __tablename__ = "ref_patient"

    nhs_token: str = Field(max_length=128)
    dob_token: str | None = Field(default=None, max_length=128)
    outward_code: str | None = Field(default=None, max_length=8)


class RefRegistration(RefRow, table=True):
    __tablename__ = "ref_registration"

    nhs_token: str = Field(max_length=128)
    gp_practice_code: str = Field(max_length=12)
    registered_from: date
    registered_to: date | None = None


class RefPostcodeDistrict(RefRow, table=True):
    __tablename__ = "ref_postcode_district"

    postcode_district: str = Field(max_length=8)
    commissioner_code: str = Field(max_length=12)


class RefTariff(RefRow, table=True):
    """Prices are kept as decimal strings so that they round-trip exactly on every database."""

    __tablename__ = "ref_tariff"

    hrg_code: str = Field(max_length=12)
    hrg_name: str = Field(max_length=300)
    point_of_delivery: str = Field(max_length=8)
    price: str = Field(max_length=20)
    trim_point_days: int
    excess_bed_day_price: str = Field(max_length=20)


class RefProvider(RefRow, table=True):
    __tablename__ = "ref_provider"

    provider_code: str = Field(max_length=12)
    name: str = Field(max_length=200)
    market_forces_factor: str = Field(max_length=20)


class RefSpecialisedService(RefRow, table=True):
    __tablename__ = "ref_specialised_service"

    service_code: str = Field(max_length=20)
    name: str = Field(max_length=300)
    commissioner_code: str = Field(max_length=12)


# v2 datasets (migration 0008). Dates are inclusive; a blank `to` (valid_to None) is open.


class RefOriginatingCommissioner(RefRow, table=True):
    """Who placed a patient under s117 aftercare or continuing healthcare; the patient by token only."""

    __tablename__ = "ref_originating_commissioner"

    nhs_token: str = Field(max_length=128)
    care_basis: str = Field(max_length=8)
    commissioner_code: str = Field(max_length=12)
    valid_from: date
    valid_to: date | None = None


class RefDevolvedDistrict(RefRow, table=True):
    __tablename__ = "ref_devolved_district"

    postcode_district: str = Field(max_length=8)
    nation: str = Field(max_length=2)


class RefContract(RefRow, table=True):
    __tablename__ = "ref_contract"

    commissioner_code: str = Field(max_length=12)
    provider_code: str = Field(max_length=12)
    valid_from: date
    valid_to: date | None = None


class RefPriorApproval(RefRow, table=True):
    """An approval for activity without a contract; the patient by token only."""

    __tablename__ = "ref_prior_approval"

    commissioner_code: str = Field(max_length=12)
    reference: str = Field(max_length=40)
    nhs_token: str = Field(max_length=128)
    valid_from: date
    valid_to: date
