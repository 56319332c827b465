"""Runs in the store from Python, as ``bnlab runs`` and ``show`` read them (without JAX)."""

from __future__ import annotations

from pathlib import Path

from bnlab.report.overview import Overview
from bnlab.store.reader import list_runs, load_run
from bnlab.store.runs import Run, run_folder

__all__ = ["list_runs", "load_run", "open_run", "show"]

RunSource = Run | Path | str


def open_run(source: RunSource, runs_dir: Path | str = "runs") -> Run:
    """``source`` as a ``Run``: itself, or the run folder it names (a path, or a run's name
    under ``runs_dir``) read by ``load_run``."""
    if isinstance(source, Run):
        return source
    return load_run(run_folder(Path(source), Path(runs_dir)))


def show(source: RunSource, *, runs_dir: Path | str = "runs") -> Overview:
    """A run as ``bnlab show`` prints it (``report.overview.Overview``: the run, its
    recalibrations; Rich prints it, Jupyter shows it as HTML)."""
    return Overview.of(open_run(source, runs_dir))
