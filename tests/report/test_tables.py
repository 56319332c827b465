"""Tables never hide a cell: at 80, 100 and 200 columns, piped and on a terminal, every name
is printed whole on one line, every word of every other cell is printed, nothing is cut to
``…`` and no line is wider than the console."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from bnlab.report.tables import Column, FittedTable
from bnlab.report.terminal import new_console

NAMES = ["bn_before@learning_rate=0.00316", "bn_before@learning_rate=0.001",
         "baseline@learning_rate=1.0", "lr-robustness-20261207-124504"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def sweep_like() -> FittedTable:
    table = FittedTable("Final metrics (mean ± sd over seeds) of a sweep whose title is long",
                        [Column("model", "left"), Column("status", "left", whole=False),
                         Column("val accuracy", whole=False), Column("val loss", whole=False),
                         Column("test accuracy", whole=False), Column("s/epoch"),
                         Column("compile s")])
    for i, name in enumerate(NAMES):
        table.add_row(name, "[green]complete[/]" if i else "[red]damaged[/] (2 files, below)",
                      f"0.{8569 + i} ± 0.00{31 + i}", f"0.{3613 + i} ± 0.0{139 + i}",
                      f"0.{8583 + i} (0.8501–0.8665)", f"{2.19 + i:.2f}", f"{15.6 + i:.1f}")
    return table


def rendered(table: FittedTable, width: int, terminal: bool) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=terminal, color_system="standard",
                      highlight=False, soft_wrap=True)
    console.print(table)
    return [ANSI.sub("", line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "terminal"])
@pytest.mark.parametrize("width", [80, 100, 200])
def test_every_name_and_number_is_printed_whole_and_no_line_is_too_wide(width, terminal):
    table = sweep_like()
    lines = rendered(table, width, terminal)
    text = "\n".join(lines)
    assert "…" not in text
    assert max(len(line) for line in lines) <= width, text
    for row in table.rows:
        assert any(row[0] in line for line in lines), (row[0], text)  # pastes as it is
        for column, cell in zip(table.columns[1:], row[1:], strict=True):
            plain = re.sub(r"\[/?[a-z ]*\]", "", cell)
            if column.whole:
                assert any(plain in line for line in lines), (plain, text)
            for word in plain.split():
                assert word in text, (word, text)


def test_a_table_that_fits_keeps_its_grid_and_one_that_does_not_stacks_its_rows():
    table = sweep_like()
    wide, narrow = rendered(table, 200, False), rendered(table, 80, False)
    assert table.needed_width() <= 200 and any("┃ model" in line for line in wide)
    assert table.needed_width() > 80 and not any("┃" in line for line in narrow)
    assert narrow[-2].startswith("  status complete · val accuracy 0.8572 ± 0.0034")


def test_piped_output_takes_the_width_from_columns_else_120(monkeypatch):
    monkeypatch.setenv("COLUMNS", "83")
    assert new_console(io.StringIO()).width == 83
    monkeypatch.delenv("COLUMNS")
    assert new_console(io.StringIO()).width == 120


@pytest.mark.parametrize("width", [80, 100, 120, 200])
def test_headers_longer_than_their_numbers_wrap_whole_words_and_are_never_cut(width):
    """A column of short numbers under a long header (the recalibration table's ``seed``,
    ``val accuracy before``) keeps every word of its header, in the grid or stacked."""
    table = FittedTable("t", [Column("model", "left"), Column("seed"),
                              Column("val accuracy before"), Column("change (points)")])
    for seed in (42, 43):
        table.add_row("after_no_input_bn@dense[0, 1].use_bias=false", str(seed), "0.0906",
                      "+3.54")
    text = "\n".join(rendered(table, width, False))
    for column in table.columns:
        for word in column.header.split():
            assert re.search(rf"(^|[\s┃│·]){re.escape(word)}($|[\s┃│·])", text, re.M), (
                word, text)
