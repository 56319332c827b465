"""Where a command may write a file the user names (an export, a report, a prediction grid).

Two rules, checked before any work is done:

1. **A run's own files are never written over**, whatever the caller asks: anything inside a
   run's variant or seed folders, its ``config.json``, ``summary.json``, ``environment.json``,
   hidden files (``.lock``, ``.replaced/``) and the figures its summary lists. (An export or
   a report written at a run's top level, as the defaults are, is not part of its record.)
2. **An existing file is written over only when asked** (``force``), and never when it is a
   symbolic link (the link would be replaced, not the file it names) or not a regular file.

A path is judged by where it really is: the folder it names is resolved through links, so a
link to a run folder is no way around rule 1.
"""

from __future__ import annotations

import os
from pathlib import Path

from bnlab.errors import ConfigError
from bnlab.store.runs import is_run_folder
from bnlab.store.summary import listed_figures

RUN_TOP_FILES = frozenset({"config.json", "summary.json", "environment.json"})


def run_holding(path: Path) -> Path | None:
    """The run folder ``path`` lies in (at any depth), ``path`` resolved through links, or
    ``None``."""
    for folder in Path(os.path.realpath(path)).parents:
        if is_run_folder(folder):
            return folder
    return None


def run_file_reason(path: Path) -> str | None:
    """Why ``path`` is one of a run's own files (rule 1 of the module docstring), or
    ``None`` when it is not."""
    real = Path(os.path.realpath(path.parent)) / path.name
    run = run_holding(real)
    if run is None:
        return None
    inside = real.relative_to(run)
    if len(inside.parts) > 1:
        return f"it is inside {run.name}/{inside.parts[0]}/, part of the run's record"
    name = inside.parts[0]
    if name in RUN_TOP_FILES or name.startswith("."):
        return f"it is {run.name}'s own {name}"
    if name in listed_figures(run):
        return f"it is a figure of {run.name}, listed in its summary.json"
    return None


def check_output(path: Path | str, *, force: bool = False, given: bool = True) -> Path:
    """``path`` as a file a command may write (module docstring), else a ``ConfigError``
    saying why and what to do; ``given``: the caller named it (a default path only obeys
    rule 1, so a command run again replaces its own default output)."""
    path = Path(path)
    reason = run_file_reason(path)
    if reason:
        raise ConfigError(f"{path}: {reason}; bnlab never writes over a run's own files: "
                          "choose another {out}")
    if path.is_symlink():
        raise ConfigError(f"{path} is a symbolic link; name the file itself, or choose "
                          "another {out}")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path} exists and is not a regular file; choose another {{out}}")
    if given and path.exists() and not force:
        raise ConfigError(f"{path} exists; choose another {{out}}, or overwrite it "
                          "{force=True}")
    return path
