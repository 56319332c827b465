"""Where bnlab prints: a Rich console set up the same way for the command, the API and the
notebook (imports nothing but Rich, so ``bnlab --help`` starts at once)."""

from __future__ import annotations

import sys
from typing import IO

from rich.console import Console


def new_console(file: IO[str] | None = None, *, stderr: bool = False) -> Console:
    """How bnlab prints: no guessing of colours for numbers, long lines kept whole, and in
    a log or pipe (not a terminal) 120 columns, wide enough for its tables."""
    stream = file or (sys.stderr if stderr else sys.stdout)
    width = None if stream.isatty() else 120
    return Console(file=file, stderr=stderr, highlight=False, soft_wrap=True, width=width)
