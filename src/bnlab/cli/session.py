"""What every ``bnlab`` command shares: the consoles, the session a stop message needs, how
this command was invoked, and how library messages and OS errors read as this command's.

Apart from JAX's own device flags (``api.configure_jax``), this package is the only part of
bnlab that reads environment variables (``BNLAB_DATA_DIR``, ``BNLAB_CACHE_DIR``).
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.markup import escape as escape_markup

from bnlab.errors import printable
from bnlab.report.terminal import new_console

console = new_console()
error_console = new_console(stderr=True)


def escape(text: str) -> str:
    """``text`` as Rich prints it literally: its markup escaped and its control characters
    written out (``errors.printable``), so nothing read from a file drives the terminal."""
    return escape_markup(printable(text))


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised where the program is, as SIGINT raises ``KeyboardInterrupt``."""


@dataclass
class Session:
    """What a stop message needs: the arguments, and the run being trained (if any)."""

    argv: list[str] = field(default_factory=list)
    run_dir: Path | None = None


session = Session()


def stop_advice() -> str:
    """What the user can do after a stop: the run's state and the command that resumes it."""
    if session.run_dir is None:
        return "nothing was being trained"
    return (f"every finished epoch is saved in {session.run_dir} (files are written "
            f"atomically); resume with: {resume_command()}")


def resume_command() -> str:
    """This invocation with ``--resume`` (the newest unfinished run of the same experiment
    and overrides is the one it resumes)."""
    return shlex.join([*program(), *without_resume(session.argv), "--resume"])


def without_resume(argv: Sequence[str]) -> list[str]:
    return [a for a in argv if a not in ("--resume", "--retry-diverged")]


def program() -> list[str]:
    """How this command was invoked, to print commands that paste as they are: ``bnlab``
    when that is what the shell finds, else the path it was run by (``.venv/bin/bnlab``),
    or ``python -m bnlab``."""
    argv0 = sys.argv[0] if sys.argv else ""
    name = Path(argv0).name
    if name in ("__main__.py", "-m", "-c"):
        return [sys.executable, "-m", "bnlab"]
    if name != "bnlab":  # called in-process (a test, a notebook): the installed command
        return ["bnlab"]
    found = shutil.which("bnlab")
    if found and Path(found).resolve() == Path(argv0).resolve():
        return ["bnlab"]
    return [argv0]


def companion(name: str) -> str:
    """How to call ``name``, a command installed beside this Python (``tensorboard``): its
    name when the shell finds that one, else its path (relative when under the working
    folder, as ``.venv/bin/tensorboard``); its name when it is not installed here."""
    beside = Path(sys.executable).parent / name
    found = shutil.which(name)
    if not beside.exists() or (found and Path(found).resolve() == beside.resolve()):
        return name
    relative = os.path.relpath(beside)
    return str(beside) if relative.startswith("..") else relative


# What an OSError means for the user, and what to do about it.
OS_ERRORS = {
    errno.ENOSPC: "the disk is full; free some space (or give another --runs-dir) and run "
                  "again",
    errno.EDQUOT: "the disk quota is exhausted; free some space and run again",
    errno.EROFS: "the file system is read-only; give a writable folder",
    errno.EACCES: "permission denied; check the permissions of that path",
    errno.EPERM: "the operation is not permitted there; check that path",
    errno.ENOENT: "it does not exist; check the path",
    errno.ENOTDIR: "a part of that path is a file, not a folder; check the path",
    errno.EISDIR: "it is a folder where a file was expected; check the path",
    errno.EIO: "the disk reported an input/output error; check the disk",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) and run again",
    errno.EFBIG: "the file would exceed the file size limit (ulimit -f); raise it and run "
                 "again",
    errno.ENAMETOOLONG: "the path is too long; use a shorter one",
}


def os_error_text(err: OSError) -> str:
    """One line for an ``OSError``: the file, the system's message, what it means."""
    where = f"{err.filename}: " if err.filename else ""
    meaning = OS_ERRORS.get(err.errno, "check the path")
    text = f"{where}{err.strerror or err} — {meaning}"
    if session.run_dir is not None:
        text += f"; then resume with: {resume_command()}"
    return text


# A library option as this command spells it, and the environment variable that sets it too.
FLAGS = {"data_dir": "--data-dir", "cache_dir": "--cache-dir", "download": "--no-download",
         "resume": "--resume", "retry_diverged": "--retry-diverged", "seeds": "--seeds",
         "epochs": "--epochs", "runs_dir": "--runs-dir", "test": "--test",
         "batches": "--batches", "variant": "--variant", "seed": "--seed",
         "train_rows": "--train-rows", "out": "--out", "force": "--force"}
ENVIRONMENT = {"data_dir": "BNLAB_DATA_DIR", "cache_dir": "BNLAB_CACHE_DIR"}


def cli_option(name: str, value: str | None) -> str:
    """A message's option placeholder (``errors.render_options``) as a flag: ``{data_dir}``
    → ``--data-dir (and unset BNLAB_DATA_DIR)``, ``{data_dir=DIR}`` → ``--data-dir DIR``,
    ``{resume=True}`` → ``--resume``."""
    flag = FLAGS[name]
    if value is None:
        return f"{flag} (and unset {ENVIRONMENT[name]})" if name in ENVIRONMENT else flag
    return flag if value == "True" else f"{flag} {value}"


def env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def data_options(args: argparse.Namespace) -> dict:
    """The data options of a command (``--data-dir``, ``--cache-dir``, ``--no-download``) as
    the API's functions take them."""
    return {"data_dir": args.data_dir, "cache_dir": args.cache_dir,
            "download": not args.no_download}


def command_observer():
    """The observer the command gives a workflow (``report.progress.ProgressObserver``,
    lines under a bar): it also remembers the run being trained, for the stop message."""
    from bnlab.report.progress import ProgressObserver

    class CommandObserver(ProgressObserver):
        def started(self, run) -> None:
            session.run_dir = run.run_dir
            super().started(run)

    return CommandObserver(verbose=2, console=console, errors=error_console,
                           warnings_as="console")


def print_recalibrations(run) -> None:
    """The run's recalibrations (``experiments.recalibrate``), if it holds any, as a table;
    a damaged one as a warning."""
    from bnlab.report.console import recalibration_parts

    table, problems = recalibration_parts(run)
    if table is not None:
        console.print(table)
    for problem in problems:
        error_console.print(f"[yellow]warning:[/] {escape(problem)}", soft_wrap=True)
