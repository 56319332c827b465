"""Run an experiment into the run store: every variant × seed, with its side effects.

For each variant the runner builds the model and optimizer from the config, trains all its
seeds in one ``train.trainer.SeedBatchTrainer`` through the IO-free ``train.loop``, and
around each epoch record it writes what a run folder holds (``store.runs``): the seeds'
``history.csv``, the checkpoint, TensorBoard scalars and histograms. A run killed at any
moment resumes from its last checkpoint (``resume=True``) to the numbers of an
uninterrupted run: an epoch's shuffle and dropout keys derive from the seed and the epoch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from bnlab.analysis.stats import compare_final_accuracy
from bnlab.config.experiment import ExperimentConfig, VariantConfig, checked
from bnlab.data.datasets import Splits
from bnlab.errors import DivergenceError
from bnlab.io import atomic_write_bytes
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.model import Sequential
from bnlab.store.histories import statistics_csv, write_histories
from bnlab.store.provenance import record_resume, write_environment
from bnlab.store.runs import write_config
from bnlab.store.summary import VariantSummary, write_summary
from bnlab.store.tensorboard import HParam, TensorBoardLogger
from bnlab.train.checkpoint import load_checkpoint, save_checkpoint
from bnlab.train.loop import METRICS, EpochRecord, History, train_epochs
from bnlab.train.trainer import SeedBatchTrainer

# Rows of the fixed probe batch for TensorBoard histograms: 128 × features values per layer
# and seed is plenty for a histogram and keeps logging cheap.
PROBE_ROWS = 128


@dataclass(frozen=True, eq=False)
class VariantResult:
    """A trained variant: its model, the ``History`` of all its seeds, and its test metrics
    ``(seeds,)`` in inference mode after the last epoch."""

    name: str
    model: Sequential
    history: History
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    compile_seconds: float

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.history.seeds

    def summary(self) -> VariantSummary:
        """What ``summary.json`` keeps of it."""
        return VariantSummary(self.seeds, {m: self.history.final(m) for m in METRICS},
                              self.test_loss, self.test_accuracy,
                              tuple(self.history.epoch_seconds), self.compile_seconds)


def variant_hparams(config: ExperimentConfig, variant: VariantConfig) -> dict[str, HParam]:
    """The hyperparameters of ``variant`` in ``config``, flat and TensorBoard-typed.

    Optimizer arguments become ``optimizer.<arg>``; the BatchNorm layers are counted in
    ``batch_norm_layers`` and their options summarized in ``batch_norm`` (``"none"``
    without BN; distinct option sets joined by ``" | "``).
    """
    bn_layers = [layer for layer in variant.build().layers if isinstance(layer, BatchNorm)]
    bn_options = dict.fromkeys(  # ordered set
        " ".join(f"{f.name}={getattr(layer, f.name)}" for f in fields(layer)
                 if f.name != "axis_name")
        for layer in bn_layers)
    values: dict[str, HParam] = {
        "experiment": config.name,
        "dataset": config.dataset,
        "variant": variant.name,
        "model": variant.model or "layers",
        "optimizer": config.optimizer.name,
        "learning_rate": config.optimizer.learning_rate,
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "batch_norm_layers": len(bn_layers),
        "batch_norm": " | ".join(bn_options) or "none",
    }
    for key, value in config.optimizer.args.items():
        values[f"optimizer.{key}"] = value if isinstance(value, HParam) else str(value)
    return values


def train_variant(
    variant: VariantConfig,
    config: ExperimentConfig,
    splits: Splits,
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    tensorboard_dir: Path | None = None,
    compiler_options: Mapping[str, bool | int | str] | None = None,
    on_compiled: Callable[[str, float], None] | None = None,
    on_epoch: Callable[[str, EpochRecord, History], None] | None = None,
) -> VariantResult:
    """Train all ``config.seed_list`` seeds of ``variant`` for ``config.epochs`` epochs.

    With ``checkpoint`` (a path stem) the state is saved after every epoch; with ``resume``
    training restarts from it. With ``tensorboard_dir`` each epoch's scalars and histograms of
    the layers' outputs on a fixed probe batch (the first ``PROBE_ROWS`` validation images)
    go to TensorBoard event files. ``on_compiled(name, seconds)`` is called once compiled,
    ``on_epoch(name, record, history)`` after each epoch's files are written.
    """
    model = variant.build(splits.x_train.shape[1:])
    trainer = SeedBatchTrainer(
        model, config.optimizer.build(), batch_size=config.batch_size, x_train=splits.x_train,
        y_train=splits.y_train, seeds=config.seed_list,
        evaluation={"val": (splits.x_val, splits.y_val), "test": (splits.x_test, splits.y_test)},
        compiler_options=compiler_options)
    state = trainer.init_state()
    history = History(trainer.seeds)
    first_epoch = 0
    if resume and checkpoint is not None and checkpoint.with_suffix(".safetensors").exists():
        saved, first_epoch, metadata = load_checkpoint(checkpoint, trainer.saved(state))
        state = trainer.restored(saved)
        history = History(trainer.seeds, {m: np.asarray(metadata["history"][m])[:, :first_epoch]
                                          for m in METRICS},
                          list(metadata["epoch_seconds"])[:first_epoch])
    compile_seconds = trainer.compile(state)
    if on_compiled:
        on_compiled(variant.name, compile_seconds)
    probe_images = jnp.asarray(splits.x_val[:PROBE_ROWS])
    board = (TensorBoardLogger(tensorboard_dir, trainer.seeds, variant_hparams(config, variant))
             if tensorboard_dir is not None else contextlib.nullcontext())
    with board:
        try:
            for record in train_epochs(trainer, state, epochs=config.epochs,
                                       start_epoch=first_epoch):
                state = record.state
                history.append(record)
                if tensorboard_dir is not None:  # before the checkpoint: a resume rewrites it
                    board.log_epoch(record.epoch - 1, record.metrics,
                                    config.optimizer.learning_rate,
                                    trainer.probe(state, probe_images))
                if checkpoint is not None:
                    save_checkpoint(checkpoint, trainer.saved(state), epoch=record.epoch,
                                    metadata={"variant": variant.name,
                                              "seeds": list(trainer.seeds),
                                              "epoch_seconds": history.epoch_seconds,
                                              "history": history.per_seed})
                if on_epoch:
                    on_epoch(variant.name, record, history)
        except DivergenceError as err:
            raise DivergenceError(
                f"{variant.name} diverged in epoch {err.epoch} (loss is not finite for "
                f"seed(s) {', '.join(map(str, err.seeds))}); lower optimizer.learning_rate "
                f"(now {config.optimizer.learning_rate:g}) or add BatchNorm",
                epoch=err.epoch, seeds=err.seeds) from None
    test_loss, test_accuracy = trainer.evaluate(state, "test")
    return VariantResult(variant.name, model, history, test_loss, test_accuracy,
                         compile_seconds)


def run_experiment(
    config: ExperimentConfig,
    splits: Splits,
    run_dir: Path,
    *,
    resume: bool = False,
    compiler_options: Mapping[str, bool | int | str] | None = None,
    on_compiled: Callable[[str, float], None] | None = None,
    on_epoch: Callable[[str, EpochRecord], None] | None = None,
    on_resume: Callable[[list[str]], None] | None = None,
) -> list[VariantResult]:
    """Train every variant × seed of ``config`` and keep everything in ``run_dir``.

    Writes ``config.json`` and ``environment.json`` first; after every epoch each seed's
    ``history.csv`` and the variant's checkpoint (so an interrupted run loses at most the
    epoch in progress and resumes with ``resume=True``); ``statistics.csv`` per variant and
    ``summary.json`` at the end. A resume is recorded in ``environment.json``; ``on_resume``
    gets the ways its environment differs from the one the run started in (empty if none).
    A ``config`` built in code goes through the file checks first (``checked``), so that the
    run reads back.
    """
    config = checked(config)
    if resume:
        changes = record_resume(run_dir, config.seed_list)
        if on_resume:
            on_resume(changes)
    else:
        write_config(run_dir, config)
        write_environment(run_dir, config.seed_list, splits)

    def save_epoch(name: str, record: EpochRecord, history: History) -> None:
        write_histories(run_dir / name, config.seed_list, history.per_seed)
        if on_epoch:
            on_epoch(name, record)

    results = []
    for variant in config.variants:
        result = train_variant(
            variant, config, splits, checkpoint=run_dir / variant.name / "checkpoint",
            resume=resume, tensorboard_dir=run_dir / "tensorboard" / variant.name,
            compiler_options=compiler_options, on_compiled=on_compiled, on_epoch=save_epoch)
        # Again from the final history: a resumed variant may have no epoch left to train
        # and its CSVs may lag the checkpoint by the epoch during which the run was killed.
        write_histories(run_dir / variant.name, config.seed_list, result.history.per_seed)
        atomic_write_bytes(run_dir / variant.name / "statistics.csv",
                           statistics_csv(result.history.per_seed).encode())
        results.append(result)
    write_summary(run_dir, {r.name: r.summary() for r in results}, compare_final_accuracy(
        {r.name: r.history.per_seed for r in results}, config.epochs))
    return results
