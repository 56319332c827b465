"""Where bnlab prints: a Rich console set up the same way for the command, the API and the
notebook (imports nothing but Rich, so ``bnlab --help`` starts at once)."""

from __future__ import annotations

import os
import sys
from typing import IO

from rich.console import Console


def new_console(file: IO[str] | None = None, *, stderr: bool = False) -> Console:
    """How bnlab prints: no guessing of colours for numbers, long lines kept whole, as wide
    as the terminal, or ``COLUMNS`` when set; in a log or pipe without it, 120 columns. Its
    tables fit any width (``report.tables``)."""
    stream = file or (sys.stderr if stderr else sys.stdout)
    columns = os.environ.get("COLUMNS", "")
    width = None if stream.isatty() or (columns.isdigit() and int(columns) > 0) else 120
    return Console(file=file, stderr=stderr, highlight=False, soft_wrap=True, width=width)
