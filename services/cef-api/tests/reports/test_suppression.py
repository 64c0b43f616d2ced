"""Small-number suppression: the rules on single counts, and on random tables that no hidden cell
can be worked out from what is shown (checked by the rank of the table's equations, computed here
independently of the implementation's graph)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cef_api.reports.suppression import HIDDEN, Suppression, is_primary, rounded, suppress

VALID = 0  # the echo column, as the report uses it


@pytest.mark.parametrize(
    ("count", "shown"),
    [(0, 0), (8, 10), (10, 10), (12, 10), (13, 15), (17, 15), (18, 20), (22, 20), (23, 25), (1002, 1000)],
)
def test_counts_round_to_the_nearest_five_halves_up(count: int, shown: int) -> None:
    assert rounded(count) == shown


@pytest.mark.parametrize(("count", "primary"), [(0, False), (1, True), (7, True), (8, False), (40, False)])
def test_one_to_seven_is_hidden_zero_is_not(count: int, primary: bool) -> None:
    assert is_primary(count) is primary


def test_nothing_small_nothing_hidden() -> None:
    table = suppress([[10, 20, 0], [30, 8, 50]], width=3, column_totals=True, echo_column=VALID)
    assert table.hidden == frozenset()
    assert [table.shown((r, c)) for r in range(3) for c in range(4)] == [
        10, 20, 0, 30,
        30, 10, 50, 90,
        40, 30, 50, 120,
    ]  # fmt: skip


def test_a_lone_small_cell_is_protected_by_a_rectangle() -> None:
    # (0, 1) = 3 alone would be its row total minus the others. The cheapest cells that close a
    # cycle through it are (0, 0) = 20, (2, 0) = 40 and (2, 1) = 12 (72 lines; by (1, 0) and (1, 1)
    # it would be 75): each of the two rows and columns then has two unknowns.
    table = suppress([[20, 3, 40], [30, 25, 50], [40, 12, 60]], width=3, column_totals=True)
    assert table.hidden == {(0, 0), (0, 1), (2, 0), (2, 1)}
    # Two tables that read the same once published and differ in the hidden cell.
    a = _full([[20, 3, 40], [30, 25, 50], [40, 12, 60]])
    b = dict(a)
    for cell, delta in zip(sorted(table.hidden), (1, -1, -1, 1), strict=True):
        b[cell] += delta
    assert b == _full([[b[(r, c)] for c in range(3)] for r in range(3)])  # still adds up
    assert all(a[cell] == b[cell] for cell in a if cell not in table.hidden)
    assert a[(0, 1)] != b[(0, 1)]


def test_a_hidden_valid_cell_hides_its_row_total() -> None:
    # The row total's validated amount is the valid cell's amount: shown, it would give it back.
    table = suppress(
        [[3, 40, 40], [30, 25, 50], [12, 40, 60]], width=3, column_totals=True, echo_column=VALID
    )
    assert (0, 0) in table.hidden
    assert (0, 3) in table.hidden
    assert _exposed(table, echo_column=VALID) == set()


def test_rows_without_column_totals_need_two_hidden_per_row() -> None:
    table = suppress([[3, 40, 12], [50, 30, 0]], width=3, column_totals=False)
    assert table.hidden == {(0, 0), (0, 2)}
    assert table.totals_row is None
    assert (2, 0) not in table.counts


def test_a_row_of_small_counts_hides_what_is_not_zero() -> None:
    table = suppress([[2, 0, 1]], width=3, column_totals=True, echo_column=VALID)
    assert {cell for cell, n in table.counts.items() if n} == set(table.hidden)
    assert table.shown((0, 1)) == 0
    assert table.shown((1, 1)) == 0


def test_an_empty_table_has_zero_totals() -> None:
    table = suppress([], width=3, column_totals=True, echo_column=VALID)
    assert [table.shown((0, c)) for c in range(4)] == [0, 0, 0, 0]


def _full(body: list[list[int]]) -> dict[tuple[int, int], int]:
    """A table with its margins, written out here (not by the implementation)."""
    out = {}
    for r, row in enumerate(body):
        for c, value in enumerate(row):
            out[(r, c)] = value
        out[(r, len(row))] = sum(row)
    for c in range(len(body[0]) + 1):
        out[(len(body), c)] = sum(out[(r, c)] for r in range(len(body)))
    return out


# --- the independent check ---------------------------------------------------------------------------


def _rank(matrix: list[list[Fraction]]) -> int:
    """Rank by plain Gaussian elimination over the rationals (row echelon form, partial)."""
    rows = [list(row) for row in matrix if any(row)]
    rank = 0
    columns = len(rows[0]) if rows else 0
    for col in range(columns):
        pivot = next((i for i in range(rank, len(rows)) if rows[i][col] != 0), None)
        if pivot is None:
            continue
        rows[rank], rows[pivot] = rows[pivot], rows[rank]
        for i in range(rank + 1, len(rows)):
            if rows[i][col] != 0:
                factor = rows[i][col] / rows[rank][col]
                rows[i] = [a - factor * b for a, b in zip(rows[i], rows[rank], strict=True)]
        rank += 1
    return rank


def _exposed(table: Suppression, *, echo_column: int | None) -> set[tuple[str, tuple[int, int]]]:
    """Every hidden value that the published table determines, as (measure, cell).

    Two measures are modelled: `claimed` (whose equations are those of the counts) and `validated`,
    which is the claimed amount in the echo column, 0 (known to all) in the other body columns, and
    sums like claimed. Shown values are known; an unknown is determined iff dropping its column
    from the equations restricted to the unknowns lowers their rank."""
    h, w, hidden = table.height, table.width, table.hidden
    grid_rows = range(h + 1) if table.column_totals else range(h)

    def lines() -> list[list[tuple[int, int]]]:
        out = [[(r, c) for c in range(w)] + [(r, w)] for r in grid_rows]
        if table.column_totals:
            out += [[(r, c) for r in range(h)] + [(h, c)] for c in range(w + 1)]
        return out

    unknowns: list[tuple[str, tuple[int, int]]] = [("claimed", cell) for cell in sorted(hidden)]
    if echo_column is not None:
        unknowns += [("validated", cell) for cell in sorted(hidden) if cell[1] in (echo_column, w)]
    index = {u: i for i, u in enumerate(unknowns)}
    equations: list[list[Fraction]] = []

    def add(terms: dict[tuple[str, tuple[int, int]], int]) -> None:
        row = [Fraction(0)] * len(unknowns)
        for var, k in terms.items():
            if var in index:
                row[index[var]] += k
        equations.append(row)

    for line in lines():
        *parts, total = line
        add({**{("claimed", p): 1 for p in parts}, ("claimed", total): -1})
        if echo_column is not None:
            add({**{("validated", p): 1 for p in parts}, ("validated", total): -1})
    if echo_column is not None:
        for r in grid_rows:
            add({("validated", (r, echo_column)): 1, ("claimed", (r, echo_column)): -1})
    full = _rank(equations)
    found = set()
    for var, i in index.items():
        without = [row[:i] + row[i + 1 :] for row in equations]
        if _rank(without) < full:
            found.add(var)
    return found


counts = st.one_of(st.integers(0, 9), st.integers(0, 40), st.sampled_from([0, 1, 7, 8, 12, 13, 100]))


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[list[int]], bool]:
    height = draw(st.integers(0, 5))
    body = [[draw(counts) for _ in range(3)] for _ in range(height)]
    return body, draw(st.booleans())


@settings(max_examples=250, deadline=None)
@given(tables(), st.booleans())
def test_no_hidden_value_can_be_worked_out(
    table_and_margins: tuple[list[list[int]], bool], echo: bool
) -> None:
    body, column_totals = table_and_margins
    echo_column = VALID if echo else None
    table = suppress(body, width=3, column_totals=column_totals, echo_column=echo_column)
    exposed = _exposed(table, echo_column=echo_column)
    # A row total's validated amount may be determined only as a copy of its shown valid cell.
    for measure, (r, c) in exposed:
        assert measure == "validated", ((r, c), table.hidden)
        assert c == table.width, ((r, c), table.hidden)
        assert (r, echo_column) not in table.hidden
    # Hidden are exactly the small counts and cells hidden to protect them; never a 0.
    assert {cell for cell, n in table.counts.items() if is_primary(n)} <= table.hidden
    assert all(table.counts[cell] > 0 for cell in table.hidden)


@settings(max_examples=250, deadline=None)
@given(tables())
def test_shown_counts_are_rounded_true_counts(table_and_margins: tuple[list[list[int]], bool]) -> None:
    body, column_totals = table_and_margins
    table = suppress(body, width=3, column_totals=column_totals, echo_column=VALID)
    h = len(body)
    true = {(r, 3): sum(row) for r, row in enumerate(body)}
    if column_totals:
        true |= {(h, c): sum(row[c] for row in body) for c in range(3)}
        true[(h, 3)] = sum(map(sum, body))
    for cell, value in true.items():
        shown = table.shown(cell)
        assert shown == HIDDEN or shown == (value + 2) // 5 * 5, (cell, value, shown)
    for r, row in enumerate(body):
        for c, value in enumerate(row):
            shown = table.shown((r, c))
            assert shown == HIDDEN or shown == (value + 2) // 5 * 5
    for cell in table.counts:
        shown = table.shown(cell)
        assert shown == HIDDEN or (isinstance(shown, int) and shown % 5 == 0)
        assert (shown == 0) == (table.counts[cell] == 0)
