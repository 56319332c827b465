"""Tables that never hide a cell, at any width: bnlab's tables hold the names a user types
next (a run, a point) and numbers, so none is ever cut to ``…``.

A ``FittedTable`` decides its layout when Rich renders it, for the width it is given: a Rich
table when every ``whole`` column fits whole and every other column fits its longest word
(those wrap at spaces; headers may fold), else each row stacked: its first cell on a line,
then its other cells as ``header value`` pairs wrapped to the width. Imports nothing but
Rich."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class Column:
    """A column: its header, alignment, and whether its cells are ``whole`` (a name to paste,
    a number: never broken) or may wrap at spaces."""

    header: str
    justify: Literal["left", "right"] = "right"
    whole: bool = True


class FittedTable:
    """Rows of Rich-markup cells under ``columns``, laid out to fit (module docstring)."""

    def __init__(self, title: str, columns: list[Column]) -> None:
        self.title = title
        self.columns = columns
        self.rows: list[list[str]] = []

    def add_row(self, *cells: str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))

    def needed_width(self) -> int:
        """The narrowest width at which the table keeps its grid: each whole column as wide
        as its widest cell, each other one as its longest word, every column at least its
        header's longest word (headers wrap at spaces), plus the borders."""
        widths = []
        for i, column in enumerate(self.columns):
            texts = [Text.from_markup(row[i]) for row in self.rows]
            if column.whole:
                cells = max((text.cell_len for text in texts), default=1)
            else:
                cells = max((len(word) for text in texts for word in text.plain.split()),
                            default=1)
            widths.append(max(cells, *(len(word) for word in column.header.split())))
        return sum(widths) + 3 * len(widths) + 1

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self._table())

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.needed_width() <= options.max_width:
            yield self._table()
        else:
            yield from self._stacked(console, options.max_width)

    def _table(self) -> Table:
        table = Table(title=self.title, title_justify="left")
        for i, column in enumerate(self.columns):
            widest = max((Text.from_markup(row[i]).cell_len for row in self.rows), default=1)
            longest_word = max(len(word) for word in column.header.split() or [""])
            # The header wraps at spaces even in a column whose cells do not (a Text's own
            # no_wrap wins over its column's).
            table.add_column(Text(column.header, no_wrap=False), justify=column.justify,
                             overflow="fold", no_wrap=column.whole,
                             min_width=max(widest, longest_word) if column.whole else
                             longest_word)
        for row in self.rows:
            table.add_row(*row)
        return table

    def _stacked(self, console: Console, width: int) -> Iterator[Text]:
        """Each row as its first cell, then the others as ``header value`` pairs, wrapped
        at spaces to ``width`` and indented."""
        yield from Text(self.title, style="italic").wrap(console, width)
        for row in self.rows:
            yield Text.from_markup(row[0], style="bold")
            pairs = Text(" · ").join(
                Text.assemble(f"{column.header} ", Text.from_markup(cell))
                for column, cell in zip(self.columns[1:], row[1:], strict=True))
            for line in pairs.wrap(console, max(width - 2, 20)):
                yield Text("  ") + line
