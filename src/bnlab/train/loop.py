"""The epoch loop, as a generator of epoch records: no files, no printing.

    trainer.compile(state)
    history = History(trainer.seeds)
    for record in train_epochs(trainer, state, epochs=10, validation="val"):
        history.append(record)          # and whatever else the caller does with an epoch
    final_state = record.state

``bnlab.fit``, the experiment runner (which adds checkpoints, CSV logs and TensorBoard around
it) and the speed benchmark all run this loop; what they do with each record is theirs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from bnlab.errors import ConfigError, DivergenceError
from bnlab.train.engine import TrainState
from bnlab.train.trainer import SeedBatchTrainer

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")  # Keras's History keys


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch of a seed batch.

    epoch: 1-based, of ``epochs``; steps: training steps in it; seconds: wall time of its
    training and validation. metrics: ``{"loss", "accuracy"[, "val_loss", "val_accuracy"]:
    (seeds,) float64}``. state: the seed-stacked state after it, as the trainer runs it (padded
    seeds included; ``trainer.saved(state)`` drops them); valid until the next record is
    asked for, whose epoch consumes it.
    """

    epoch: int
    epochs: int
    steps: int
    seconds: float
    metrics: Mapping[str, np.ndarray]
    state: TrainState


def train_epochs(trainer: SeedBatchTrainer, state: TrainState, *, epochs: int,
                 start_epoch: int = 0, validation: str | None = "val") -> Iterator[EpochRecord]:
    """Train epochs ``start_epoch + 1 … epochs`` of ``state`` and yield a record after each.

    With ``validation`` (the name of one of the trainer's evaluation sets) every epoch ends
    with an inference-mode evaluation on it, as Keras's ``validation_data``. A non-finite
    training loss stops the loop with a ``DivergenceError`` before its epoch is yielded.
    """
    if validation is not None and validation not in trainer.evaluation:
        raise ConfigError(f"no evaluation data named {validation!r} to validate on; the "
                          f"trainer has {', '.join(trainer.evaluation) or 'none'}")
    for epoch in range(start_epoch, epochs):
        start = time.perf_counter()
        state, loss, accuracy = trainer.train_epoch(state, epoch)
        metrics = {"loss": loss, "accuracy": accuracy}
        if validation is not None:
            metrics["val_loss"], metrics["val_accuracy"] = trainer.evaluate(state, validation)
        metrics = {name: values.astype(np.float64) for name, values in metrics.items()}
        seconds = time.perf_counter() - start
        diverged = tuple(s for s, value in zip(trainer.seeds, loss, strict=True)
                         if not np.isfinite(value))
        if diverged:
            raise DivergenceError(
                f"training diverged in epoch {epoch + 1} (loss is not finite for seed(s) "
                f"{', '.join(map(str, diverged))}); lower the learning rate or add BatchNorm",
                epoch=epoch + 1, seeds=diverged)
        yield EpochRecord(epoch + 1, epochs, trainer.steps, seconds, metrics, state)


@dataclass
class History:
    """The metrics of every finished epoch of a seed batch, as Keras's ``History`` keeps them.

    ``per_seed[metric]: (seeds, epochs)`` holds every value, ``epoch_seconds`` each epoch's
    wall time where it was measured (a run read back from its CSVs has none); ``history`` is
    Keras's
    ``History.history``: ``{metric: [one value per epoch]}`` with the keys of ``METRICS``
    that were measured (the ``val_`` ones need validation data), the seed's own values for
    one seed and the mean over seeds for several. ``epoch`` is Keras's 0-based epoch list.
    """

    seeds: tuple[int, ...]
    per_seed: dict[str, np.ndarray] = field(default_factory=dict)
    epoch_seconds: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.seeds = tuple(self.seeds)
        self.per_seed = {m: np.asarray(v, np.float64).reshape(len(self.seeds), -1)
                         for m, v in self.per_seed.items()}
        self.epoch_seconds = list(self.epoch_seconds)

    def append(self, record: EpochRecord) -> None:
        """Add one epoch's metrics and seconds."""
        for metric, values in record.metrics.items():
            column = np.asarray(values, np.float64).reshape(len(self.seeds), 1)
            previous = self.per_seed.get(metric, np.zeros((len(self.seeds), 0)))
            self.per_seed[metric] = np.concatenate([previous, column], axis=1)
        self.epoch_seconds.append(record.seconds)

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
        return f"History({self.epochs} epochs, {seeds}{': ' + last if last else ''})"

