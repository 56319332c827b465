"""Run an experiment's variants × seeds; all seeds of a variant train in one compiled program.

For each variant the per-seed ``TrainState`` and keys are stacked on a leading seed axis and
the epoch program of ``train.engine`` is mapped over it (``train.seeds.over_seeds``: spread
over the devices, vmapped on each): every seed has its own initialization, shuffle order and
dropout keys, exactly as if it ran alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.metadata
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bnlab.analysis.stats import compare_final_accuracy
from bnlab.data.datasets import Splits
from bnlab.errors import BnlabError, DivergenceError
from bnlab.experiments.config import ExperimentConfig, VariantConfig
from bnlab.nn.model import Sequential
from bnlab.report.tensorboard import TensorBoardLogger, variant_hparams
from bnlab.store import (
    atomic_write_bytes,
    atomic_write_json,
    history_csv,
    read_json,
    statistics_csv,
)
from bnlab.train.checkpoint import load_checkpoint, save_checkpoint
from bnlab.train.engine import (
    RunKeys,
    TrainState,
    compiler_options,
    init_train_state,
    make_evaluate,
    make_train_epoch,
    scale_pixels,
    steps_per_epoch,
)
from bnlab.train.seeds import over_seeds, pad_seeds, seeds_to_run

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
# Rows of the fixed probe batch for TensorBoard histograms: 128 × features values per layer
# and seed is plenty for a histogram, and keeps logging ≈ 0.1 s per epoch for 5 seeds.
PROBE_ROWS = 128


@dataclass(frozen=True)
class EpochLog:
    """One epoch of one variant; every metric is ``(seeds,)``."""

    variant: str
    epoch: int  # 1-based
    epochs: int
    steps: int
    seconds: float
    metrics: dict[str, np.ndarray]


@dataclass
class VariantResult:
    """A variant's outcome: ``history[metric]: (seeds, epochs)``, test metrics ``(seeds,)``."""

    name: str
    model: Sequential
    seeds: tuple[int, ...]
    history: dict[str, np.ndarray]
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    epoch_seconds: list[float]
    compile_seconds: float


class VariantTrainer:
    """Compiled epoch and evaluation programs for one variant and a batch of seeds.

    The state it trains holds the seeds as the programs run them, ``run_seeds =
    seeds_to_run(seeds)``: padded once, by repeating the last seed, to fill every device (5
    seeds on 2 → 6), so that no program pads and un-pads. Metrics come back for ``seeds``
    only; ``saved`` and ``restored`` convert the state for a checkpoint, which holds ``seeds``
    only.
    """

    def __init__(self, variant: VariantConfig, config: ExperimentConfig, splits: Splits,
                 seeds: Sequence[int]) -> None:
        self.model = variant.build(splits.x_train.shape[1:])
        self.optimizer = config.optimizer.build()
        self.seeds = tuple(seeds)
        self.run_seeds = seeds_to_run(self.seeds)
        self.keys = [RunKeys.from_seed(s) for s in self.run_seeds]
        self.x_train = jnp.asarray(splits.x_train)
        self.y_train = jnp.asarray(splits.y_train)
        self.n_train = len(splits.y_train)
        self.steps = steps_per_epoch(self.n_train, config.batch_size)
        epoch = make_train_epoch(self.model, self.optimizer, self.n_train, config.batch_size)
        self._epoch = jax.jit(over_seeds(epoch, (0, None, None, 0, 0), len(self.run_seeds)),
                              donate_argnums=0)
        self._evaluate = jax.jit(over_seeds(make_evaluate(self.model), (0, 0, None, None),
                                            len(self.run_seeds)))
        self._eval_shapes = {len(splits.y_val): splits.x_val, len(splits.y_test): splits.x_test}
        self._evaluate_compiled: dict[int, Callable] = {}
        self._probe: Callable | None = None
        self.compile_seconds = 0.0

    def init_state(self) -> TrainState:
        """Seed-stacked initial state: leaves have a leading ``(run seeds,)`` axis."""
        init_keys = jnp.stack([k.init for k in self.keys])
        return jax.vmap(lambda k: init_train_state(self.model, self.optimizer, k))(init_keys)

    def saved(self, state: TrainState) -> TrainState:
        """``state`` as NumPy arrays of ``seeds`` only (the padding dropped), to save."""
        return jax.tree_util.tree_map(lambda a: np.asarray(a)[: len(self.seeds)], state)

    def restored(self, state: TrainState) -> TrainState:
        """A ``saved`` state padded again as ``init_state`` pads (the last seed repeated)."""
        return pad_seeds(state, len(self.run_seeds))

    def epoch_keys(self, epoch: int) -> tuple[jax.Array, jax.Array]:
        """``(shuffle, dropout)`` keys of a 0-based epoch, each ``(run seeds,)``."""
        pairs = [k.epoch(epoch) for k in self.keys]
        return jnp.stack([p[0] for p in pairs]), jnp.stack([p[1] for p in pairs])

    def compile(self, state: TrainState) -> float:
        """Compile the epoch and the evaluations (validation and test shapes) ahead of time;
        returns the seconds it took."""
        start = time.perf_counter()
        shuffle, dropout = self.epoch_keys(0)
        options = compiler_options()
        self._epoch = self._epoch.lower(state, self.x_train, self.y_train, shuffle,
                                        dropout).compile(options)
        # The training data where the program wants them (on every device the seeds spread
        # over), once, rather than a copy per epoch.
        _, images, labels, _, _ = self._epoch.input_shardings[0]
        self.x_train = jax.device_put(self.x_train, images)
        self.y_train = jax.device_put(self.y_train, labels)
        for n, images in self._eval_shapes.items():
            self._evaluate_compiled[n] = self._evaluate.lower(
                state.params, state.bn_state, images, np.zeros(n, np.int32)).compile(options)
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    def train_epoch(self, state: TrainState, epoch: int) -> tuple[TrainState, np.ndarray,
                                                                   np.ndarray]:
        """One epoch (0-based ``epoch``) → ``(state, loss (seeds,), accuracy (seeds,))``."""
        shuffle, dropout = self.epoch_keys(epoch)
        state, metrics = self._epoch(state, self.x_train, self.y_train, shuffle, dropout)
        return state, self._own(metrics.loss), self._own(metrics.accuracy)

    def _own(self, values: jax.Array) -> np.ndarray:
        """``(run seeds, …)`` → ``(seeds, …)`` on the host: the padding seeds dropped."""
        return np.asarray(values)[: len(self.seeds)]

    def probe(self, state: TrainState, images: jax.Array) -> dict[str, np.ndarray]:
        """Inference-mode intermediates on a fixed probe batch ``images: (rows, …) uint8``:
        ``{layer_name or "<dense>/pre_activation": (seeds, rows, features)}``."""
        if self._probe is None:
            def intermediates(params, bn_state, x):
                return self.model.apply_with_intermediates(params, bn_state, scale_pixels(x),
                                                           train=False)[2]
            self._probe = jax.jit(over_seeds(intermediates, (0, 0, None),
                                             len(self.run_seeds)))
        outputs = self._probe(state.params, state.bn_state, images)
        return {name: self._own(values) for name, values in outputs.items()}

    def placed_for_evaluation(self, images: np.ndarray,
                              labels: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """``images``, ``labels`` where the compiled evaluation wants them (on every device
        the seeds spread over), once, so that each epoch's evaluation copies nothing."""
        compiled = self._evaluate_compiled.get(len(labels))
        if compiled is None:  # not compiled ahead (``compile`` not run): JAX places them
            return jnp.asarray(images), jnp.asarray(labels)
        _, _, at_images, at_labels = compiled.input_shardings[0]
        return jax.device_put(images, at_images), jax.device_put(labels, at_labels)

    def evaluate(self, state: TrainState, images: jax.Array,
                 labels: jax.Array) -> tuple[np.ndarray, np.ndarray]:
        """Inference-mode ``(loss (seeds,), accuracy (seeds,))`` on ``images`` / ``labels``."""
        evaluate = self._evaluate_compiled.get(len(labels), self._evaluate)
        loss, accuracy = evaluate(state.params, state.bn_state, images, labels)
        return self._own(loss), self._own(accuracy)


def train_variant(
    variant: VariantConfig,
    config: ExperimentConfig,
    splits: Splits,
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    tensorboard_dir: Path | None = None,
    on_compiled: Callable[[str, float], None] | None = None,
    on_epoch: Callable[[EpochLog, dict[str, np.ndarray]], None] | None = None,
) -> VariantResult:
    """Train all ``config.seed_list`` seeds of ``variant`` for ``config.epochs`` epochs.

    With ``checkpoint`` (a path stem) the state is saved after every epoch; with ``resume``
    training restarts from it, which gives the same numbers as an uninterrupted run (the
    shuffle and dropout keys of an epoch derive from the seed and the epoch number).
    With ``tensorboard_dir`` each epoch's scalars and histograms of the layers' outputs on a
    fixed probe batch (the first PROBE_ROWS validation images) go to TensorBoard event files.
    ``on_epoch(log, history)`` is called after each epoch with the history so far.
    """
    trainer = VariantTrainer(variant, config, splits, config.seed_list)
    state = trainer.init_state()
    history = {m: np.zeros((len(trainer.seeds), config.epochs)) for m in METRICS}
    epoch_seconds: list[float] = []
    first_epoch = 0
    if resume and checkpoint is not None and checkpoint.with_suffix(".safetensors").exists():
        state, first_epoch, saved = load_checkpoint(checkpoint, trainer.saved(state))
        state = trainer.restored(state)
        for m in METRICS:
            history[m][:, :first_epoch] = np.asarray(saved["history"][m])[:, :first_epoch]
        epoch_seconds = list(saved["epoch_seconds"])[:first_epoch]
    compile_seconds = trainer.compile(state)
    if on_compiled:
        on_compiled(variant.name, compile_seconds)
    x_val, y_val = trainer.placed_for_evaluation(splits.x_val, splits.y_val)
    probe_images = jnp.asarray(splits.x_val[:PROBE_ROWS])
    board = (TensorBoardLogger(tensorboard_dir, trainer.seeds, variant_hparams(config, variant))
             if tensorboard_dir is not None else contextlib.nullcontext())
    with board:
        for epoch in range(first_epoch, config.epochs):
            start = time.perf_counter()
            state, loss, accuracy = trainer.train_epoch(state, epoch)
            val_loss, val_accuracy = trainer.evaluate(state, x_val, y_val)
            seconds = time.perf_counter() - start
            _check_finite(variant.name, trainer.seeds, epoch, loss, config)
            for metric, values in zip(METRICS, (loss, accuracy, val_loss, val_accuracy),
                                      strict=True):
                history[metric][:, epoch] = values
            epoch_seconds.append(seconds)
            if tensorboard_dir is not None:  # before the checkpoint: a resume rewrites it
                board.log_epoch(epoch, {m: history[m][:, epoch] for m in METRICS},
                                config.optimizer.learning_rate,
                                trainer.probe(state, probe_images))
            if checkpoint is not None:
                save_checkpoint(
                    checkpoint, trainer.saved(state), epoch=epoch + 1,
                    keys={"root": jnp.stack([jax.random.key(s) for s in trainer.seeds])},
                    metadata={"variant": variant.name, "seeds": list(trainer.seeds),
                              "epoch_seconds": epoch_seconds,
                              "history": {m: history[m][:, : epoch + 1] for m in METRICS}})
            if on_epoch:
                on_epoch(EpochLog(variant.name, epoch + 1, config.epochs, trainer.steps,
                                  seconds, {m: history[m][:, epoch] for m in METRICS}),
                         history)
    test_loss, test_accuracy = trainer.evaluate(
        state, *trainer.placed_for_evaluation(splits.x_test, splits.y_test))
    return VariantResult(variant.name, trainer.model, trainer.seeds, history, test_loss,
                         test_accuracy, epoch_seconds, compile_seconds)


def _check_finite(name: str, seeds: Sequence[int], epoch: int, loss: np.ndarray,
                  config: ExperimentConfig) -> None:
    bad = [s for s, value in zip(seeds, loss, strict=True) if not np.isfinite(value)]
    if bad:
        raise DivergenceError(
            f"{name} diverged in epoch {epoch + 1} (loss is not finite for seed(s) "
            f"{', '.join(map(str, bad))}); lower optimizer.learning_rate (now "
            f"{config.optimizer.learning_rate:g}) or add BatchNorm"
        )


def run_experiment(
    config: ExperimentConfig,
    splits: Splits,
    run_dir: Path,
    *,
    resume: bool = False,
    on_compiled: Callable[[str, float], None] | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    on_resume: Callable[[list[str]], None] | None = None,
) -> list[VariantResult]:
    """Train every variant × seed of ``config`` and keep everything in ``run_dir``.

    Writes ``config.json`` and ``environment.json`` first; after every epoch each seed's
    ``history.csv`` and the variant's checkpoint (so an interrupted run loses at most the
    epoch in progress and resumes with ``resume=True``); ``summary.json`` at the end. A resume
    is recorded in ``environment.json`` (``record_resume``); ``on_resume`` gets the ways its
    environment differs from the one the run started in (empty when none).
    """
    if resume:
        changes = record_resume(run_dir, config)
        if on_resume:
            on_resume(changes)
    else:
        atomic_write_json(run_dir / "config.json", config.to_dict())
        atomic_write_json(run_dir / "environment.json", environment(config))
    results = []
    for variant in config.variants:

        def save_epoch(log: EpochLog, history: dict[str, np.ndarray]) -> None:
            write_histories(run_dir / log.variant, config.seed_list, history, log.epoch)
            if on_epoch:
                on_epoch(log)

        result = train_variant(
            variant, config, splits, checkpoint=run_dir / variant.name / "checkpoint",
            resume=resume, tensorboard_dir=run_dir / "tensorboard" / variant.name,
            on_compiled=on_compiled, on_epoch=save_epoch)
        # Again from the final history: a resumed variant may have no epoch left to train
        # and its CSVs may lag the checkpoint by the epoch during which the run was killed.
        write_histories(run_dir / variant.name, config.seed_list, result.history,
                        config.epochs)
        atomic_write_bytes(run_dir / variant.name / "statistics.csv",
                           statistics_csv(result.history).encode())
        results.append(result)
    summary: dict[str, Any] = {
        r.name: {
            "seeds": list(r.seeds),
            "final": {m: r.history[m][:, -1] for m in METRICS},
            "test_loss": r.test_loss,
            "test_accuracy": r.test_accuracy,
            "epoch_seconds": r.epoch_seconds,
            "compile_seconds": r.compile_seconds,
        }
        for r in results
    }
    summary["comparisons"] = [  # seed-paired, final val_accuracy, Holm-adjusted; JSON null = NaN
        {key: (None if isinstance(value, float) and not np.isfinite(value) else value)
         for key, value in dataclasses.asdict(c).items()}
        for c in compare_final_accuracy({r.name: r.history for r in results}, config.epochs)]
    atomic_write_json(run_dir / "summary.json", summary)
    return results


def write_histories(variant_dir: Path, seeds: Sequence[int], history: dict[str, np.ndarray],
                    epochs: int) -> None:
    """Each seed's ``history.csv`` with its first ``epochs`` rows (Keras CSVLogger format)."""
    for i, seed in enumerate(seeds):
        rows = {m: history[m][i, :epochs] for m in METRICS}
        atomic_write_bytes(variant_dir / f"seed-{seed}" / "history.csv",
                           history_csv(rows).encode())


def device_name() -> str:
    """JAX's first device as ``platform:kind``, e.g. ``cpu:cpu`` or ``gpu:NVIDIA H200``."""
    device = jax.devices()[0]
    return f"{device.platform}:{device.device_kind}"


def devices_label() -> str:
    """The devices a run's seeds spread over, e.g. ``gpu:NVIDIA H200`` or ``2 × cpu:cpu``."""
    count = jax.device_count()
    return device_name() if count == 1 else f"{count} × {device_name()}"


def record_resume(run_dir: Path, config: ExperimentConfig) -> list[str]:
    """Append this process's environment to ``environment.json``'s ``resumes`` list (with the
    time) and return how it differs from the environment the run started in, one phrase per
    difference (``"jax 0.11.2 (started with 0.10.2)"``): a resumed run mixes both."""
    path = run_dir / "environment.json"
    started = read_json(path)
    if not isinstance(started, dict):
        raise BnlabError(f"{path} is not a JSON object; the run may be damaged, delete it or "
                         "rerun without --resume")
    now = environment(config)
    changes = [f"{key} {now[key]} (started with {started.get(key, 'unknown')})"
               for key in ("python", "device", "device_count") if started.get(key) != now[key]]
    old_packages = started.get("packages") or {}
    changes += [f"{name} {version or 'not installed'} (started with "
                f"{old_packages.get(name) or 'not installed'})"
                for name, version in now["packages"].items()
                if old_packages.get(name) != version]
    entry = {"at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
             **{k: v for k, v in now.items() if k != "seeds"}}
    atomic_write_json(path, {**started, "resumes": [*started.get("resumes", []), entry]})
    return changes


def environment(config: ExperimentConfig) -> dict[str, object]:
    """Where and with what a run ran: versions, device, seeds."""
    versions = {}
    for package in ("bnlab", "jax", "jaxlib", "optax", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "device": device_name(),
        "device_count": jax.device_count(),
        "seeds": list(config.seed_list),
    }
