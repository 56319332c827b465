"""The metrics of finished epochs, as Keras's ``History`` keeps them, and where a seed
diverged. Plain NumPy: a run's record is read back without JAX (``store``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from bnlab.errors import ConfigError

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")  # Keras's History keys
# The validation set normalized with batch statistics (models with BatchNorm): its difference
# from val_accuracy / val_loss is BatchNorm's train/inference gap.
GAP_METRICS = ("val_batchstats_loss", "val_batchstats_accuracy")


class FinishedEpoch(Protocol):
    """What ``History.append`` reads of an epoch (``train.loop.EpochRecord``)."""

    epoch: int
    seconds: float
    metrics: Mapping[str, np.ndarray]
    diverged: Mapping[int, int]


@dataclass(frozen=True)
class Divergence:
    """Where a seed diverged: in ``epoch`` (1-based) at ``step`` (1-based, of the epoch's
    steps), the first step whose training loss was not finite; ``None`` where only the
    epoch is known (a history read back from CSV files alone)."""

    epoch: int
    step: int | None = None

    def __str__(self) -> str:
        return f"epoch {self.epoch}" + (f", step {self.step}" if self.step is not None else "")


@dataclass
class History:
    """The metrics of every finished epoch of a seed batch, as Keras's ``History`` keeps them.

    ``per_seed[metric]: (seeds, epochs)`` holds every value (NaN after a seed diverged),
    ``epoch_seconds`` each epoch's wall time where it was measured (a run read back from its
    CSVs has none), ``diverged`` where each diverged seed did (``Divergence``); ``history`` is
    Keras's
    ``History.history``: ``{metric: [one value per epoch]}`` with the keys of ``METRICS``
    that were measured (the ``val_`` ones need validation data), the seed's own values for
    one seed and the mean over seeds for several. ``epoch`` is Keras's 0-based epoch list.
    """

    seeds: tuple[int, ...]
    per_seed: dict[str, np.ndarray] = field(default_factory=dict)
    epoch_seconds: list[float] = field(default_factory=list)
    diverged: dict[int, Divergence] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.seeds = tuple(self.seeds)
        self.per_seed = {m: np.asarray(v, np.float64).reshape(len(self.seeds), -1)
                         for m, v in self.per_seed.items()}
        self.epoch_seconds = list(self.epoch_seconds)
        self.diverged = dict(self.diverged)

    def append(self, record: FinishedEpoch) -> None:
        """Add one epoch's metrics, seconds and divergences; the record's members are this
        history's seeds, in order (``EpochRecord.of_members`` selects them)."""
        epochs = self.epochs
        for metric, values in record.metrics.items():
            column = np.asarray(values, np.float64).reshape(len(self.seeds), 1)
            # A metric measured from this epoch on (a run resumed by a newer bnlab) is NaN
            # before it.
            previous = self.per_seed.get(metric, np.full((len(self.seeds), epochs), np.nan))
            self.per_seed[metric] = np.concatenate([previous, column], axis=1)
        self.epoch_seconds.append(record.seconds)
        self.diverged.update({self.seeds[member]: Divergence(record.epoch, step)
                              for member, step in record.diverged.items()})

    @property
    def epochs(self) -> int:
        """Epochs recorded so far."""
        return next(iter(self.per_seed.values())).shape[1] if self.per_seed else 0

    @property
    def epoch(self) -> list[int]:
        return list(range(self.epochs))

    @property
    def history(self) -> dict[str, list[float]]:
        return {metric: [float(v) for v in self.per_seed[metric].mean(axis=0)]
                for metric in METRICS if metric in self.per_seed}

    def final(self, metric: str) -> np.ndarray:
        """``metric`` after the last epoch, ``(seeds,)``."""
        if metric not in self.per_seed:
            raise ConfigError(f"no {metric!r} in this history; it has "
                              f"{', '.join(self.per_seed) or 'no epoch yet'} (the val_ metrics "
                              "need validation data)")
        return self.per_seed[metric][:, -1]

    def __repr__(self) -> str:
        seeds = (f"seed {self.seeds[0]}" if len(self.seeds) == 1
                 else f"{len(self.seeds)} seeds, means")
        last = ", ".join(f"{m} {v[-1]:.4f}" for m, v in self.history.items() if v)
        gone = "".join(f"; seed {s} diverged at {d}" for s, d in self.diverged.items())
        return f"History({self.epochs} epochs, {seeds}{': ' + last if last else ''}{gone})"
