"""Terminal tables that stay whole at any width, with numbers written as the field writes them.

Every table the CLI prints goes through :func:`render_tables`. A cell is never cut: when the
columns do not fit the terminal, they are split over several tables, each repeating the row's
names (the leading text columns, such as task and drafter), with headers broken at their
underscores.
Within a column, numbers share one format: whole numbers (counts, ESS, tokens) without
decimals, other floats with three, temperatures and draft lengths as written (``0``, ``0.7``),
true and false as yes and no, a missing value as ``-``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.table import Table

__all__ = ["format_column", "render_tables"]

#: Columns whose values are settings, written as given (``0.7``, not ``0.700``).
_AS_WRITTEN = ("temperature", "gamma", "level", "concurrency", "batch_size", "draft_index")
#: At most this many leading text columns (task, drafter) are repeated in every part.
_NAME_COLUMNS = 2
#: Border and padding a column adds to its widest cell in rich's default box.
_COLUMN_EXTRA = 3


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_column(name: str, values: Sequence[Any]) -> list[str]:
    """The cells of one column, in one format (see the module docstring)."""
    numbers = [float(v) for v in values if _is_number(v) and math.isfinite(float(v))]
    whole = bool(numbers) and all(n == round(n) and abs(n) < 1e15 for n in numbers)
    as_written = name in _AS_WRITTEN or name.endswith(("_gamma", "_temperature"))
    cells = []
    for value in values:
        if isinstance(value, bool):
            cells.append("yes" if value else "no")
        elif value is None or (_is_number(value) and not math.isfinite(float(value))):
            cells.append("-")
        elif _is_number(value):
            if as_written:
                cells.append(f"{float(value):g}")
            elif whole:
                cells.append(f"{int(round(float(value)))}")
            else:
                cells.append(f"{float(value):.3f}")
        else:
            cells.append(str(value))
    return cells


def render_tables(title: str, rows: list[dict[str, Any]], width: int, columns: list[str] | None = None
                  ) -> list[Table]:
    """Rich tables of ``rows`` that fit ``width`` characters, the columns split over several if needed.

    Examples
    --------
    >>> rows = [{"drafter": "finetuned-docsum", **{f"measure_{i}": 0.5 + i for i in range(12)}}]
    >>> tables = render_tables("wide", rows, width=80)
    >>> len(tables) > 1 and all(t.columns[0].header == "drafter" for t in tables)
    True
    """
    columns = columns or list(rows[0])
    cells = {column: format_column(column, [row[column] for row in rows]) for column in columns}
    text = {column: all(isinstance(row[column], str) for row in rows) for column in columns}
    names = []
    for column in columns[:_NAME_COLUMNS]:  # the leading text columns name the row: repeated in every part
        if not text[column]:
            break
        names.append(column)
    rest = [c for c in columns if c not in names]

    def widest(column: str) -> int:
        return max(len(cell) for cell in cells[column])

    def header_lines(column: str, folded: bool) -> list[str]:
        return column.replace("_", "_ ").split(" ") if folded else [column]

    def need(column: str, folded: bool) -> int:
        return max(widest(column), *(len(line) for line in header_lines(column, folded))) + _COLUMN_EXTRA

    def pack(folded: bool) -> list[list[str]]:
        budget = width - 1 - sum(need(c, folded) for c in names)
        parts: list[list[str]] = []
        for column in rest:
            if parts and sum(need(c, folded) for c in parts[-1]) + need(column, folded) <= budget:
                parts[-1].append(column)
            else:
                parts.append([column])
        return parts or [[]]

    # Whole headers when everything fits in one table; else headers broken at their underscores
    # over several lines, and the columns split over as few tables as fit.
    folded = len(pack(False)) > 1 or sum(need(c, False) for c in columns) + 1 > width
    parts = pack(folded)
    tables = []
    for number, part in enumerate(parts, start=1):
        label = title if len(parts) == 1 else f"{title} ({number}/{len(parts)})"
        table = Table(title=label)
        for column in names + part:
            table.add_column("\n".join(header_lines(column, folded)), justify="left" if text[column] else "right",
                             width=need(column, folded) - _COLUMN_EXTRA, no_wrap=True)
        for index in range(len(rows)):
            table.add_row(*(cells[column][index] for column in names + part))
        tables.append(table)
    return tables
