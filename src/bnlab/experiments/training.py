"""One program (``experiments.sweep.Program``: points × seeds that share a compiled program)
trained into a run folder, each point's record written after every epoch.

    records = train_program(program, config, splits, run_dir=run_dir, run={…})

Each point resumes from its record where it has one: the program starts at the earliest
point's epoch, and a point whose record is ahead waits for it (``train.loop.train_epochs``'s
``starts``), so each epoch of each point trains once; a point that has finished is only
evaluated again. After every epoch each point's TensorBoard files, then its record, then its
derived files are written (``store.writer``); when training ends the test set is evaluated
and every point's final record holds its test metrics. A seed that diverged has NaN test
metrics. An epoch's shuffle and dropout keys derive from the seed and the epoch, so a run
killed at any moment resumes to the numbers of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bnlab.config.experiment import ExperimentConfig
from bnlab.config.sweep import Point
from bnlab.data.datasets import Splits
from bnlab.experiments.observer import SILENT, Observer
from bnlab.experiments.recalibrate import recalibrate_program
from bnlab.experiments.sweep import Program
from bnlab.nn.batchnorm import BatchNorm
from bnlab.store.record import VariantRecord, read_record
from bnlab.store.tensorboard import HParam, TensorBoardLogger, is_histogram_layer
from bnlab.store.writer import VariantWriter
from bnlab.train.checkpoint import restore_state
from bnlab.train.history import History
from bnlab.train.loop import Recorded, train_epochs
from bnlab.train.probes import kernel_layers
from bnlab.train.trainer import SeedBatchTrainer

# Rows of the fixed probe batch for TensorBoard histograms: 128 × features values per layer
# and seed is plenty for a histogram and keeps logging cheap.
PROBE_ROWS = 128


@dataclass
class PointProgress:
    """One point of a program as it trains: its members (indices into the program's), its
    history and probe records so far, the epoch it starts from and its writer."""

    point: Point
    members: list[int]
    history: History
    recorded: Recorded
    first_epoch: int = 0
    writer: VariantWriter | None = None

    def finished(self, epochs: int) -> bool:
        return (self.first_epoch == epochs
                or set(self.history.diverged) >= set(self.history.seeds))


def train_program(program: Program, config: ExperimentConfig, splits: Splits, *,
                  run_dir: Path | None = None, run: Mapping[str, Any] | None = None,
                  compiler_options: Mapping[str, bool | int | str] | None = None,
                  observer: Observer = SILENT) -> list[VariantRecord]:
    """Train every member (point × seed) of ``program`` for ``config.epochs`` epochs in one
    compiled program; one ``VariantRecord`` per point, as its final record holds it. With
    ``run_dir`` each point resumes from its record there and is written as it trains
    (module docstring); ``run``: the run's config and environment as it started, kept in
    every record. ``observer`` hears ``compiled`` and each point's ``epoch``."""
    trainer = program.trainer(splits, epochs=config.epochs,
                              compiler_options=compiler_options, probe=config.probe,
                              augmentation=config.augment)
    model = program.points[0].build()
    dense = tuple(model.layer_names[i] for i in kernel_layers(model))
    points = [PointProgress(p, program.of(p), History(program.seeds),
                            Recorded(program.seeds, config.probe, dense))
              for p in program.points]
    state, compile_seconds = _resumed(trainer, points, run_dir)
    done = all(p.finished(config.epochs) for p in points)
    seconds = trainer.compile(state, training=not done, batch_statistics=(
        ("val",) if trainer.model.has_batchnorm else ()))
    observer.compiled(program.label(), seconds)
    if run_dir is not None:
        for p in points:
            p.writer = VariantWriter(
                run_dir, p.point.name, run=run or {},
                compile_seconds=compile_seconds.get(p.point.name, seconds),
                board=None if p.finished(config.epochs) else _board(run_dir, config, p,
                                                                    trainer.steps))
    with contextlib.ExitStack() as stack:
        for p in points:
            if p.writer is not None:
                stack.callback(p.writer.close, completed=False)
        state = _train_epochs(trainer, state, points, config, splits, observer)
        for p in points:
            if p.writer is not None:
                p.writer.close()
    test_loss, test_accuracy = trainer.evaluate(state, "test")
    host_state = trainer.saved(state)
    records = []
    for p in points:
        lost = np.array([seed in p.history.diverged for seed in program.seeds])
        test = (np.where(lost, np.nan, test_loss[p.members]),
                np.where(lost, np.nan, test_accuracy[p.members]))
        if p.writer is None:
            records.append(VariantRecord(p.point.name, p.history.epochs, p.history, seconds,
                                         test_loss=test[0], test_accuracy=test[1],
                                         probes=dict(p.recorded.arrays)))
        else:
            records.append(p.writer.save(_rows(host_state, p.members), p.history,
                                         p.recorded.arrays, test=test))
    if config.recalibrate_batches and run_dir is not None and trainer.model.has_batchnorm:
        recalibrate_program(trainer, state, program, config.recalibrate_batches, run_dir,
                            max(p.history.epochs for p in points))
    return records


def _train_epochs(trainer: SeedBatchTrainer, state, points: list[PointProgress],
                  config: ExperimentConfig, splits: Splits, observer: Observer):
    """The epochs left to train, each point's record and files written after each one;
    returns the final state."""
    probe_images = jnp.asarray(splits.x_val[:PROBE_ROWS])
    logging = any(p.writer is not None and p.writer.board is not None for p in points)
    starts = [p.first_epoch for p in points for _ in p.members]
    gone = [i for p in points for i, seed in zip(p.members, p.history.seeds, strict=True)
            if seed in p.history.diverged]
    for record in train_epochs(trainer, state, epochs=config.epochs, start_epoch=min(starts),
                               diverged=gone, starts=starts):
        state = record.state
        activations = (trainer.probe(state, probe_images, is_histogram_layer) if logging
                       else {})
        host_state = trainer.saved(state) if any(p.writer for p in points) else None
        for p in points:
            own = record.of_members(p.members)
            if not own.trained.all() or p.finished(config.epochs):  # every seed diverged
                continue  # before: its record ended there, as a run's does
            p.history.append(own)
            new_probes = p.recorded.append(own)
            if p.writer is not None:
                if p.writer.board is not None:  # before the record, which lists its bytes
                    p.writer.board.log_epoch(
                        record.epoch - 1, own.metrics, p.point.optimizer.learning_rate,
                        {layer: values[p.members] for layer, values in activations.items()})
                    p.writer.board.log_records(record.epoch - 1, new_probes)
                p.writer.save(_rows(host_state, p.members), p.history, p.recorded.arrays)
            observer.epoch(p.point.name, own)
    return state


def _resumed(trainer: SeedBatchTrainer, points: list[PointProgress],
             run_dir: Path | None) -> tuple[Any, dict[str, float]]:
    """The program's initial state with each point that has a record in ``run_dir``
    restored from it (its history, probe records and first epoch set), as the trainer runs
    it; and the compile seconds those records hold."""
    state = trainer.saved(trainer.init_state())
    compile_seconds = {}
    for p in points:
        folder = None if run_dir is None else run_dir / p.point.name
        if folder is None or not (folder / "checkpoint.safetensors").exists():
            continue
        arrays, record = read_record(folder)
        template = _rows(state, p.members)
        part = restore_state(arrays, template, folder / "checkpoint.safetensors")
        state = jax.tree_util.tree_map(lambda whole, own, m=p.members: _with_rows(whole, m, own),
                                       state, part)
        p.history, p.first_epoch = record.history, record.epoch
        p.recorded.arrays = dict(record.probes)
        if not math.isnan(record.compile_seconds):
            compile_seconds[p.point.name] = record.compile_seconds
    return trainer.restored(state), compile_seconds


def _board(run_dir: Path, config: ExperimentConfig, p: PointProgress,
           steps: int) -> TensorBoardLogger:
    plan = config.probe
    return TensorBoardLogger(run_dir / "tensorboard" / p.point.name, p.history.seeds,
                             variant_hparams(config, p.point),
                             probes=bool(plan.every or plan.measures_every),
                             test=plan.test_each_epoch, steps_per_epoch=steps)


def variant_hparams(config: ExperimentConfig, point: Point) -> dict[str, HParam]:
    """The hyperparameters of ``point`` (a variant, or a sweep's point) in ``config``,
    flat and TensorBoard-typed.

    Optimizer arguments become ``optimizer.<arg>``; the BatchNorm layers are counted in
    ``batch_norm_layers`` and their options summarized in ``batch_norm`` (``"none"``
    without BN; distinct option sets joined by ``" | "``); each sweep axis that applies is
    ``sweep.<key>``.
    """
    bn_layers = [layer for layer in point.build().layers if isinstance(layer, BatchNorm)]
    bn_options = dict.fromkeys(  # ordered set
        " ".join(f"{f.name}={getattr(layer, f.name)}" for f in fields(layer)
                 if f.name != "axis_name")
        for layer in bn_layers)
    values: dict[str, HParam] = {
        "experiment": config.name,
        "dataset": config.dataset,
        "variant": point.variant,
        "model": point.base.model or "layers",
        "optimizer": point.optimizer.name,
        "learning_rate": point.optimizer.learning_rate,
        "batch_size": point.batch_size,
        "epochs": config.epochs,
        "batch_norm_layers": len(bn_layers),
        "batch_norm": " | ".join(bn_options) or "none",
    }
    for key, value in point.optimizer.args.items():
        values[f"optimizer.{key}"] = value if isinstance(value, HParam) else str(value)
    for key, value in point.values:
        values[f"sweep.{key}"] = value if isinstance(value, HParam) else str(value)
    return values


def _rows(state, members: list[int]):
    """The members' rows of every leaf of a host state."""
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[members], state)


def _with_rows(whole: np.ndarray, rows: list[int], part: np.ndarray) -> np.ndarray:
    """``whole`` with ``whole[rows] = part`` (a copy)."""
    whole = np.array(whole)
    whole[rows] = part
    return whole
