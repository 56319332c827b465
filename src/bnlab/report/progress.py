"""Progress, drawn: the observer (``experiments.observer``) that the ``bnlab`` command and the
Python API give every workflow, and the sweep's time estimate.

``ProgressObserver(verbose=1)`` (the API's default) is one bar per model, advanced per epoch
with its latest metrics beside it: live in a terminal; in Jupyter a widget that updates in
place (through ``ipywidgets``, the ``notebook`` extra) and, once training ends, its final
state as the cell's output (so a saved notebook shows it); in a log file or pipe its final
state once. ``verbose=2`` prints instead what happens as lines — the run's header, each
compile, one Keras ``verbose=2`` line per epoch (a sweep's points on one line each, with the
time left), every divergence, note and repair — under one transient bar of the whole run
in a terminal: what the ``bnlab`` command shows. ``verbose=0`` shows nothing but warnings.
In Jupyter without ``ipywidgets`` the bar falls back to lines, saying why once.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
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

from bnlab.errors import BnlabWarning, ConfigError
from bnlab.experiments.observer import Observer, RunStarted
from bnlab.experiments.resume import VariantPlan
from bnlab.experiments.sweep import Program
from bnlab.report.console import divergence_lines, epoch_line
from bnlab.report.terminal import new_console
from bnlab.train.history import METRICS
from bnlab.train.loop import EpochRecord

SHORT = {"accuracy": "acc", "val_accuracy": "val_acc"}  # a bar line fits Jupyter's 115 columns
FULL_WIDTH = 110  # narrower consoles show only the last metric (val_acc, or acc), not the bar cut


class ProgressObserver(Observer):
    """Draws a workflow's events on ``console`` (module docstring); use as a context manager
    around the work. ``epochs``: the epochs of each model, when known before a run starts
    (``fit``); ``warnings_as``: ``"python"`` issues warnings with ``warnings.warn``
    (``BnlabWarning``), ``"console"`` prints them on ``errors`` (default: stderr)."""

    def __init__(self, *, verbose: int = 1, console: Console | None = None,
                 errors: Console | None = None, epochs: int = 0,
                 warnings_as: str = "python") -> None:
        if isinstance(verbose, bool) or verbose not in (0, 1, 2):
            raise ConfigError(f"verbose must be 0 (silent), 1 (a progress bar) or 2 (a line "
                              f"per epoch), got {verbose!r}")
        self.console = console or new_console()
        self.errors = errors or new_console(stderr=True)
        if (verbose == 1 and self.console.is_jupyter
                and importlib.util.find_spec("ipywidgets") is None):
            self.console.print("(install ipywidgets, e.g. pip install 'bnlab[notebook]', for "
                               "a live progress bar; printing a line per epoch)")
            verbose = 2
        self.verbose = verbose
        self.epochs = epochs
        self.warnings_as = warnings_as
        self.run: RunStarted | None = None
        self.timing: SweepTiming | None = None
        self._bars: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._downloads: DownloadBars | None = None
        self.started_at = time.perf_counter()

    def __enter__(self) -> ProgressObserver:
        return self

    def _start_bars(self) -> None:
        """The bars, started when the first thing they show happens (a workflow that trains
        nothing draws none)."""
        if self._bars is not None or not self.verbose:
            return
        if self.verbose == 1:
            self._bars = Progress(
                TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                TextColumn("epochs"), TimeElapsedColumn(), TextColumn("{task.fields[metrics]}"),
                console=self.console, transient=self.console.is_jupyter)
        elif self.console.is_terminal:
            self._bars = Progress(TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), console=self.console, transient=True)
        if self._bars is not None:
            self._bars.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._downloads is not None:
            self._downloads.__exit__()
        if self._bars is None:
            return
        self._bars.refresh()  # the last epoch, which the refresh thread may not have drawn
        self._bars.stop()
        if self.verbose == 1 and self.console.is_jupyter:  # the widget is gone: its final
            self.console.print(self._bars.get_renderable())  # state stays as output

    # what is printed goes above the bars
    def print(self, text: str, *, style: str | None = None) -> None:
        target = self._bars.console if self._bars is not None else self.console
        target.print(text, markup=False, style=style, soft_wrap=True)

    def download(self, name: str, done: int, total: int | None) -> None:
        if self.verbose:
            if self._downloads is None:
                self._downloads = DownloadBars(self.console)
            self._downloads(name, done, total)

    def warning(self, text: str) -> None:
        if self.warnings_as == "python":
            warnings.warn(text, BnlabWarning, stacklevel=3)
        else:
            self.errors.print(f"[yellow]warning:[/] {escape(text)}", soft_wrap=True)

    def note(self, text: str) -> None:
        if self.verbose:
            self.print(f"note: {text}")

    def started(self, run: RunStarted) -> None:
        self.run, self.epochs = run, run.config.epochs
        config = run.config
        self.timing = SweepTiming(run.programs, config.epochs) if config.sweep else None
        if self.verbose == 2:
            what = (f"{len(config.points)} points" if config.sweep else
                    f"{len(config.variants)} models")
            self.print(f"{config.name}: {what} × {config.seeds} seed(s) "
                       f"({', '.join(map(str, config.seed_list))}) × {config.epochs} epochs → "
                       f"{run.run_dir}" + (" (resuming)" if run.resuming else "")
                       + f" on {run.devices}", style="bold")
            if config.sweep:
                programs = run.programs
                self.print(f"{len(programs)} program{'s' * (len(programs) != 1)}, "
                           f"{sum(len(p.members) for p in programs)} members:")
                for number, program in enumerate(programs, 1):
                    self.print(f"  program {number}: {program.describe()}")
            if run.executor != "local":
                self.print(f"sending {len(run.programs)} programs to the Ray cluster at "
                           f"{run.executor}")
        if self.verbose == 2:
            self._start_bars()
            if self._bars is not None:
                self._tasks["run"] = self._bars.add_task(
                    "training", total=len(config.points) * config.epochs)

    def planned(self, plans: Mapping[str, VariantPlan], repaired: Sequence[str]) -> None:
        if not self.verbose:
            return
        for line in repaired:
            self.print(f"repair: {line}")
        for name, plan in plans.items():
            self.print(f"{name}: {plan.reason}")
            if plan.action == "keep":
                self._advance(self.epochs)
            elif plan.action == "continue":
                self._advance(plan.from_epoch)

    def compiled(self, label: str, seconds: float) -> None:
        if self.timing is not None:
            self.timing.compiled(seconds)
        if self.verbose == 1:
            self._start_bars()
        if self.verbose == 1 and self._bars is not None:
            self._bars.update(self._task(label), metrics=f"compiled in {seconds:.1f} s")
        elif self.verbose == 2:
            if "run" in self._tasks and self._bars is not None:
                self._bars.update(self._tasks["run"], description=f"training {label}")
            self.print(f"{label}: compiling… {seconds:.1f} s", style="bold")

    def epoch(self, point: str, record: EpochRecord) -> None:
        if self.verbose == 1:
            self._start_bars()
        if self.verbose == 1 and self._bars is not None:
            # Keras's metrics only: the batch-statistics ones are in the logs and the report.
            shown = {m: v for m, v in record.metrics.items() if m in METRICS}
            if self.console.width < FULL_WIDTH:  # a narrow console: the last metric only
                shown = dict(list(shown.items())[-1:])
            metrics = " · ".join(f"{SHORT.get(metric, metric)} {finite_mean(values):.4f}"
                                 for metric, values in shown.items())
            self._bars.update(self._task(point), completed=record.epoch, metrics=metrics)
        elif self.verbose == 2:
            if self.timing is None:
                self.print(f"Epoch {record.epoch}/{record.epochs}\n{epoch_line(record)}")
            else:
                self.print(f"{point} epoch {record.epoch}/{record.epochs}: "
                           f"{epoch_line(record)}")
                if estimate := self.timing.after_epoch(point, record):
                    self.print(estimate, style="bold")
            self._advance(1)
        if self.verbose:
            for line in divergence_lines(point, record):
                self.print(line, style="bold red")

    def program_done(self, program: Program) -> None:
        if self.verbose:
            self.print(f"done on the Ray cluster: {program.describe()}")
        self._advance(len(program.points) * self.epochs)

    def _task(self, name: str) -> TaskID:
        assert self._bars is not None
        if name not in self._tasks:
            self._tasks[name] = self._bars.add_task(escape(name), total=self.epochs or None,
                                                    metrics="")
        return self._tasks[name]

    def _advance(self, epochs: int) -> None:
        if "run" in self._tasks and self._bars is not None:
            self._bars.advance(self._tasks["run"], epochs)


def finite_mean(values: np.ndarray) -> float:
    """The mean over the seeds that have not diverged (NaN when every one has)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


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
            self.progress = None


class SweepTiming:
    """The sweep's training time left, estimated at each program's first epoch from wall-clock
    time measured so far (``clock``, seconds):

    - the program training: its epochs left × members × its seconds per member-epoch (the
      epoch's own time, plus the time between epochs measured so far: evaluation, files);
    - each program still to come: the time between two programs measured so far (finishing
      the last one, compiling and starting the next; of programs of its variant where there
      are: a BN model compiles longer; before any, the mean compile time) plus
      its epochs × members × the mean seconds per member-epoch of the measured programs most
      like it: of its variant and batch size, else of its batch size (an epoch of batch 2
      takes many times one of batch 256), else all of them."""

    def __init__(self, plan: Sequence[Program], epochs: int, *,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.plan, self.epochs, self.clock = plan, epochs, clock
        self.program_of = {p.name: i for i, program in enumerate(plan) for p in program.points}
        self.rates: dict[int, float] = {}  # program → seconds per member-epoch, its own time
        self.trained: dict[int, int] = {}  # program → epochs trained in this session
        self.seen: dict[int, float] = {}  # program → when its latest epoch ended
        self.compiles: list[float] = []  # seconds, per program compiled in this session
        self.between_epochs: list[float] = []  # seconds between two epochs beyond their own
        self.between_programs: dict[int, float] = {}  # program → seconds from the last
        # epoch of the program before it to the start of its own first epoch

    def compiled(self, seconds: float) -> None:
        self.compiles.append(seconds)

    def after_epoch(self, point: str, record: EpochRecord) -> str | None:
        """A line after the first epoch a program trains, else ``None``."""
        index, now = self.program_of[point], self.clock()
        if record.epoch <= self.trained.get(index, 0):
            return None  # another point of the same program's epoch
        if index in self.seen:  # a later epoch of this program
            self.between_epochs.append(max(0.0, now - self.seen[index] - record.seconds))
        elif index - 1 in self.seen:  # the first epoch after the program before it
            self.between_programs[index] = max(0.0, now - self.seen[index - 1] - record.seconds)
        self.trained[index], self.seen[index] = record.epoch, now
        if index in self.rates:
            return None
        members = len(self.plan[index].members)
        rate = self.rates[index] = record.seconds / members
        overhead = _mean(self.between_epochs)  # per epoch, whatever its members
        left = (self.epochs - record.epoch) * (members * rate + overhead)
        for program in self.plan[index + 1:]:
            alike, variant = self._alike(program), program.points[0].variant
            starts = ([t for i, t in self.between_programs.items()
                       if self.plan[i].points[0].variant == variant]
                      or list(self.between_programs.values()) or self.compiles)
            left += _mean(starts) + self.epochs * (
                len(program.members) * _mean([self.rates[i] for i in alike]) + overhead)
        return (f"program {index + 1}/{len(self.plan)}: {record.seconds:.1f} s per epoch of "
                f"{members} members ({1000 * rate:.0f} ms per member-epoch); about "
                f"{duration_text(left)} of training left in this sweep, then its figures")

    def _alike(self, program: Program) -> list[int]:
        """The measured programs most like ``program`` (never none, once one is measured)."""
        point = program.points[0]
        same_batch = [i for i in self.rates
                      if self.plan[i].points[0].batch_size == point.batch_size]
        return ([i for i in same_batch if self.plan[i].points[0].variant == point.variant]
                or same_batch or list(self.rates))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def duration_text(seconds: float) -> str:
    """``42 s``, ``17 min``, ``2.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
