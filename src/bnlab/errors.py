"""The error types users see, and how their messages name a caller's options.

A ``BnlabError`` is a user mistake or an environment problem (missing file, bad config,
a run that cannot go on). Its message is one line that says what is wrong and how to fix it; the CLI
prints it without a traceback and exits with status 2.

A message names the options of whoever called bnlab as placeholders, ``{data_dir=DIR}`` or
``{resume}``, because a Python caller and a shell user spell them differently. ``str(err)``
shows them as Python arguments (``data_dir=DIR``, ``resume``); ``err.render(cli_option)``
lets the command line show its own flags (``--data-dir DIR``, ``--resume``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

#: The options a message may name as a placeholder (the arguments of ``bnlab.api``'s
#: functions, which the ``bnlab`` command's flags mirror).
OPTIONS = frozenset({"data_dir", "cache_dir", "download", "resume", "retry_diverged", "seeds",
                     "epochs", "runs_dir", "test", "batches", "variant", "seed", "train_rows",
                     "out", "force"})
_PLACEHOLDER = re.compile(r"\{([a-z][a-z_]*)(?:=([^{}\s]+))?\}")

OptionRenderer = Callable[[str, "str | None"], str]
"""``(option name, value or None) -> text``: how one placeholder reads."""


def python_option(name: str, value: str | None) -> str:
    """A placeholder as a Python keyword argument: ``data_dir=DIR``, or ``resume``."""
    return name if value is None else f"{name}={value}"


def render_options(message: str, option: OptionRenderer = python_option) -> str:
    """``message`` with each ``{name}`` / ``{name=VALUE}`` placeholder of a known option
    (``OPTIONS``) replaced by ``option(name, value)``; any other braces stay as they are."""
    return _PLACEHOLDER.sub(lambda m: option(m[1], m[2]) if m[1] in OPTIONS else m[0],
                            message)


def some_of(names: list[str], shown: int = 3) -> str:
    """``a, b, c and 4 more``: the first ``shown`` of ``names`` and how many others."""
    rest = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {rest} more" if rest > 0 else "")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every control character but tab and newline written as ``\\xNN``, so
    that a name or description read from a file cannot drive the terminal (an escape
    sequence that recolours, moves the cursor or retitles the window)."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match[0]):02x}", text)


class BnlabError(Exception):
    """A problem the user can fix; ``str(err)`` is a single human-readable line."""

    def render(self, option: OptionRenderer = python_option) -> str:
        """The message with its option placeholders rendered by ``option``."""
        return render_options(str(self.args[0]) if self.args else "", option)

    def __str__(self) -> str:
        return self.render()


class DataError(BnlabError):
    """A dataset file is missing, truncated, corrupt or has the wrong digest."""


class GzipError(DataError):
    """A gzip file that cannot be decompressed; ``problem`` is "empty", "truncated",
    "corrupt" or "too large"."""

    def __init__(self, message: str, *, problem: str):
        super().__init__(message)
        self.problem = problem


class ConfigError(BnlabError):
    """An experiment file, an option or an argument is invalid."""


class LayerInputError(ConfigError):
    """A model's layer cannot take what the layer before it gives; ``index`` is its 0-based
    position in the model."""

    def __init__(self, message: str, *, index: int):
        super().__init__(message)
        self.index = index



class BnlabWarning(UserWarning):
    """Something legal that is probably not what the user meant (``warnings.warn``): e.g.
    BatchNorm on batches of 2 rows."""
