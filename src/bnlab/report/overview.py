"""One run as ``bnlab show`` and ``bnlab.show`` present it: data that renders itself."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.markup import escape
from rich.text import Text

from bnlab.errors import OptionRenderer, python_option
from bnlab.report.console import recalibration_table, run_overview
from bnlab.store.recalibrations import Recalibration, read_recalibrations
from bnlab.store.runs import Run


@dataclass(frozen=True, repr=False)
class Overview:
    """A run, and the recalibrations its folder holds (``problems``: one line for each that
    is damaged). Printed by Rich as ``bnlab show`` prints it; shown as HTML in Jupyter."""

    run: Run
    recalibrations: tuple[Recalibration, ...] = ()
    problems: tuple[str, ...] = field(default=())

    @classmethod
    def of(cls, run: Run) -> Overview:
        found, problems = read_recalibrations(run.path, run.config)
        return cls(run, tuple(found), tuple(problems))

    def render(self, option: OptionRenderer = python_option) -> Group:
        """The overview with the caller's options named by ``option`` (``errors``)."""
        parts = [run_overview(self.run, option)]
        if self.recalibrations:
            parts.append(recalibration_table(self.recalibrations))
        parts += [Text.from_markup(f"[yellow]warning:[/] {escape(problem)}")
                  for problem in self.problems]
        return Group(*parts)

    def __rich__(self) -> Group:
        return self.render()

    def __str__(self) -> str:
        """The overview as plain text, 120 columns wide."""
        console = Console(file=io.StringIO(), width=120, color_system=None, highlight=False,
                          force_jupyter=False, force_terminal=False)
        console.print(self, soft_wrap=True)
        return console.file.getvalue()

    __repr__ = __str__

    def _repr_html_(self) -> str:
        console = Console(record=True, file=io.StringIO(), width=120, highlight=False,
                          force_jupyter=False)
        console.print(self)
        return console.export_html(inline_styles=True)
