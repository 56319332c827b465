"""Run an experiment into the run store: every variant × seed, with its side effects.

For each variant the runner builds the model and optimizer from the config, trains all its
seeds in one ``train.trainer.SeedBatchTrainer`` through the IO-free ``train.loop``, and
around each epoch record it writes what a run folder holds (``store.runs``): the seeds'
``history.csv``, the checkpoint, TensorBoard scalars and histograms. A seed that diverges
is recorded (epoch and step) and the others train on. A run holds its folder's lock
(``store.lock``) while it trains.

A run killed at any moment resumes from its last checkpoints (``resume=True``) to the
numbers of an uninterrupted run: an epoch's shuffle and dropout keys derive from the seed and
the epoch. A resume is also the repair of a damaged run (``experiments.resume``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bnlab.config.experiment import ExperimentConfig, checked
from bnlab.config.sweep import Point
from bnlab.data.datasets import Splits
from bnlab.experiments.recalibrate import recalibrate_program
from bnlab.experiments.resume import VariantPlan, move_aside, prepare_resume
from bnlab.experiments.sweep import Program, programs
from bnlab.io import atomic_write_bytes
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.model import Sequential
from bnlab.store.histories import statistics_csv, write_histories
from bnlab.store.lock import RunLock
from bnlab.store.provenance import write_environment
from bnlab.store.reader import saved_variant
from bnlab.store.runs import write_config
from bnlab.store.summary import (
    VariantSummary,
    divergences_to_json,
    sweep_points,
    verdicts,
    write_summary,
)
from bnlab.store.tensorboard import HParam, TensorBoardLogger
from bnlab.train.checkpoint import load_checkpoint, save_checkpoint
from bnlab.train.loop import METRICS, EpochRecord, History, Recorded, train_epochs
from bnlab.train.probes import dense_kernels

# Rows of the fixed probe batch for TensorBoard histograms: 128 × features values per layer
# and seed is plenty for a histogram and keeps logging cheap.
PROBE_ROWS = 128


@dataclass(frozen=True, eq=False)
class VariantResult:
    """A trained variant: its model, the ``History`` of all its seeds, its test metrics
    ``(seeds,)`` in inference mode after the last epoch, and what its probe plan recorded
    (``train.loop.Recorded.arrays``)."""

    name: str
    model: Sequential
    history: History
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    compile_seconds: float
    records: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.history.seeds

    def summary(self) -> VariantSummary:
        """What ``summary.json`` keeps of it."""
        return VariantSummary(self.seeds, {m: self.history.final(m) for m in METRICS},
                              self.test_loss, self.test_accuracy,
                              tuple(self.history.epoch_seconds), self.compile_seconds,
                              dict(self.history.diverged))


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


def train_program(
    program: Program,
    config: ExperimentConfig,
    splits: Splits,
    *,
    run_dir: Path | None = None,
    resume: Mapping[str, bool] | None = None,
    run_copy: Mapping[str, Any] | None = None,
    compiler_options: Mapping[str, bool | int | str] | None = None,
    on_compiled: Callable[[str, float], None] | None = None,
    on_epoch: Callable[[str, EpochRecord, History], None] | None = None,
) -> list[VariantResult]:
    """Train every member (point × seed) of ``program`` for ``config.epochs`` epochs in one
    compiled program; one ``VariantResult`` per point.

    With ``run_dir`` each point's state is saved after every epoch in
    ``<run_dir>/<point>/checkpoint``, with its history, divergences and ``run_copy``
    (copies of the run's config and environment) in its metadata, and each epoch's scalars
    and histograms of the layers' outputs on a fixed probe batch (the first ``PROBE_ROWS``
    validation images) go to ``<run_dir>/tensorboard/<point>``. ``resume[point]`` restarts
    a point from its checkpoint: the program starts at the earliest point's epoch and a
    point whose record is ahead waits for it (``train.loop.train_epochs``'s ``starts``), so
    each epoch of each point trains once. ``on_compiled(program.label(), seconds)`` is
    called once compiled, ``on_epoch(point, record, history)`` after each point's epoch
    files are written. A seed that diverged has NaN test metrics.
    """
    trainer = program.trainer(splits, compiler_options=compiler_options, probe=config.probe)
    state = trainer.saved(trainer.init_state())
    histories = {p.name: History(program.seeds) for p in program.points}
    model = program.points[0].build()
    dense_names = tuple(model.layer_names[i] for i in dense_kernels(model))
    recorded = {p.name: Recorded(program.seeds, config.probe, dense_names)
                for p in program.points}
    first_epochs = {p.name: 0 for p in program.points}
    compile_seconds: dict[str, float | None] = {p.name: None for p in program.points}
    for point in program.points:
        stem = None if run_dir is None else run_dir / point.name / "checkpoint"
        if not (resume or {}).get(point.name) or stem is None \
                or not stem.with_suffix(".safetensors").exists():
            continue
        members = program.of(point)
        template = jax.tree_util.tree_map(lambda a, m=members: a[m], state)
        saved, first_epochs[point.name], metadata, records = load_checkpoint(stem, template)
        recorded[point.name].arrays = dict(records)
        state = jax.tree_util.tree_map(
            lambda whole, part, m=members: _with_rows(whole, m, part), state, saved)
        record = saved_variant(metadata)
        histories[point.name], compile_seconds[point.name] = (record.history,
                                                              record.compile_seconds)
    state = trainer.restored(state)

    def finished(point: Point) -> bool:
        history = histories[point.name]
        return (first_epochs[point.name] == config.epochs
                or set(history.diverged) >= set(program.seeds))

    done = all(finished(p) for p in program.points)
    seconds = trainer.compile(state, training=not done, batch_statistics=(
        ("val",) if trainer.model.has_batchnorm else ()))
    for name, value in compile_seconds.items():
        compile_seconds[name] = seconds if value is None else value
    if on_compiled:
        on_compiled(program.label(), seconds)

    def save(point: Point, host_state) -> None:
        """Point's checkpoint from ``host_state``, the whole program's ``trainer.saved``."""
        history = histories[point.name]
        members = program.of(point)
        save_checkpoint(run_dir / point.name / "checkpoint",
                        jax.tree_util.tree_map(lambda a: a[members], host_state),
                        epoch=history.epochs,
                        metadata={"variant": point.name, "seeds": list(program.seeds),
                                  "epoch_seconds": history.epoch_seconds,
                                  "history": {m: v for m, v in history.per_seed.items()},
                                  "diverged": divergences_to_json(history.diverged),
                                  "compile_seconds": compile_seconds[point.name],
                                  "run": dict(run_copy or {})},
                        records=recorded[point.name].arrays)

    probe_images = jnp.asarray(splits.x_val[:PROBE_ROWS])
    plan = config.probe
    boards = {p.name: TensorBoardLogger(run_dir / "tensorboard" / p.name, program.seeds,
                                        variant_hparams(config, p),
                                        probes=bool(plan.every or plan.measures_every),
                                        test=plan.test_each_epoch,
                                        steps_per_epoch=trainer.steps)
              for p in program.points if run_dir is not None and not finished(p)}
    starts = [first_epochs[point.name] for point, _ in program.members]
    gone = [i for point in program.points for i, seed in zip(program.of(point), program.seeds,
                                                             strict=True)
            if seed in histories[point.name].diverged]
    with contextlib.ExitStack() as stack:
        for board in boards.values():
            stack.enter_context(board)
        for record in train_epochs(trainer, state, epochs=config.epochs,
                                   start_epoch=min(starts), diverged=gone, starts=starts):
            state = record.state
            probes = trainer.probe(state, probe_images) if boards else {}
            host_state = trainer.saved(state) if run_dir is not None else None
            for point in program.points:
                members = program.of(point)
                own = record.of_members(members)
                if not own.trained.all() or finished(point):  # every seed diverged before:
                    continue  # its record ended there, as a run's does
                histories[point.name].append(own)
                new_records = recorded[point.name].append(own)
                if point.name in boards:  # before the checkpoint: a resume rewrites it
                    boards[point.name].log_epoch(
                        record.epoch - 1, own.metrics, point.optimizer.learning_rate,
                        {layer: values[members] for layer, values in probes.items()})
                    boards[point.name].log_records(record.epoch - 1, new_records)
                if run_dir is not None:
                    save(point, host_state)
                if on_epoch:
                    on_epoch(point.name, own, histories[point.name])
    if run_dir is not None:
        host_state = trainer.saved(state)
        for point in program.points:
            if first_epochs[point.name] == histories[point.name].epochs or done:
                save(point, host_state)  # rewrites its JSON copy, which may have been damaged
    test_loss, test_accuracy = trainer.evaluate(state, "test")
    if config.recalibrate_batches and run_dir is not None and trainer.model.has_batchnorm:
        recalibrate_program(trainer, state, program, config.recalibrate_batches, run_dir,
                            max(h.epochs for h in histories.values()))
    results = []
    for point in program.points:
        members, history = program.of(point), histories[point.name]
        lost = np.array([seed in history.diverged for seed in program.seeds])
        results.append(VariantResult(
            point.name, point.build(splits.x_train.shape[1:]), history,
            np.where(lost, np.nan, test_loss[members]),
            np.where(lost, np.nan, test_accuracy[members]), compile_seconds[point.name],
            dict(recorded[point.name].arrays)))
    return results


def train_job(program: Program, config: ExperimentConfig, splits: Splits, run_dir: Path,
              run_copy: Mapping[str, Any], *,
              compiler_options: Mapping[str, bool | int | str] | None = None,
              on_compiled: Callable[[str, float], None] | None = None,
              on_epoch: Callable[[str, EpochRecord], None] | None = None
              ) -> list[VariantResult]:
    """``train_program`` into the run folder ``run_dir``, each point resuming from its
    checkpoint where it has one (``run_experiment`` moved aside those to retrain, so on a
    first attempt this is the resume plan; on a retry after a lost worker, the progress that
    attempt saved), each point's histories written after every epoch and, with its
    statistics, once more at the end. What ``run_experiment`` runs for each program, here
    or as a Ray task."""
    def save_epoch(name: str, record: EpochRecord, history: History) -> None:
        write_histories(run_dir / name, config.seed_list, history.per_seed)
        if on_epoch:
            on_epoch(name, record)

    resume = {p.name: (run_dir / p.name / "checkpoint.safetensors").exists()
              for p in program.points}
    results = train_program(program, config, splits, run_dir=run_dir, resume=resume,
                            run_copy=run_copy, compiler_options=compiler_options,
                            on_compiled=on_compiled, on_epoch=save_epoch)
    for result in results:
        # Again from the final history: a resumed point may have no epoch left to train and
        # its CSVs may lag the checkpoint by the epoch during which the run was killed.
        write_histories(run_dir / result.name, config.seed_list, result.history.per_seed)
        atomic_write_bytes(run_dir / result.name / "statistics.csv",
                           statistics_csv(result.history.per_seed).encode())
    return results


# Trains programs elsewhere: (programs, config, splits, run folder, run copy) → each
# program's results as ``train_job`` gives them, in any order.
Executor = Callable[[list[Program], ExperimentConfig, Splits, Path, Mapping[str, Any]],
                    Iterable[list[VariantResult]]]


def _with_rows(whole: np.ndarray, rows: list[int], part: np.ndarray) -> np.ndarray:
    """``whole`` with ``whole[rows] = part`` (a copy)."""
    whole = np.array(whole)
    whole[rows] = part
    return whole


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
    figures: Callable[[Path, Mapping[str, History], Mapping[str, Mapping[str, np.ndarray]]],
                      Sequence[Path]] | None = None,
    command: list[str] | None = None,
    executor: Executor | None = None,
) -> list[VariantResult]:
    """Train every point (variant, or sweep point) × seed of ``config`` and keep everything
    in ``run_dir``, holding its lock (``store.lock.RunLock``); the points train program by
    program (``experiments.sweep.programs``).

    Writes ``config.json`` and ``environment.json`` first; after every epoch each seed's
    ``history.csv`` and each point's checkpoint (so an interrupted run loses at most the
    epoch in progress and resumes with ``resume=True``); ``statistics.csv`` per point and
    ``summary.json`` at the end. With ``resume`` the run folder is checked (``load_run``)
    and repaired as ``resume_plan`` says; ``on_plan(plans, repaired run files)`` hears the
    plan before anything trains. A resume is recorded in ``environment.json``;
    ``on_resume`` gets the ways its environment differs from the one the run started in
    (empty if none). ``retry_diverged`` retrains the points that diverged. ``command``: the
    shell command that started a new run, kept in ``environment.json``. ``figures(run_dir,
    histories, records)`` draws the run's figures once every point has finished (``records``:
    per point, what its probe plan recorded) and returns their paths, which ``summary.json``
    lists (so that a missing one is known). ``executor``
    trains the programs elsewhere (``experiments.ray_cluster.ray_executor``; the callbacks
    ``on_compiled`` and ``on_epoch`` are then not called); by default they train here, one
    after another. A ``config`` built in code goes through the file checks first
    (``checked``), so that the run reads back.
    """
    config = checked(config)
    with RunLock(run_dir) as lock:
        if resume:
            plans, started = prepare_resume(run_dir, config, splits, retry_diverged, on_plan,
                                             on_resume, lock.took_over)
        else:
            plans = {p.name: VariantPlan("train", "new run") for p in config.points}
            write_config(run_dir, config)
            started = write_environment(run_dir, config.seed_list, splits, command=command)
        run_copy = {"config": config.to_dict(), "environment": started}
        jobs = []
        for program in programs(config):
            for point in program.points:
                if plans[point.name].action == "retrain":
                    move_aside(run_dir, point.name)
            # Finished points are only evaluated again: a program of their own, not trained.
            jobs += [part for part in (
                program.subset([p for p in program.points if plans[p.name].action != "keep"]),
                program.subset([p for p in program.points if plans[p.name].action == "keep"]))
                if part.points]
        if executor is None:
            done = (train_job(job, config, splits, run_dir, run_copy,
                              compiler_options=compiler_options, on_compiled=on_compiled,
                              on_epoch=on_epoch) for job in jobs)
        else:
            done = executor(jobs, config, splits, run_dir, run_copy)
        results = {result.name: result for job_results in done for result in job_results}
        results = [results[p.name] for p in config.points]
        histories = {r.name: r.history for r in results}
        comparisons, left_out = verdicts(histories, config.epochs, sweep_points(config))
        drawn = figures(run_dir, histories, {r.name: r.records for r in results}) \
            if figures else []
        write_summary(run_dir, {r.name: r.summary() for r in results}, comparisons, left_out,
                      figures=[str(Path(p).relative_to(run_dir)) for p in drawn])
    return results
