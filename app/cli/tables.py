"""Tables that fit the console (80 columns in a pipe, unless COLUMNS says otherwise).

The identifying columns (ids, names, statuses, models) are always whole: never cut with
`…` nor folded. The others are shown only when there is room for them, in the order of
their rank; a free-text column (a URL, an error) folds over lines rather than being cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from rich.cells import cell_len
from rich.text import Text

if TYPE_CHECKING:
    from rich.console import JustifyMethod
    from rich.table import Table

Cell = str | Text


@dataclass(frozen=True)
class Col:
    """A column. `rank` 0: identifying, always shown whole. Above 0: shown when there is
    room, lower ranks first. `rest`: free text that takes the room left, folded over lines
    ("fold") or cut with `…` ("ellipsis": a summary, such as a model's price in a list);
    it is shown when at least `min_width` cells are left for it. `whole`: an
    identifying column that stays whole even when the identifying columns alone are wider
    than the console (then the others fold)."""

    header: str
    rank: int = 0
    whole: bool = False
    rest: Literal["fold", "ellipsis"] | None = None
    min_width: int = 12
    justify: JustifyMethod = "left"


def width_of(cell: Cell) -> int:
    """The cells the widest line of `cell` takes."""
    text = cell.plain if isinstance(cell, Text) else cell
    return max((cell_len(line) for line in text.splitlines()), default=0)


def stamp(value: str | None) -> str:
    """An API time (`2026-11-30T12:00:00.123Z`) to the second, `2026-11-30T12:00:00Z`:
    shorter in a table, still RFC 3339 in UTC."""
    return value[:19] + "Z" if value else ""


def fit(
    columns: Sequence[Col],
    rows: Sequence[Sequence[Cell]],
    *,
    width: int,
    gap: int = 2,
    show_header: bool = True,
) -> Table:
    """A borderless table of `rows` at most `width` cells wide: every rank-0 column, then
    the others by rank while they fit (a column left out is left out of every row)."""
    from rich.table import Table

    natural = [
        max([cell_len(col.header) if show_header else 0, *(width_of(row[i]) for row in rows)])
        for i, col in enumerate(columns)
    ]
    # What a column needs: a folding one, its minimum (it takes whatever is left).
    need = [
        min(natural[i], col.min_width) if col.rest else natural[i] for i, col in enumerate(columns)
    ]
    shown = [i for i, col in enumerate(columns) if col.rank == 0]
    used = sum(need[i] for i in shown) + gap * max(0, len(shown) - 1)
    # Identifying columns alone wider than the console (a 64-character name at 80 columns):
    # they fold, widest first, rather than lose characters to `…`.
    squeezed = used > width
    for i in sorted(set(range(len(columns))) - set(shown), key=lambda i: (columns[i].rank, i)):
        if used + gap + need[i] <= width:
            shown.append(i)
            used += gap + need[i]
    kept = sorted(shown)
    # The columns that take the rest share the room the others leave.
    resting = [i for i in kept if columns[i].rest]
    room = width - sum(natural[i] for i in kept if not columns[i].rest) - gap * (len(kept) - 1)
    table = Table(
        box=None, padding=(0, gap, 0, 0), pad_edge=False, show_header=show_header, expand=False
    )
    for i in kept:
        col = columns[i]
        if col.rest:
            share = max(need[i], room // len(resting))
            table.add_column(
                col.header,
                width=max(1, min(natural[i], share)),
                overflow=col.rest,
                no_wrap=col.rest == "ellipsis",
                justify=col.justify,
            )
        elif col.rank == 0 and squeezed and not col.whole:
            table.add_column(col.header, overflow="fold", justify=col.justify)
        else:
            table.add_column(
                col.header,
                no_wrap=True,
                width=natural[i] or 1,
                justify=col.justify,
            )
    for row in rows:
        table.add_row(*(row[i] for i in kept))
    return table
