"""A trained run's BatchNorm statistics recomputed (``train.recalibrate``), as a new
checkpoint of the same run:

    <run>/<variant>/recalibrated.safetensors   the state with the recomputed statistics
    <run>/<variant>/recalibrated.json          its metadata: batches, and per seed the
                                               validation and test loss and accuracy
                                               before and after

The trained checkpoint, histories and summary stay as they are: recalibration changes what
inference computes, not the run's record. ``bnlab recalibrate RUN --batches N`` does it for a
finished run; an experiment's ``recalibrate_batches = N`` does it when training ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from bnlab.config.experiment import ExperimentConfig
from bnlab.data.datasets import Splits
from bnlab.errors import ConfigError
from bnlab.experiments.sweep import Program, programs
from bnlab.store.recalibrations import STEM, Recalibration
from bnlab.store.record import nan_as_null, read_record
from bnlab.train.checkpoint import (
    restore_state,
    save_checkpoint,
)
from bnlab.train.engine import TrainState
from bnlab.train.trainer import SeedBatchTrainer


def measured(trainer: SeedBatchTrainer, state: TrainState) -> dict[str, np.ndarray]:
    """Inference-mode validation and test loss and accuracy of every member."""
    val_loss, val_accuracy = trainer.evaluate(state, "val")
    test_loss, test_accuracy = trainer.evaluate(state, "test")
    return {"val_loss": val_loss, "val_accuracy": val_accuracy, "test_loss": test_loss,
            "test_accuracy": test_accuracy}


def recalibrate_program(trainer: SeedBatchTrainer, state: TrainState, program: Program,
                        batches: int, run_dir: Path, epoch: int,
                        wanted: set[str] | None = None) -> list[Recalibration]:
    """Recalibrate ``state`` (as ``trainer`` runs it, after ``epoch`` epochs), save each
    point's ``recalibrated`` checkpoint (of the ``wanted`` points only, when given) and
    return the before/after measures."""
    before = measured(trainer, state)
    new_state = trainer.recalibrate(state, batches)
    after = measured(trainer, new_state)
    host_state = trainer.saved(new_state)
    results = []
    for point in program.points:
        if wanted is not None and point.name not in wanted:
            continue
        members = program.of(point)
        result = Recalibration(point.name, program.seeds, batches,
                               {m: v[members] for m, v in before.items()},
                               {m: v[members] for m, v in after.items()})
        save_checkpoint(run_dir / point.name / STEM,
                        jax.tree_util.tree_map(lambda a, m=members: a[m], host_state),
                        epoch=epoch, metadata={
                            "variant": point.name, "seeds": list(program.seeds),
                            "batches": batches, "batch_size": point.batch_size,
                            "before": {m: nan_as_null(v) for m, v in result.before.items()},
                            "after": {m: nan_as_null(v) for m, v in result.after.items()}})
        results.append(result)
    return results


def recalibrate_run(run_dir: Path, config: ExperimentConfig, splits: Splits, batches: int,
                    compiler_options=None,
                    variants: Sequence[str] | None = None) -> list[Recalibration]:
    """Recalibrate every point with BatchNorm of the finished run in ``run_dir`` (``config``
    its experiment) over ``batches`` training batches of ``splits`` — or only the points of
    ``variants`` (variant or point names) — the others are left as they are (a run with none
    is a ``ConfigError``, and so is a variant named that has none or does not exist). A point
    that is not finished is a ``ConfigError`` before anything is written; a damaged
    checkpoint a ``CheckpointError``."""
    with_bn = recalibrable(config)
    if not with_bn:
        raise ConfigError(f"no variant of {run_dir.name} has a BatchNorm layer: nothing to "
                          "recalibrate")
    wanted = None if variants is None else chosen_points(config, variants)
    jobs = []
    for program in with_bn:
        if wanted is not None and not wanted & {p.name for p in program.points}:
            continue
        trainer = program.trainer(splits, compiler_options=compiler_options)
        template = trainer.saved(trainer.init_state())
        leaves = jax.tree_util.tree_map(np.array, template)
        epochs = set()
        for point in program.points:
            members = program.of(point)
            part = jax.tree_util.tree_map(lambda a, m=members: a[m], template)
            arrays, record = read_record(run_dir / point.name)
            saved = restore_state(arrays, part, run_dir / point.name / "checkpoint.safetensors")
            epoch = record.epoch
            if not record.finished(config.epochs):
                raise ConfigError(f"{run_dir.name}/{point.name} has trained {epoch} of "
                                  f"{config.epochs} epochs; finish it first (bnlab run … "
                                  "--resume)")
            for whole, own in zip(jax.tree_util.tree_leaves(leaves),
                                  jax.tree_util.tree_leaves(saved), strict=True):
                whole[members] = own
            epochs.add(epoch)
        jobs.append((program, trainer, leaves, max(epochs)))
    results = []
    for program, trainer, leaves, epoch in jobs:
        state = trainer.restored(leaves)
        trainer.compile(state, training=False)
        results += recalibrate_program(trainer, state, program, batches, run_dir, epoch,
                                       wanted)
    return results


def recalibrable(config: ExperimentConfig) -> list[Program]:
    """The programs of ``config`` whose model has BatchNorm."""
    return [p for p in programs(config) if p.points[0].build().has_batchnorm]


def chosen_points(config: ExperimentConfig, variants: Sequence[str]) -> set[str]:
    """The points of ``variants`` (a variant's name takes all its points, a point's name
    itself); a name that is neither, or whose points have no BatchNorm, is a
    ``ConfigError`` that lists the ones with BatchNorm."""
    with_bn = {p.name: p for program in recalibrable(config) for p in program.points}
    names = sorted({p.variant for p in with_bn.values()})
    chosen: set[str] = set()
    for name in variants:
        points = {p.name for p in with_bn.values() if name in (p.name, p.variant)}
        if not points:
            known = {p.name for p in config.points} | {v.name for v in config.variants}
            why = "has no BatchNorm layer" if name in known else "is not a variant of the run"
            raise ConfigError(f"variant {name!r} {why}; recalibrate one of "
                              f"{', '.join(names)} {{variant=NAME}}")
        chosen |= points
    return chosen
