"""The run store: one folder per run of an experiment, and the ``Run`` it is read back as.

    runs/<experiment>-<YYYYmmdd-HHMMSS>/
        config.json              the resolved experiment (config.experiment, file form)
        environment.json         versions, device, seeds, data; "resumes" (store.provenance)
        summary.json             final metrics, divergences and verdicts, written last
        <variant>/statistics.csv per-epoch mean and 95% CI over seeds (store.histories)
        <variant>/seed-<s>/history.csv   Keras CSVLogger columns, after every epoch
        <variant>/checkpoint.safetensors (+ .json copy of its metadata)  train.checkpoint
        tensorboard/<variant>/seed-<s>/{,train,validation}/events.*  (store.tensorboard)
        curves.png, curves.svg   learning curves (written by ``bnlab run``)
        .lock                    while a process trains it (store.lock)

Every file is written atomically (``bnlab.io``) and nothing is pickled. Each variant's
checkpoint carries a digest and, in its metadata, the variant's whole history, its
divergences and copies of ``config.json`` and ``environment.json`` as the run started: it is
the record the other files are checked against. ``store.reader.load_run`` checks every file
it finds and returns the run with a list of ``Damage``. A damaged run is never ``complete``,
its verdicts are refused while the files they come from are damaged, and ``bnlab run …
--resume`` repairs it (``experiments.runner``): it retrains only the variants whose own
record is damaged or unfinished and rewrites the files derived from intact ones.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.analysis.stats import PairedComparison
from bnlab.config.experiment import ExperimentConfig
from bnlab.errors import BnlabError
from bnlab.io import atomic_write_json
from bnlab.store.summary import (
    VariantSummary,
    left_out_of_verdicts,
    sweep_points,
    verdicts,
)
from bnlab.train.loop import Divergence, History

REPAIR = "resume the run to repair it ({resume=True} retrains only what is damaged)"


@dataclass(frozen=True)
class Damage:
    """A damaged file of a run: ``file`` relative to the run folder, what is wrong with it,
    and the variant whose record it belongs to (``None``: the run's own files)."""

    file: str
    problem: str
    variant: str | None = None

    def __str__(self) -> str:
        return f"{self.file} {self.problem}"


@dataclass(frozen=True)
class SavedVariant:
    """What a variant's verified checkpoint records: the epochs it finished and their
    ``History`` (with divergences), its compile seconds, the copies of the run's config and
    environment it carries (``{}`` in checkpoints from before they did), and what its probe
    plan recorded (``train.loop.Recorded.arrays``)."""

    epoch: int
    history: History
    compile_seconds: float
    run_copy: Mapping[str, Any]
    records: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Run:
    """A run folder read back and checked.

    config: the experiment as run; environment: ``environment.json`` (or the checkpoint's
    copy when that file is damaged); summary: per variant, ``None`` while the run is
    unfinished (or its summary damaged); histories: per started variant whose record is
    readable, its ``History`` (``per_seed[metric]: (seeds, epochs)``, NaN after a seed
    diverged); saved: per variant with a verified checkpoint, its ``SavedVariant``;
    damage: every damaged file found.
    """

    path: Path
    config: ExperimentConfig
    environment: dict[str, Any]
    summary: dict[str, VariantSummary] | None
    histories: dict[str, History]
    damage: tuple[Damage, ...] = ()
    saved: dict[str, SavedVariant] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def finished(self) -> bool:
        """Whether every variant finished training (``summary.json`` is there and sound)."""
        return self.summary is not None

    @property
    def complete(self) -> bool:
        """Finished, and no file of it is damaged."""
        return self.finished and not self.damage

    @property
    def status(self) -> str:
        """``"complete"``, ``"damaged"`` or ``"unfinished"``."""
        return "damaged" if self.damage else "complete" if self.finished else "unfinished"

    @property
    def epochs_per_variant(self) -> list[int]:
        """Epochs finished by each variant, in the config's order (0 if not started)."""
        return [self.histories[v.name].epochs if v.name in self.histories else 0
                for v in self.config.points]

    @property
    def diverged(self) -> dict[str, dict[int, Divergence]]:
        """Per variant with a diverged seed, where each of them diverged."""
        return {name: dict(h.diverged) for name, h in self.histories.items() if h.diverged}

    def variant_status(self, name: str) -> str:
        """One variant's state: ``damaged``, ``diverged (…)``, ``complete``, ``unfinished``
        or ``not started``."""
        if any(d.variant == name for d in self.damage):
            return "damaged"
        history = self.histories.get(name)
        if history is None:
            return "not started"
        if history.diverged:
            every = set(history.diverged) == set(history.seeds)
            return ("diverged" if every else
                    f"diverged ({len(history.diverged)} of {len(history.seeds)} seeds)")
        return "complete" if history.epochs == self.config.epochs else "unfinished"

    def verdict_problem(self) -> str | None:
        """Why no verdict can be computed now (``None``: they can): unfinished, or a file
        the verdicts come from is damaged."""
        if not self.finished:
            summary = [d for d in self.damage if d.file == "summary.json"]
            if summary:
                return f"{self.path / 'summary.json'} {summary[0].problem}; {REPAIR}"
            return (f"{self.path} is unfinished: its verdicts come when every variant has "
                    "finished (resume it with {resume=True})")
        lost = [v.name for v in self.config.points
                if not whole_history(self.histories.get(v.name), self.config.epochs)]
        if lost:
            return (f"the histories of {', '.join(lost)} in {self.path} are damaged, so no "
                    f"verdict is computed over the other variants alone; {REPAIR}")
        return None

    def comparisons(self) -> list[PairedComparison]:
        """The seed-paired verdicts on the final validation accuracy between the variants
        none of whose seeds diverged (every pair, Holm-adjusted), as ``bnlab show`` prints
        them (``left_out`` says which variants take no part, and why); a ``BnlabError``
        while ``verdict_problem`` says they cannot be computed."""
        problem = self.verdict_problem()
        if problem:
            raise BnlabError(problem)
        return verdicts(self.histories, self.config.epochs, sweep_points(self.config))[0]

    @property
    def records(self) -> dict[str, Mapping[str, np.ndarray]]:
        """Per variant with a verified checkpoint, what its probe plan recorded
        (``train.loop.Recorded``: activation statistics, measures, the test set per epoch)."""
        return {name: saved.records for name, saved in self.saved.items() if saved.records}

    @property
    def left_out(self) -> dict[str, str]:
        """The variants no verdict involves, each with why (``"diverged: seed 43 at …"``)."""
        return left_out_of_verdicts(self.histories)

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}: {self.config.name!r}, "
                f"{len(self.config.points)} {'points' if self.config.sweep else 'variants'} × "
                f"{self.config.seeds} seed(s), "
                f"{self.config.epochs} epochs, {self.status})")


def whole_history(history: History | None, epochs: int) -> bool:
    """Whether a finished variant's history is all there: every epoch, or up to the epoch
    in which its last seed diverged."""
    if history is None:
        return False
    if history.diverged and set(history.diverged) == set(history.seeds):
        epochs = max(d.epoch for d in history.diverged.values())
    return history.epochs >= epochs


class UnreadableRun(BnlabError):
    """A run folder whose experiment cannot be read from any of its files."""


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` looks like a run folder (a config.json or a variant checkpoint)."""
    return path.is_dir() and ((path / "config.json").exists()
                              or any(path.glob("*/checkpoint.safetensors")))


def variant_finished(saved: SavedVariant, config: ExperimentConfig) -> bool:
    """Whether a variant's checkpoint is its last: every epoch, or every seed diverged."""
    return saved.epoch == config.epochs or set(saved.history.diverged) >= set(
        saved.history.seeds)


def write_config(run_dir: Path, config: ExperimentConfig) -> None:
    """A run's ``config.json``: the experiment in its file form (read back by ``load_run``
    through ``experiment_from_json``)."""
    atomic_write_json(run_dir / "config.json", config.to_dict())


def new_run_dir(runs_dir: Path, experiment: str) -> Path:
    """Create and return a fresh ``<runs_dir>/<experiment>-<timestamp>[-n]`` folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = runs_dir / (f"{experiment}-{stamp}" + (f"-{n}" if n else ""))
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise BnlabError(f"cannot create a run folder under {runs_dir}; clean it up")
