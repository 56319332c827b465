"""Live progress of training for ``bnlab.fit`` and ``bnlab.run``: one bar per model, advanced
per epoch, with the latest metrics beside it.

``verbose=1`` (the default) is a Rich progress display: live in a terminal; in Jupyter a
widget that updates in place (through ``ipywidgets``, the ``notebook`` extra) and, once
training ends, its final state as the cell's output (so a saved notebook shows it); in a log
file or pipe its final state once. ``verbose=2`` prints one Keras ``verbose=2`` line per epoch
instead, ``verbose=0`` nothing. In Jupyter without ``ipywidgets`` the bar falls back to
lines, saying why once.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from bnlab.data.datasets import Splits, load_dataset
from bnlab.errors import ConfigError
from bnlab.io import cache_folder
from bnlab.report.console import divergence_lines, epoch_line, new_console
from bnlab.train.loop import METRICS, EpochRecord

SHORT = {"accuracy": "acc", "val_accuracy": "val_acc"}  # a bar line fits Jupyter's 115 columns
FULL_WIDTH = 110  # narrower consoles show only the last metric (val_acc, or acc), not the bar cut


class TrainingProgress:
    """Per-model progress of ``epochs`` epochs each, with the latest epoch's metrics (means
    over seeds); use as a context manager.

    ``compiled(name, seconds)`` when a model's programs are compiled, ``epoch(name, record)``
    after each of its epochs.
    """

    def __init__(self, epochs: int, *, verbose: int = 1, console: Console | None = None,
                 first_epoch: int = 0) -> None:
        if verbose not in (0, 1, 2):
            raise ConfigError(f"verbose must be 0 (silent), 1 (a progress bar) or 2 (a line "
                              f"per epoch), got {verbose!r}")
        self.console = console or new_console()
        self.epochs = epochs
        self.first_epoch = first_epoch
        if (verbose == 1 and self.console.is_jupyter
                and importlib.util.find_spec("ipywidgets") is None):
            self.console.print("(install ipywidgets, e.g. pip install 'bnlab[notebook]', for "
                               "a live progress bar; printing a line per epoch)")
            verbose = 2
        self.verbose = verbose
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> TrainingProgress:
        if self.verbose == 1:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                TextColumn("epochs"), TimeElapsedColumn(), TextColumn("{task.fields[metrics]}"),
                console=self.console, transient=self.console.is_jupyter)
            self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._progress is None:
            return
        self._progress.refresh()  # the last epoch, which the refresh thread may not have drawn
        self._progress.stop()
        if self.console.is_jupyter:  # the widget is gone; its final state stays as output
            self.console.print(self._progress.get_renderable())

    def _task(self, name: str) -> TaskID:
        assert self._progress is not None
        if name not in self._tasks:
            self._tasks[name] = self._progress.add_task(
                escape(name), total=self.epochs, completed=self.first_epoch, metrics="")
        return self._tasks[name]

    def compiled(self, name: str, seconds: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task(name), metrics=f"compiled in {seconds:.1f} s")
        elif self.verbose == 2:
            self.console.print(f"[bold]{escape(name)}[/]: compiling… {seconds:.1f} s")

    def epoch(self, name: str, record: EpochRecord) -> None:
        if self._progress is not None:
            # Keras's metrics only: the batch-statistics ones are in the logs and the report.
            shown = {m: v for m, v in record.metrics.items() if m in METRICS}
            if self.console.width < FULL_WIDTH:  # a narrow console: the last metric only
                shown = dict(list(record.metrics.items())[-1:])
            metrics = " · ".join(f"{SHORT.get(metric, metric)} {finite_mean(values):.4f}"
                                 for metric, values in shown.items())
            self._progress.update(self._task(name), completed=record.epoch, metrics=metrics)
        elif self.verbose == 2:
            self.console.print(f"Epoch {record.epoch}/{record.epochs}\n{epoch_line(record)}",
                               markup=False)
        if self.verbose:
            for line in divergence_lines(name, record):
                self.console.print(line, markup=False, style="bold red")


def finite_mean(values: np.ndarray) -> float:
    """The mean over the seeds that have not diverged (NaN when every one has)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def load_showing_downloads(dataset: str, *, data_dir: Path | str | None,
                           cache_dir: Path | str | None, download: bool, progress: bool = True,
                           console: Console | None = None) -> Splits:
    """``data.datasets.load_dataset`` from bnlab's cache folder (``io.cache_folder``), with a
    bar per downloading file when ``progress``: how the CLI and the API load data. What the
    search has to say (a corrupt cached copy skipped for a verified one) is printed as a
    warning on stderr."""
    with DownloadBars(console) as bars:
        splits = load_dataset(dataset, data_dir=None if data_dir is None else Path(data_dir),
                              cache_dir=cache_folder(cache_dir) / "datasets",
                              download=download, on_progress=bars if progress else None)
    warnings = new_console(stderr=True) if console is None else console
    for source in splits.sources:
        for note in source.notes:
            warnings.print(f"warning: {note}", markup=False, style="yellow")
    return splits


class DownloadBars:
    """A progress bar per file being downloaded (``data.sources.Progress``), shown only once a
    download starts and gone when it ends; use as a context manager."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or new_console()
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, name: str, done: int, total: int | None) -> None:
        if self.progress is None:
            self.progress = Progress(TextColumn("downloading {task.description}"), BarColumn(),
                                     DownloadColumn(), TransferSpeedColumn(),
                                     console=self.console, transient=True)
            self.progress.start()
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(escape(name), total=total)
        self.progress.update(self.tasks[name], completed=done)

    def __enter__(self) -> DownloadBars:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


class SweepTiming:
    """The sweep's time left, estimated after each program's first epoch from the seconds
    per member-epoch measured so far (the first program's rate for programs not yet run)."""

    def __init__(self, plan: Sequence, epochs: int) -> None:  # experiments.sweep.Program
        self.plan, self.epochs = plan, epochs
        self.program_of = {p.name: i for i, program in enumerate(plan) for p in program.points}
        self.rates: dict[int, float] = {}  # program → seconds per member-epoch
        self.trained: dict[int, int] = {}  # program → epochs trained in this session

    def after_epoch(self, point: str, record: EpochRecord) -> str | None:
        """A line after the first epoch a program trains, else ``None``."""
        index = self.program_of[point]
        if record.epoch <= self.trained.get(index, 0):
            return None
        self.trained[index] = record.epoch
        if index in self.rates:
            return None
        members = len(self.plan[index].members)
        self.rates[index] = record.seconds / members
        rate = self.rates[index]
        left = sum((self.epochs - (record.epoch if i == index else 0 if i > index else
                                   self.epochs)) * len(p.members) * self.rates.get(i, rate)
                   for i, p in enumerate(self.plan))
        return (f"program {index + 1}/{len(self.plan)}: {record.seconds:.1f} s per epoch of "
                f"{members} members ({1000 * rate:.0f} ms per member-epoch); about "
                f"{duration_text(left)} left in this sweep")


def duration_text(seconds: float) -> str:
    """``42 s``, ``17 min``, ``2.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
