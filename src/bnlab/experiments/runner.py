"""Run an experiment into the run store: every variant × seed, with its side effects.

For each variant the runner builds the model and optimizer from the config, trains all its
seeds in one ``train.trainer.SeedBatchTrainer`` through the IO-free ``train.loop``, and
around each epoch record it writes what a run folder holds (``store.runs``): the seeds'
``history.csv``, the checkpoint, TensorBoard scalars and histograms. A seed that diverges
is recorded (epoch and step) and the others train on. A run holds its folder's lock
(``store.lock``) while it trains.

A run killed at any moment resumes from its last checkpoints (``resume=True``) to the
numbers of an uninterrupted run: an epoch's shuffle and dropout keys derive from the seed and
the epoch. A resume is also the repair of a damaged run (``resume_plan``): each variant whose
verified checkpoint is sound continues from it (or, finished, is only evaluated again), its
CSV files rewritten from the checkpoint's record; a variant whose checkpoint or TensorBoard
files are damaged or missing is retrained from the start, its old files moved to
``.replaced/<time>/``; damaged run files are restored from the checkpoints' copies.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from bnlab.config.experiment import ExperimentConfig, VariantConfig, checked
from bnlab.data.datasets import Splits
from bnlab.errors import BnlabError
from bnlab.io import atomic_write_bytes, atomic_write_json, read_json
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.model import Sequential
from bnlab.store.histories import statistics_csv, write_histories
from bnlab.store.lock import RunLock
from bnlab.store.provenance import record_resume, write_environment
from bnlab.store.runs import REPAIR, Run, load_run, saved_variant, write_config
from bnlab.store.summary import VariantSummary, divergences_to_json, verdicts, write_summary
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
                              tuple(self.history.epoch_seconds), self.compile_seconds,
                              dict(self.history.diverged))


@dataclass(frozen=True)
class VariantPlan:
    """What a resume does with one variant: ``action`` is ``"train"`` (not started),
    ``"continue"`` (from ``from_epoch``), ``"keep"`` (finished and sound: evaluated again,
    its derived files rewritten) or ``"retrain"`` (from the start); ``reason`` says why."""

    action: str
    reason: str
    from_epoch: int = 0


# Files a resume rewrites from a sound checkpoint; damage elsewhere in a variant's record
# (its checkpoint, its TensorBoard files) can only be repaired by training it again.
REWRITTEN = ("history.csv", "statistics.csv", "checkpoint.json")


def resume_plan(run: Run, *, retry_diverged: bool = False) -> dict[str, VariantPlan]:
    """For every variant of ``run``, what resuming it does (``VariantPlan``)."""
    plans = {}
    for variant in run.config.variants:
        name = variant.name
        damage = [d for d in run.damage if d.variant == name]
        lost = [d for d in damage if not d.file.endswith(REWRITTEN)]
        saved = run.saved.get(name)
        if lost:
            plans[name] = VariantPlan("retrain", f"{lost[0]}; retraining it from epoch 0")
        elif saved is None:
            started = (run.path / name).exists()
            plans[name] = (VariantPlan("retrain", "its record is damaged; retraining it from "
                                                  "epoch 0") if started
                           else VariantPlan("train", "not started"))
        elif saved.history.diverged and retry_diverged:
            plans[name] = VariantPlan("retrain", "diverged; retrying it from epoch 0 as asked")
        elif saved.epoch == run.config.epochs or (
                saved.history.diverged and set(saved.history.diverged) >= set(
                    saved.history.seeds)):
            repaired = f" ({', '.join(d.file for d in damage)} rewritten)" if damage else ""
            diverged = " (diverged; not retrained without {retry_diverged})" if (
                saved.history.diverged) else ""
            plans[name] = VariantPlan("keep", f"finished{diverged}{repaired}", saved.epoch)
        else:
            plans[name] = VariantPlan("continue", f"continuing from epoch {saved.epoch}/"
                                                  f"{run.config.epochs}", saved.epoch)
    return plans


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
    run_copy: Mapping[str, Any] | None = None,
    compiler_options: Mapping[str, bool | int | str] | None = None,
    on_compiled: Callable[[str, float], None] | None = None,
    on_epoch: Callable[[str, EpochRecord, History], None] | None = None,
) -> VariantResult:
    """Train all ``config.seed_list`` seeds of ``variant`` for ``config.epochs`` epochs.

    With ``checkpoint`` (a path stem) the state is saved after every epoch, with the
    history, divergences and ``run_copy`` (copies of the run's config and environment) in its
    metadata; with ``resume`` training restarts from it. With ``tensorboard_dir`` each
    epoch's scalars and histograms of the layers' outputs on a fixed probe batch (the first
    ``PROBE_ROWS`` validation images) go to TensorBoard event files. ``on_compiled(name,
    seconds)`` is called once compiled, ``on_epoch(name, record, history)`` after each
    epoch's files are written. A seed that diverged has NaN test metrics.
    """
    model = variant.build(splits.x_train.shape[1:])
    trainer = SeedBatchTrainer(
        model, config.optimizer.build(), batch_size=config.batch_size, x_train=splits.x_train,
        y_train=splits.y_train, seeds=config.seed_list,
        evaluation={"val": (splits.x_val, splits.y_val), "test": (splits.x_test, splits.y_test)},
        compiler_options=compiler_options)
    state = trainer.init_state()
    history = History(trainer.seeds)
    first_epoch, compile_seconds = 0, None
    if resume and checkpoint is not None and checkpoint.with_suffix(".safetensors").exists():
        saved, first_epoch, metadata = load_checkpoint(checkpoint, trainer.saved(state))
        state = trainer.restored(saved)
        record = saved_variant(metadata)
        history, compile_seconds = record.history, record.compile_seconds
    finished = first_epoch == config.epochs or set(history.diverged) >= set(trainer.seeds)
    seconds = trainer.compile(state, training=not finished)
    compile_seconds = seconds if compile_seconds is None else compile_seconds
    if on_compiled:
        on_compiled(variant.name, seconds)

    def save(state) -> None:
        save_checkpoint(checkpoint, trainer.saved(state), epoch=history.epochs,
                        metadata={"variant": variant.name, "seeds": list(trainer.seeds),
                                  "epoch_seconds": history.epoch_seconds,
                                  "history": {m: v for m, v in history.per_seed.items()},
                                  "diverged": divergences_to_json(history.diverged),
                                  "compile_seconds": compile_seconds,
                                  "run": dict(run_copy or {})})

    probe_images = jnp.asarray(splits.x_val[:PROBE_ROWS])
    board = (TensorBoardLogger(tensorboard_dir, trainer.seeds, variant_hparams(config, variant))
             if tensorboard_dir is not None and not finished else contextlib.nullcontext())
    with board:
        for record in train_epochs(trainer, state, epochs=config.epochs,
                                   start_epoch=first_epoch, diverged=history.diverged):
            state = record.state
            history.append(record)
            if tensorboard_dir is not None:  # before the checkpoint: a resume rewrites it
                board.log_epoch(record.epoch - 1, record.metrics,
                                config.optimizer.learning_rate,
                                trainer.probe(state, probe_images))
            if checkpoint is not None:
                save(state)
            if on_epoch:
                on_epoch(variant.name, record, history)
    if finished and checkpoint is not None:
        save(state)  # rewrites its JSON copy, which may have been damaged
    test_loss, test_accuracy = trainer.evaluate(state, "test")
    lost = np.array([seed in history.diverged for seed in trainer.seeds])
    return VariantResult(variant.name, model, history, np.where(lost, np.nan, test_loss),
                         np.where(lost, np.nan, test_accuracy), compile_seconds)


def run_experiment(
    config: ExperimentConfig,
    splits: Splits,
    run_dir: Path,
    *,
    resume: bool = False,
    retry_diverged: bool = False,
    compiler_options: Mapping[str, bool | int | str] | None = None,
    on_compiled: Callable[[str, float], None] | None = None,
    on_epoch: Callable[[str, EpochRecord], None] | None = None,
    on_resume: Callable[[list[str]], None] | None = None,
    on_plan: Callable[[dict[str, VariantPlan], list[str]], None] | None = None,
    figures: Callable[[Path, Mapping[str, History]], Sequence[Path]] | None = None,
    command: list[str] | None = None,
) -> list[VariantResult]:
    """Train every variant × seed of ``config`` and keep everything in ``run_dir``, holding
    its lock (``store.lock.RunLock``).

    Writes ``config.json`` and ``environment.json`` first; after every epoch each seed's
    ``history.csv`` and the variant's checkpoint (so an interrupted run loses at most the
    epoch in progress and resumes with ``resume=True``); ``statistics.csv`` per variant and
    ``summary.json`` at the end. With ``resume`` the run folder is checked (``load_run``)
    and repaired as ``resume_plan`` says; ``on_plan(plans, repaired run files)`` hears the
    plan before anything trains. A resume is recorded in ``environment.json``;
    ``on_resume`` gets the ways its environment differs from the one the run started in
    (empty if none). ``retry_diverged`` retrains the variants that diverged. ``command``: the
    shell command that started a new run, kept in ``environment.json``. ``figures(run_dir,
    histories)`` draws the run's figures once every variant has finished and returns their
    paths, which ``summary.json`` lists (so that a missing one is known). A ``config``
    built in code goes through the file checks first (``checked``), so that the run reads
    back.
    """
    config = checked(config)
    with RunLock(run_dir) as lock:
        if resume:
            plans, started = _prepare_resume(run_dir, config, splits, retry_diverged, on_plan,
                                             on_resume, lock.took_over)
        else:
            plans = {v.name: VariantPlan("train", "new run") for v in config.variants}
            write_config(run_dir, config)
            started = write_environment(run_dir, config.seed_list, splits, command=command)
        run_copy = {"config": config.to_dict(), "environment": started}

        def save_epoch(name: str, record: EpochRecord, history: History) -> None:
            write_histories(run_dir / name, config.seed_list, history.per_seed)
            if on_epoch:
                on_epoch(name, record)

        results = []
        for variant in config.variants:
            plan = plans[variant.name]
            if plan.action == "retrain":
                _move_aside(run_dir, variant.name)
            result = train_variant(
                variant, config, splits, checkpoint=run_dir / variant.name / "checkpoint",
                resume=plan.action in ("continue", "keep"),
                tensorboard_dir=run_dir / "tensorboard" / variant.name, run_copy=run_copy,
                compiler_options=compiler_options, on_compiled=on_compiled,
                on_epoch=save_epoch)
            # Again from the final history: a resumed variant may have no epoch left to train
            # and its CSVs may lag the checkpoint by the epoch during which the run was killed.
            write_histories(run_dir / variant.name, config.seed_list, result.history.per_seed)
            atomic_write_bytes(run_dir / variant.name / "statistics.csv",
                               statistics_csv(result.history.per_seed).encode())
            results.append(result)
        histories = {r.name: r.history for r in results}
        comparisons, left_out = verdicts(histories, config.epochs)
        drawn = figures(run_dir, histories) if figures else []
        write_summary(run_dir, {r.name: r.summary() for r in results}, comparisons, left_out,
                      figures=[str(Path(p).relative_to(run_dir)) for p in drawn])
    return results


def _prepare_resume(run_dir: Path, config: ExperimentConfig, splits: Splits,
                    retry_diverged: bool, on_plan, on_resume,
                    took_over: Mapping[str, Any] | None) -> tuple[dict[str, VariantPlan],
                                                                 dict[str, Any]]:
    """Check the run, restore its damaged run files, record the resume; returns the plans
    and the environment the run started in."""
    run = load_run(run_dir)
    if run.config != config:
        raise BnlabError(f"{run_dir} is a run of another configuration; resume it with the "
                         "file and overrides it was started with")
    plans = resume_plan(run, retry_diverged=retry_diverged)
    repaired = []
    if took_over is not None:
        repaired.append(f"took over the lock of PID {took_over.get('pid', '?')} on "
                        f"{took_over.get('host', '?')} (since {took_over.get('since', '?')}), "
                        "which was stopped without releasing it")
    own = {d.file for d in run.damage if d.variant is None}
    if "config.json" in own:
        write_config(run_dir, config)
        repaired.append("config.json restored from the checkpoints' copy")
    if "environment.json" in own:
        if run.environment:
            atomic_write_json(run_dir / "environment.json", run.environment)
            repaired.append("environment.json restored from the checkpoints' copy")
        else:
            write_environment(run_dir, config.seed_list, splits,
                              note="environment.json was damaged and no copy survived: the "
                                   "environment the run started in is unknown")
            repaired.append("environment.json rewritten (the start environment is lost)")
    if "summary.json" in own:
        repaired.append("summary.json recomputed")
    if on_plan:
        on_plan(plans, repaired)
    changes = record_resume(run_dir, config.seed_list)
    if on_resume:
        on_resume(changes)
    started = read_json(run_dir / "environment.json", fix=REPAIR)
    return plans, {k: v for k, v in started.items() if k != "resumes"}


def _move_aside(run_dir: Path, variant: str) -> None:
    """Move a variant's old files to ``.replaced/<time>/`` before it is retrained."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    for source, target in ((run_dir / variant, Path(variant)),
                           (run_dir / "tensorboard" / variant, Path("tensorboard") / variant)):
        if source.exists():
            destination = run_dir / ".replaced" / stamp / target
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, destination)
