"""Small-number suppression of a table of counts with margins: which cells a published table
must hide (primary: 1 to 7 lines; secondary: any hidden cell the table's equations would give
back), and how shown counts are rounded. Pure arithmetic: nothing here reads a database.

The grid: body rows 0..height-1 and columns 0..width-1; column `width` holds the row totals and,
when the table has column totals, row `height` holds them (its last cell is the grand total).
A cell's amounts share its count's pattern, and amounts are shown exactly, so a hidden cell is
safe only if no linear combination of the table's equations, with every shown value known,
determines it: its unit vector must not lie in the row space of the equations restricted to the
hidden cells. Zero cells are shown (a 0 is 0) and count as known.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

THRESHOLD: Final = 7  # counts 1..THRESHOLD are hidden
ROUNDING: Final = 5  # other counts are shown rounded to the nearest multiple of this, half up
HIDDEN: Final = "*"

Cell = tuple[int, int]


def rounded(count: int) -> int:
    """A shown count: the nearest multiple of ROUNDING, halves up (12 -> 10, 13 -> 15)."""
    if count < 0:
        raise ValueError("a count is never negative")
    return (count + ROUNDING // 2) // ROUNDING * ROUNDING


def is_primary(count: int) -> bool:
    """A count that is hidden for itself: 1 to THRESHOLD (0 is shown: nobody is in it)."""
    return 1 <= count <= THRESHOLD


@dataclass(frozen=True)
class Suppression:
    """A table's counts (body and margins) and the cells to hide."""

    height: int
    width: int
    column_totals: bool
    counts: dict[Cell, int]
    hidden: frozenset[Cell]

    def shown(self, cell: Cell) -> int | Literal["*"]:
        """The count as published: HIDDEN, or rounded (0 stays 0)."""
        return HIDDEN if cell in self.hidden else rounded(self.counts[cell])

    def row_total(self, row: int) -> Cell:
        return (row, self.width)

    @property
    def totals_row(self) -> int | None:
        return self.height if self.column_totals else None


def suppress(
    body: Sequence[Sequence[int]],
    *,
    width: int,
    column_totals: bool,
    echo_column: int | None = None,
) -> Suppression:
    """The cells to hide of a table of counts (`body[row][column]`), whose margins are computed here.

    `column_totals=False` is for a table whose rows overlap (a line counted in several rows): it has
    row totals only, and no column equations. `echo_column` names a column holding the only non-zero
    values of some measure shown in every cell (validated_amount: non-zero only for valid lines), so
    a row total's value of that measure is the cell of that column in its row: that cell hidden
    forces its row total hidden (else the total's value of the measure would give it back).
    """
    height = len(body)
    if any(len(row) != width for row in body):
        raise ValueError(f"every row of the table has {width} columns")
    if any(count < 0 for row in body for count in row):
        raise ValueError("a count is never negative")
    if echo_column is not None and not 0 <= echo_column < width:
        raise ValueError("echo_column is not a column of the table")
    counts = _with_margins(body, width=width, column_totals=column_totals)
    grid = _Grid(height, width, column_totals, echo_column, counts)
    hidden = {cell for cell, count in counts.items() if is_primary(count)}
    while True:
        grid.close(hidden)
        exposed = grid.recoverable(hidden)
        if not exposed:
            break
        hidden.update(grid.choose(exposed, hidden))
    return Suppression(height, width, column_totals, counts, frozenset(hidden))


def _with_margins(body: Sequence[Sequence[int]], *, width: int, column_totals: bool) -> dict[Cell, int]:
    height = len(body)
    counts: dict[Cell, int] = {}
    for r, row in enumerate(body):
        for c, count in enumerate(row):
            counts[(r, c)] = count
        counts[(r, width)] = sum(row)
    if column_totals:
        for c in range(width + 1):
            counts[(height, c)] = sum(counts[(r, c)] for r in range(height))
    return counts


# A node of the table's equation graph: ("row", r) or ("column", c); an unconstrained column
# (a table without column totals) is the one node GROUND.
_Node = tuple[str, int]
GROUND: Final[_Node] = ("ground", 0)
# What hiding a cell costs: (cells hidden, totals among them, their counts), compared in order.
_Cost = tuple[int, int, int]


@dataclass
class _Grid:
    """The table's equations as a graph, whose nodes are its equations and edges its hidden cells.

    With the totals negated, every equation says that a line of the grid (a row, or a column when
    the table has column totals) sums to zero; the values of the hidden cells consistent with every
    shown value then differ from the true ones by a flow in which every equation's hidden cells sum
    to zero: a cycle of the graph (the grid is bipartite, rows against columns). A hidden cell is
    therefore recoverable exactly when its edge lies on no cycle: when it is a bridge. Without column
    totals, columns impose nothing: they are one unconstrained node, so a row's hidden cells are
    parallel edges and one alone in its row is a bridge. The tests check this against the rank of
    the equations themselves.

    The echo equations (a row total's validated amount equals the echo column's cell) bind nothing
    once `close` has run: a hidden echo cell has its row total hidden, and the total's echo is then
    an unknown of that one equation alone.
    """

    height: int
    width: int
    column_totals: bool
    echo_column: int | None
    counts: dict[Cell, int]

    @property
    def rows(self) -> range:
        return range(self.height + 1 if self.column_totals else self.height)

    def is_margin(self, cell: Cell) -> bool:
        return cell[1] == self.width or (self.column_totals and cell[0] == self.height)

    def close(self, hidden: set[Cell]) -> None:
        """Hidden cells of the echo column hide their row totals: the echo would give them back."""
        if self.echo_column is None:
            return
        for r in self.rows:
            if (r, self.echo_column) in hidden:
                hidden.add((r, self.width))

    def ends(self, cell: Cell) -> tuple[_Node, _Node]:
        return ("row", cell[0]), (("column", cell[1]) if self.column_totals else GROUND)

    def recoverable(self, hidden: set[Cell]) -> set[Cell]:
        """The hidden cells that the equations determine from the shown values (the bridges)."""
        return _bridges({cell: self.ends(cell) for cell in hidden})

    def choose(self, exposed: set[Cell], hidden: set[Cell]) -> list[Cell]:
        """Cells to hide so that the first recoverable cell no longer is: the cheapest chain of
        shown non-zero cells that, with hidden ones, joins the two ends of its edge, closing a cycle
        through it. Cheapest is fewest cells (counting a row total that an echo cell brings), then
        fewest totals, then the smallest counts: a single cell when one will do, the smallest
        non-zero count of its row or column first."""
        target = min(exposed)
        start, goal = self.ends(target)
        adjacent: dict[_Node, list[tuple[_Node, Cell]]] = {}
        for cell, count in self.counts.items():
            if count > 0 and cell != target:
                a, b = self.ends(cell)
                adjacent.setdefault(a, []).append((b, cell))
                adjacent.setdefault(b, []).append((a, cell))
        best: dict[_Node, _Cost] = {start: (0, 0, 0)}
        came_by: dict[_Node, tuple[_Node, Cell]] = {}
        queue: list[tuple[_Cost, int, _Node]] = [((0, 0, 0), 0, start)]
        pushed = 0
        while queue:
            cost, _, node = heapq.heappop(queue)
            if node == goal:
                break
            if cost > best[node]:
                continue
            for other, cell in adjacent.get(node, ()):
                step = self._cost(cell, hidden)
                total = (cost[0] + step[0], cost[1] + step[1], cost[2] + step[2])
                if other not in best or total < best[other]:
                    best[other] = total
                    came_by[other] = (node, cell)
                    pushed += 1
                    heapq.heappush(queue, (total, pushed, other))
        if goal not in came_by:
            # Unreachable: a non-zero cell's row and column totals and the grand total (or another
            # cell of its row, without column totals) always offer a way round.
            raise RuntimeError("no cells can protect a recoverable cell")
        path: list[Cell] = []
        node = goal
        while node != start:
            node, cell = came_by[node]
            if cell not in hidden:
                path.append(cell)
        return path

    def _cost(self, cell: Cell, hidden: set[Cell]) -> _Cost:
        if cell in hidden:
            return (0, 0, 0)
        brings_total = cell[1] == self.echo_column and (cell[0], self.width) not in hidden
        return (1 + brings_total, int(self.is_margin(cell)), self.counts[cell])


def _bridges(edges: dict[Cell, tuple[_Node, _Node]]) -> set[Cell]:
    """The edges on no cycle of a multigraph (Tarjan's low-link, iteratively; parallel edges make
    a cycle, so the edge walked in on is skipped by its name, not by its far end)."""
    adjacent: dict[_Node, list[tuple[_Node, Cell]]] = {}
    for cell, (a, b) in edges.items():
        adjacent.setdefault(a, []).append((b, cell))
        adjacent.setdefault(b, []).append((a, cell))
    order: dict[_Node, int] = {}
    low: dict[_Node, int] = {}
    found: set[Cell] = set()
    for start in adjacent:
        if start in order:
            continue
        order[start] = low[start] = len(order)
        stack: list[tuple[_Node, Cell | None, int]] = [(start, None, 0)]
        while stack:
            node, via, index = stack[-1]
            if index < len(adjacent[node]):
                stack[-1] = (node, via, index + 1)
                other, cell = adjacent[node][index]
                if cell == via:
                    continue
                if other in order:
                    low[node] = min(low[node], order[other])
                else:
                    order[other] = low[other] = len(order)
                    stack.append((other, cell, 0))
                continue
            stack.pop()
            if stack and via is not None:
                parent = stack[-1][0]
                low[parent] = min(low[parent], low[node])
                if low[node] > order[parent]:
                    found.add(via)
    return found
