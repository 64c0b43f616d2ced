"""v2 header names: cells normalised (trim, lower-case, runs of spaces and hyphens → `_`), columns
found under their aliases, and two cells naming one column refusing the file whole."""

from __future__ import annotations

import csv
import json

import generate_world
import pytest
import sqlalchemy as sa
from api_support import Api
from hypothesis import given
from hypothesis import strategies as st

from cef_api.validation.csvfile import (
    COLUMN_ALIASES,
    KNOWN_COLUMNS,
    REQUIRED_COLUMNS,
    BackingDataError,
    column_named,
    header_key,
    read_backing_data,
    read_backing_values,
    split_backing_batches,
    survey_backing_data,
)
from cef_api.validation.prepared import PREPARED_COLUMNS, prepare_backing_data
from cef_common.testing import SHARED_DIR

REFUSED = SHARED_DIR / "data/sample-v2/refused"

# The spec's alias table, written out again (not derived from the code under test).
SPEC_ALIASES: dict[str, set[str]] = {
    "nhs_number": {"nhs_no"},
    "date_of_birth": {"person_birth_date", "dob"},
    "postcode": {"postcode_of_usual_address", "postcode_usual_address"},
    "gp_practice_code": {
        "general_medical_practice_code",
        "general_medical_practice_code_patient_registration",
    },
    "service_code": {"specialised_service_code"},
    "point_of_delivery": {"pod"},
    "hrg_code": {"hrg", "spell_core_hrg"},
    "activity_date": {"admission_date", "appointment_date"},
    "discharge_date": {"discharge_date_hospital_provider_spell"},
    "amount": {"price", "tariff_total_payment"},
    "administrative_category": {"administrative_category_code"},
    "overseas_visitor_status": {"overseas_visitor_status_classification"},
}
SPEC_COLUMNS = {
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
    "administrative_category",
    "overseas_visitor_status",
    "care_basis",
    "prior_approval_ref",
}
# Every name a column is found under → the column.
NAMES: dict[str, str] = {column: column for column in SPEC_COLUMNS} | {
    alias: column for column, aliases in SPEC_ALIASES.items() for alias in aliases
}
ROW = "00001,943 476 5919,dc,hn12a,2019-07-10,2874.30"


def refusal(text: str) -> BackingDataError:
    with pytest.raises(BackingDataError) as info:
        list(read_backing_data([text.encode()]))
    assert info.value.status == 422
    assert info.value.code == "backing-data-invalid"
    return info.value


def test_the_columns_and_aliases_are_the_specs() -> None:
    assert set(KNOWN_COLUMNS) == SPEC_COLUMNS
    assert {column: set(aliases) for column, aliases in COLUMN_ALIASES.items()} == SPEC_ALIASES
    # Every column the lines are prepared from is one the header can name.
    assert set(PREPARED_COLUMNS) <= SPEC_COLUMNS


@pytest.mark.parametrize(
    ("cell", "column"),
    [
        ("NHS_NUMBER", "nhs_number"),
        ("NHS No", "nhs_number"),
        ("  nhs-no ", "nhs_number"),
        ("Person Birth Date", "date_of_birth"),
        ("DOB", "date_of_birth"),
        ("Postcode of Usual Address", "postcode"),
        ("General Medical Practice Code Patient Registration", "gp_practice_code"),
        ("General Medical Practice Code - Patient Registration", "gp_practice_code"),
        ("Specialised Service Code", "service_code"),
        ("POD", "point_of_delivery"),
        ("Spell Core HRG", "hrg_code"),
        ("HRG", "hrg_code"),
        ("Admission  Date", "activity_date"),
        ("appointment--date", "activity_date"),
        ("Discharge Date Hospital Provider Spell", "discharge_date"),
        ("Price", "amount"),
        ("Tariff - Total - Payment", "amount"),
        ("Administrative Category Code", "administrative_category"),
        ("Overseas Visitor Status Classification", "overseas_visitor_status"),
        ("Care Basis", "care_basis"),
        ("prior approval ref", "prior_approval_ref"),
        ("Line-Ref", "line_ref"),
    ],
)
def test_names_real_extracts_use(cell: str, column: str) -> None:
    assert column_named(cell) == column


@pytest.mark.parametrize(
    "cell",
    [
        # Brackets, tabs and underscores beside a space or hyphen are not normalised.
        "General Medical Practice Code (Patient Registration)",
        "nhs\tnumber",
        "nhs _number",
        "nhs_ number",
        "nhs_-number",
        "nhs__number",
        "nhs.number",
        "nhsnumber",
        "_nhs_number",
        "nhs_number_",
        "NHS Number:",
        "Provider Spell Number",
        "Notes",
        "",
    ],
)
def test_other_spellings_are_unknown_columns(cell: str) -> None:
    assert column_named(cell) is None


def test_header_key_normalises_only_spaces_and_hyphens() -> None:
    assert header_key("  Spell  Core - HRG\t") == "spell_core_hrg"
    assert header_key("a_b") == "a_b"
    assert header_key("a\tb") == "a\tb"
    assert header_key("A (B)") == "a_(b)"


def _variant(draw: st.DrawFn, name: str) -> str:
    """`name` with every underscore a run of spaces and hyphens (or kept), any case, spaces around."""
    words = name.split("_")
    separators = st.one_of(st.just("_"), st.text(alphabet=" -", min_size=1, max_size=4))
    written = words[0]
    for word in words[1:]:
        written += draw(separators) + word
    cased = "".join(c.upper() if draw(st.booleans()) else c for c in written)
    around = st.text(alphabet=" \t", max_size=3)
    return draw(around) + cased + draw(around)


@st.composite
def variant_of(draw: st.DrawFn, name: str) -> str:
    return _variant(draw, name)


@st.composite
def spelt(draw: st.DrawFn) -> tuple[str, str]:
    name = draw(st.sampled_from(sorted(NAMES)))
    return _variant(draw, name), NAMES[name]


@given(spelt())
def test_any_spacing_hyphen_or_case_variant_of_a_name_or_alias_is_found(given_cell: tuple[str, str]) -> None:
    cell, column = given_cell
    assert column_named(cell) == column


@st.composite
def spelt_with_underscore_beside_a_separator(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(n for n in NAMES if "_" in n)))
    words = name.split("_")
    at = draw(st.integers(1, len(words) - 1))
    run = draw(st.text(alphabet=" -", min_size=1, max_size=3))
    bad = draw(st.sampled_from([f"_{run}", f"{run}_", f"{run}_{run}"]))
    return "_".join(words[:at]) + bad + "_".join(words[at:])


@given(spelt_with_underscore_beside_a_separator())
def test_an_underscore_beside_a_space_or_hyphen_is_another_name(cell: str) -> None:
    assert column_named(cell) is None


@given(st.permutations(sorted(REQUIRED_COLUMNS)), st.data())
def test_a_file_under_any_spellings_reads_as_under_the_names(order: list[str], data: st.DataObject) -> None:
    values = {
        "line_ref": "00001",
        "nhs_number": "943 476 5919",
        "point_of_delivery": "dc",
        "hrg_code": "hn12a",
        "activity_date": "2019-07-10",
        "amount": "2874.30",
    }
    names = [
        data.draw(st.sampled_from(sorted(n for n, c in NAMES.items() if c == column))) for column in order
    ]
    cells = [data.draw(variant_of(name)) for name in names]
    text = ",".join(f'"{cell}"' for cell in cells) + "\n" + ",".join(values[c] for c in order) + "\n"
    [line] = list(read_backing_data([text.encode()]))
    assert line.values == values


def test_v2_columns_are_read_under_their_aliases() -> None:
    text = (
        "Line Ref,NHS No,POD,Spell Core HRG,Admission Date,Price,Administrative Category Code,"
        "Overseas Visitor Status Classification,Care-Basis,PRIOR APPROVAL REF,Notes\n"
        "00001,943 476 5919,el,hn12a,2019-07-10,1,02,3, chc ,pa-00k-2019-0042 ,hello\n"
    )
    [line] = list(prepare_backing_data([text.encode()]))
    assert (line.administrative_category, line.overseas_visitor_status, line.care_basis) == ("02", "3", "CHC")
    assert line.prior_approval_ref == "pa-00k-2019-0042"
    assert not line.malformed


@pytest.mark.parametrize(
    ("header", "column", "cells"),
    [
        (
            "line_ref,nhs_number,point_of_delivery,hrg_code,activity_date,amount,Amount",
            "amount",
            ("amount", "Amount"),
        ),
        (
            "line_ref,NHS Number,nhs_no,point_of_delivery,hrg_code,activity_date,amount",
            "nhs_number",
            ("NHS Number", "nhs_no"),
        ),
        (
            "line_ref,nhs_number,point_of_delivery,hrg_code, Admission Date ,APPOINTMENT-DATE,amount",
            "activity_date",
            (" Admission Date ", "APPOINTMENT-DATE"),
        ),
        (
            "line_ref,nhs_number,POD,hrg_code,activity_date,amount,point of delivery",
            "point_of_delivery",
            ("POD", "point of delivery"),
        ),
        (
            "line_ref,nhs_number,point_of_delivery,hrg_code,activity_date,amount,care basis,CARE_BASIS",
            "care_basis",
            ("care basis", "CARE_BASIS"),
        ),
    ],
)
def test_two_cells_naming_one_column_refuse_the_file_naming_both(
    header: str, column: str, cells: tuple[str, str]
) -> None:
    width = header.count(",") + 1
    error = refusal(header + "\n" + ",".join(["1"] * width) + "\n")
    assert error.extra == {"line": 1, "column": column, "cells": list(cells), "problem": "DUPLICATE_COLUMN"}
    assert repr(cells[0]) in error.detail
    assert repr(cells[1]) in error.detail


def test_a_repeated_column_is_found_before_a_repeated_line_ref_and_a_missing_column() -> None:
    text = f"line_ref,nhs_number,point_of_delivery,hrg_code,activity_date,amount,price\n{ROW},1\n{ROW},1\n"
    assert refusal(text).extra["problem"] == "DUPLICATE_COLUMN"
    # A header that repeats one column and lacks another is refused for the repeat.
    assert refusal("line_ref,hrg,hrg_code\n1,2,3\n").extra["column"] == "hrg_code"


def test_a_column_spelt_in_an_unknown_way_is_still_missing() -> None:
    error = refusal("line_ref,nhs\tnumber,point_of_delivery,hrg_code,activity_date,amount\n1,2,3,4,5,6\n")
    assert error.extra["column"] == "nhs_number"
    assert "lacks" in error.detail


def test_every_reader_refuses_a_repeated_column_alike() -> None:
    text = f"line_ref,nhs_number,point_of_delivery,hrg_code,activity_date,amount,Price\n{ROW},1\n".encode()
    accepted = f"line_ref,nhs_number,point_of_delivery,hrg_code,activity_date,amount\n{ROW}\n".encode()
    errors = []
    for read in (
        lambda: list(read_backing_data([text])),
        lambda: list(read_backing_values([text], PREPARED_COLUMNS)),
        lambda: survey_backing_data([text], batch_lines=1),
        lambda: list(prepare_backing_data([text])),
        lambda: split_backing_batches(
            [text], survey_backing_data([accepted], batch_lines=1), PREPARED_COLUMNS
        ),
    ):
        with pytest.raises(BackingDataError) as info:
            read()
        errors.append(info.value.extra)
    assert all(extra == errors[0] for extra in errors)


def _expected_refusals() -> list[dict[str, str]]:
    with (REFUSED / "expected_refusals.csv").open(newline="") as f:
        return list(csv.DictReader(f))


needs_sample = pytest.mark.skipif(
    not REFUSED.is_dir(), reason="the shared sample-v2 world is not on this machine"
)


@needs_sample
def test_every_refused_sample_file_is_listed() -> None:
    listed = {row["invoice_number"] for row in _expected_refusals()}
    assert listed == {path.stem for path in REFUSED.glob("*.csv") if path.stem != "expected_refusals"}
    assert listed == {path.stem for path in REFUSED.glob("*.json")}


@needs_sample
@pytest.mark.parametrize(
    "expected", _expected_refusals() if REFUSED.is_dir() else [], ids=lambda row: row["invoice_number"]
)
def test_refused_sample_files_are_refused_naming_both_cells(expected: dict[str, str]) -> None:
    backing = (REFUSED / f"{expected['invoice_number']}.csv").read_bytes()
    assert (
        json.loads((REFUSED / f"{expected['invoice_number']}.json").read_bytes())["invoice_number"]
        == (expected["invoice_number"])
    )
    with pytest.raises(BackingDataError) as info:
        survey_backing_data([backing], batch_lines=100)
    error = info.value
    assert error.status == int(expected["status"])
    assert error.extra["problem"] == expected["code"]
    assert error.extra["column"] == expected["column"]
    assert error.extra["cells"] == [expected["first_cell"], expected["second_cell"]]
    assert repr(expected["first_cell"]) in error.detail
    assert repr(expected["second_cell"]) in error.detail


@needs_sample
async def test_the_api_refuses_each_sample_file_whole_and_keeps_nothing_of_it(
    sqlite_api: Api, world: generate_world.World
) -> None:
    await sqlite_api.load_world(world)
    invoice = world.invoices[0]
    for expected in _expected_refusals():
        backing = (REFUSED / f"{expected['invoice_number']}.csv").read_bytes()
        # The invoice header is the world's (its provider and commissioner are loaded); the file is refused
        # for its header row whatever the invoice says.
        r = await sqlite_api.submit({**invoice.header, "invoice_number": expected["invoice_number"]}, backing)
        assert r.status_code == int(expected["status"]), r.text
        problem = r.json()
        assert problem["code"] == "backing-data-invalid"
        assert problem["problem"] == expected["code"]
        assert problem["column"] == expected["column"]
        assert problem["cells"] == [expected["first_cell"], expected["second_cell"]]
        for cell in (expected["first_cell"], expected["second_cell"]):
            assert repr(cell) in problem["detail"]
    with sqlite_api.app.state.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM invoice")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM invoice_line")).scalar_one() == 0
    # The refusals left the invoice numbers free and the world's invoices acceptable.
    r = await sqlite_api.submit(invoice.header, invoice.backing)
    assert r.status_code == 201, r.text
    assert r.json()["summary"]["lines"] == len(invoice.expected)
