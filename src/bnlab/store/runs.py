"""The run store: one folder per run of an experiment, and the ``Run`` it is read back as.

    runs/<experiment>-<YYYYmmdd-HHMMSS>/
        config.json              the resolved experiment (config.experiment, file form)
        environment.json         versions, device, seeds, data; "resumes" (store.provenance)
        <variant>/checkpoint.safetensors  the variant's record (store.record), after every
                                 epoch; checkpoint.json beside it, its metadata for people
        <variant>/seed-<s>/history.csv   Keras CSVLogger columns   } derived from the
        <variant>/statistics.csv per-epoch mean and 95% CI          } record (store.derived)
        tensorboard/<variant>/seed-<s>/{,train,validation}/events.*  (store.tensorboard)
        summary.json             final metrics and verdicts, derived from the records, last
        curves.png, curves.svg, …  figures, listed with their digests in summary.json
        .lock                    while a process trains it (store.lock)

Every file is written atomically (``bnlab.io``) and nothing is pickled. A variant's record is
the one authoritative copy of what it learned: its history, divergences, test metrics,
probe records and copies of ``config.json`` and ``environment.json`` as the run started,
with the digests of the files derived from it. ``store.reader.load_run`` checks each record
by its digest and each other file by the digest its record holds (no recomputation), and
returns the run with a list of ``Damage``. A damaged run is never ``complete``, and ``bnlab
run … --resume`` repairs it (``experiments.runner``): it retrains only the variants whose
record (or TensorBoard files, which no record can rebuild) is damaged or unfinished and
rewrites every file derived from an intact record.
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
from bnlab.store.record import VariantRecord
from bnlab.store.summary import (
    VariantSummary,
    left_out_of_verdicts,
    sweep_points,
    verdicts,
)
from bnlab.train.history import Divergence, History

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


@dataclass(frozen=True, eq=False)
class Run:
    """A run folder read back and checked.

    config: the experiment as run; environment: ``environment.json`` (or the records'
    copy when that file is damaged); summary: per variant, its final and test metrics,
    ``None`` while the run is unfinished; histories: per variant with a sound record, its
    ``History`` (``per_seed[metric]: (seeds, epochs)``, NaN after a seed diverged);
    records: per variant, its sound ``VariantRecord``; damage: every damaged file found;
    figures: the figure files ``summary.json`` lists whose bytes are the ones drawn.
    """

    path: Path
    config: ExperimentConfig
    environment: dict[str, Any]
    summary: dict[str, VariantSummary] | None
    histories: dict[str, History]
    damage: tuple[Damage, ...] = ()
    records: dict[str, VariantRecord] = field(default_factory=dict)
    figures: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def training_rows(self) -> int:
        """The training rows the run trained on (fewer than the split's with ``--train-rows``),
        from its ``environment.json``; the split's when that does not say."""
        rows = (self.environment.get("data") or {}).get("train")
        return rows if isinstance(rows, int) else self.config.training_rows()

    @property
    def finished(self) -> bool:
        """Whether every variant finished training and was evaluated."""
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
        """Why no verdict can be computed now (``None``: they can): a variant's record is
        damaged, or the run is unfinished."""
        lost = [v.name for v in self.config.points if v.name not in self.histories
                and any(d.variant == v.name for d in self.damage)]
        if lost:
            return (f"the records of {', '.join(lost)} in {self.path} are damaged, so no "
                    f"verdict is computed over the other variants alone; {REPAIR}")
        if not self.finished:
            summary = [d for d in self.damage if d.file == "summary.json"]
            if summary and not self.records:  # a run of the old format: its only copy
                return f"{self.path / 'summary.json'} {summary[0].problem}; {REPAIR}"
            return (f"{self.path} is unfinished: its verdicts come when every variant has "
                    "finished (resume it with {resume=True})")
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
    def probes(self) -> dict[str, Mapping[str, np.ndarray]]:
        """Per variant with a sound record, what its probe plan recorded
        (``train.loop.Recorded``: activation statistics, measures, the test set per epoch)."""
        return {name: record.probes for name, record in self.records.items()
                if record.probes}

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


def write_config(run_dir: Path, config: ExperimentConfig) -> None:
    """A run's ``config.json``: the experiment in its file form (read back by ``load_run``
    through ``experiment_from_json``)."""
    atomic_write_json(run_dir / "config.json", config.to_dict())


def run_folder(path: Path, runs_dir: Path) -> Path:
    """``path`` as given, or the run of that name under ``runs_dir`` (as ``list_runs``
    lists them) when ``path`` is not a folder."""
    path, runs_dir = Path(path), Path(runs_dir)
    return runs_dir / path if not path.exists() and (runs_dir / path).is_dir() else path


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
