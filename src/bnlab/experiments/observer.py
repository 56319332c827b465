"""What a workflow tells its caller while it works: one protocol for the shell and Python.

Every workflow of ``bnlab.api`` (and so every ``bnlab`` command) reports progress and events
to an ``Observer``. This base class ignores them all; an observer overrides what it shows:
``report.progress.ProgressObserver`` draws them with Rich in a terminal and with a widget in
Jupyter; a test can record them. Nothing here prints.

    observer.download("train-images-idx3-ubyte.gz", 1_048_576, 26_421_880)
    observer.started(RunStarted(config, run_dir, resuming=False, devices="2 × cpu:cpu", …))
    observer.planned({"bn": VariantPlan("continue", "continuing from epoch 3/10", 3)}, [])
    observer.compiled("bn_after", 2.1)
    observer.epoch("bn_after", record)               # train.loop.EpochRecord
    observer.program_done(program)                   # a program trained elsewhere (Ray)
    observer.warning("point 'bn@batch_size=2' …")    # legal, but probably not meant
    observer.note("resuming with jax 0.11 (started with 0.10) …")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bnlab.config.experiment import ExperimentConfig
from bnlab.experiments.resume import VariantPlan
from bnlab.experiments.sweep import Program
from bnlab.train.loop import EpochRecord


@dataclass(frozen=True)
class RunStarted:
    """A run about to train: its ``config``, folder, whether it resumes one, the devices
    its seeds spread over (``"2 × cpu:cpu"``) and its programs (``experiments.sweep``)."""

    config: ExperimentConfig
    run_dir: Path
    resuming: bool
    devices: str
    programs: Sequence[Program]
    executor: str = "local"  # or the Ray cluster's address


class Observer:
    """The events of a workflow (module docstring); each method does nothing here."""

    def download(self, name: str, done: int, total: int | None) -> None:
        """``done`` of ``total`` bytes (``None``: unknown) of a dataset file downloaded."""

    def started(self, run: RunStarted) -> None:
        """A run is about to train (nothing has been written but its folder)."""

    def planned(self, plans: Mapping[str, VariantPlan], repaired: Sequence[str]) -> None:
        """What a resume does with each variant, and the run files it repaired."""

    def compiled(self, label: str, seconds: float) -> None:
        """A program (a variant, or a sweep's shape) compiled in ``seconds``."""

    def epoch(self, point: str, record: EpochRecord) -> None:
        """Point ``point`` finished an epoch; its files are written."""

    def program_done(self, program: Program) -> None:
        """A program trained elsewhere (a Ray task) finished."""

    def warning(self, text: str) -> None:
        """Something legal that is probably not what was meant."""

    def note(self, text: str) -> None:
        """Something the caller should know (how a resume's environment differs, …)."""


SILENT = Observer()
