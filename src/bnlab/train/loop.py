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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import jax
import numpy as np

from bnlab.errors import ConfigError
from bnlab.train.engine import TrainState
from bnlab.train.probes import ProbePlan
from bnlab.train.trainer import SeedBatchTrainer


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch of a batch of members (the trainer's seeds, in order).

    epoch: 1-based, of ``epochs``; steps: training steps in it; seconds: wall time of its
    training and validation. metrics: ``{"loss", "accuracy"[, "val_loss", "val_accuracy"]:
    (members,) float64}``, NaN for a member that has diverged or did not train. diverged:
    the members (0-based indices) that diverged in this epoch, each with its 1-based step
    (the first whose loss was not finite); seeds: each member's seed. trained:
    ``(members,)`` bool, the members that trained this epoch (all of them unless
    ``train_epochs`` was given ``starts``).
    state: the member-stacked state after it, as the trainer runs it (padded seeds included;
    ``trainer.saved(state)`` drops them); valid until the next record is asked for, whose
    epoch consumes it. probes: what the trainer's probe plan recorded in the epoch
    (``probes.probe_records``, each leaf ``(members, …)``), and with its
    ``test_each_epoch`` the inference-mode ``{"test": {"loss", "accuracy": (members,)}}``;
    ``{}`` without a plan.
    """

    epoch: int
    epochs: int
    steps: int
    seconds: float
    metrics: Mapping[str, np.ndarray]
    state: TrainState
    diverged: Mapping[int, int] = field(default_factory=dict)
    trained: np.ndarray | None = None
    seeds: tuple[int, ...] = ()
    probes: Mapping = field(default_factory=dict)

    def of_members(self, members: Sequence[int]) -> EpochRecord:
        """This record for the members at ``members`` only (renumbered 0, 1, …), e.g. the
        seeds of one sweep point; ``state`` stays the whole batch's."""
        index = {member: i for i, member in enumerate(members)}
        return replace(self, metrics={m: v[list(members)] for m, v in self.metrics.items()},
                       diverged={index[m]: s for m, s in self.diverged.items() if m in index},
                       trained=None if self.trained is None else self.trained[list(members)],
                       seeds=tuple(self.seeds[m] for m in members) if self.seeds else (),
                       probes=jax.tree_util.tree_map(lambda v: v[list(members)], self.probes))


def train_epochs(trainer: SeedBatchTrainer, state: TrainState, *, epochs: int,
                 start_epoch: int = 0, validation: str | None = "val",
                 diverged: Iterable[int] = (),
                 starts: Sequence[int] | None = None,
                 batch_statistics: bool = True) -> Iterator[EpochRecord]:
    """Train epochs ``start_epoch + 1 … epochs`` of ``state`` and yield a record after each.

    With ``validation`` (the name of one of the trainer's evaluation sets) every epoch ends
    with an inference-mode evaluation on it, as Keras's ``validation_data``, and, for a model
    with BatchNorm and unless not ``batch_statistics``, one with batch statistics
    (``GAP_METRICS``: batches of the training batch size, ``trainer.evaluate``). A member whose
    loss becomes non-finite is reported in the record of that epoch (``record.diverged``),
    stops updating, and its metrics are NaN from then on, while the others train on; the
    loop ends after the epoch in which the last member diverged. ``diverged``: the members
    (indices) that had diverged before ``start_epoch``. ``starts``: each member's own first
    epoch (0-based, ≥ ``start_epoch``; default ``start_epoch`` for all): a member whose
    record is ahead of the others' (a resumed sweep killed between two checkpoints) keeps
    its state until the others reach it, so every member trains each of its epochs once.
    """
    if validation is not None and validation not in trainer.evaluation:
        raise ConfigError(f"no evaluation data named {validation!r} to validate on; the "
                          f"trainer has {', '.join(trainer.evaluation) or 'none'}")
    members = len(trainer.seeds)
    first = np.full(members, start_epoch) if starts is None else np.asarray(starts)
    if first.shape != (members,) or (first < start_epoch).any():
        raise ConfigError(f"starts: give one first epoch ≥ {start_epoch} per member "
                          f"({members}), got {list(first)}")
    gone = set(diverged)
    for epoch in range(start_epoch, epochs):
        if gone >= set(range(members)):
            return
        trained = first <= epoch
        active = trained & ~np.isin(np.arange(members), list(gone))
        start = time.perf_counter()
        state, loss, accuracy, diverged_step, probes = trainer.train_epoch(state, epoch, active)
        metrics = {"loss": loss, "accuracy": accuracy}
        if validation is not None:
            metrics["val_loss"], metrics["val_accuracy"] = trainer.evaluate(state, validation)
            if batch_statistics and trainer.model.has_batchnorm:
                metrics["val_batchstats_loss"], metrics["val_batchstats_accuracy"] = (
                    trainer.evaluate(state, validation, batch_statistics=True))
        if trainer.probe_plan.test_each_epoch and "test" in trainer.evaluation:
            test_loss, test_accuracy = trainer.evaluate(state, "test")
            probes = {**probes, "test": {"loss": test_loss, "accuracy": test_accuracy}}
        seconds = time.perf_counter() - start
        new = {member: int(step) + 1 for member, step in enumerate(diverged_step)
               if step >= 0 and active[member]}
        gone |= set(new)
        lost = np.isin(np.arange(members), list(gone)) | ~trained
        metrics = {name: np.where(lost, np.nan, values.astype(np.float64))
                   for name, values in metrics.items()}
        ended = np.where(lost & ~np.isin(np.arange(members), list(new)), 0, trainer.steps)
        for member, step in new.items():
            ended[member] = step - 1  # the records from the state that gave that loss on
        yield EpochRecord(epoch + 1, epochs, trainer.steps, seconds, metrics, state, new,
                          trained, trainer.seeds, _cut(probes, ended, lost, trainer.probe_plan))



@dataclass
class Recorded:
    """What a probe plan (``train.probes.ProbePlan``) recorded over the epochs of a batch of
    seeds, as flat arrays: ``arrays[name]: (seeds, records, …)`` named

        activations/<input>/layer   (seeds, n, 7)          STATISTICS over all values
        activations/<input>/units   (seeds, n, units, 3)   UNIT_STATISTICS per tracked unit
        activations/steps           (n,)                   the global step of each record
        measures/<quantity>         (seeds, m, …)          landscape (probes.probe_records)
        measures/ics/<dense>        (seeds, m)             ICS of each Dense layer by name
        measures/ics_cosine/<dense> (seeds, m)
        measures/steps              (m,)
        test/loss, test/accuracy    (seeds, epochs)        with test_each_epoch
        test/steps                  (epochs,)

    (a global step counts the steps taken: a record at step k sees the state after k
    steps, before step k + 1's update; the test set is evaluated after each epoch). A
    seed's records after it diverged are NaN. ``append`` adds an epoch's ``EpochRecord``.
    """

    seeds: tuple[int, ...]
    plan: ProbePlan
    dense_layers: tuple[str, ...] = ()  # the model's Dense layers, in order (ICS columns)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def append(self, record: EpochRecord) -> dict[str, np.ndarray]:
        """Add an epoch's records (``record.probes``); returns that epoch's flat arrays."""
        first = (record.epoch - 1) * record.steps
        flat: dict[str, np.ndarray] = {}
        for name, (layer, units) in record.probes.get("activations", {}).items():
            flat[f"activations/{name}/layer"] = layer
            flat[f"activations/{name}/units"] = units
        if record.probes.get("activations"):  # a model without hidden layers records none
            flat["activations/steps"] = first + np.arange(0, record.steps, self.plan.every)
        for name, values in record.probes.get("measures", {}).items():
            if name in ("ics", "ics_cosine"):
                names = self.dense_layers or [f"layer_{k}" for k in range(values.shape[-1])]
                for k, layer in enumerate(names):
                    flat[f"measures/{name}/{layer}"] = values[..., k]
            else:
                flat[f"measures/{name}"] = values
        if "measures" in record.probes:
            flat["measures/steps"] = first + np.arange(0, record.steps,
                                                       self.plan.measures_every)
        for name, values in record.probes.get("test", {}).items():
            flat[f"test/{name}"] = np.asarray(values)[:, None]
        if "test" in record.probes:
            flat["test/steps"] = np.array([record.epoch * record.steps])
        flat = {name: np.asarray(values, np.int64 if name.endswith("/steps") else np.float32)
                for name, values in flat.items()}
        for name, values in flat.items():
            axis = 0 if name.endswith("/steps") else 1
            self.arrays[name] = (values if name not in self.arrays else
                                 np.concatenate([self.arrays[name], values], axis=axis))
        return flat


def _cut(probes: Mapping, ended: np.ndarray, lost: np.ndarray, plan: ProbePlan) -> dict:
    """``probes`` (leaves ``(members, records, …)``) with NaN in every record taken at or
    after step ``ended[member]`` of the epoch: from the state whose loss was not finite on,
    or all of them (``0``) for a member that did not train or had diverged before; the test
    set's ``(members,)`` metrics NaN where ``lost``, as the validation metrics."""
    cut: dict = {}
    for group, every in (("activations", plan.every), ("measures", plan.measures_every)):
        if group in probes:
            def masked(values, every=every):
                steps = np.arange(values.shape[1]) * every
                keep = steps[None, :] < ended[:, None]
                return np.where(keep.reshape(keep.shape + (1,) * (values.ndim - 2)),
                                np.asarray(values, np.float32), np.nan)

            cut[group] = jax.tree_util.tree_map(masked, probes[group])
    if "test" in probes:
        cut["test"] = {name: np.where(lost, np.nan, np.asarray(values, np.float64))
                       for name, values in probes["test"].items()}
    return cut
