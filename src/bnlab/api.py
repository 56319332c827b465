"""bnlab from Python: the notebook's workflow, end to end.

    import bnlab
    bnlab.configure_jax()                       # optional: every CPU core, compilation cache
    data = bnlab.load_fashion_mnist()           # the real data, verified (Splits)
    model = bnlab.model("bn_after")             # or bnlab.Sequential([...]) of any layers
    bnlab.summary(model)                        # Keras's summary, as data; HTML in Jupyter
    history = bnlab.fit(model, data.x_train, data.y_train, epochs=10,
                        validation_data=(data.x_val, data.y_val))
    history.history["val_accuracy"]             # Keras's History.history
    bnlab.plot_curves({"bn_after": history})    # a Matplotlib Figure
    run = bnlab.run("seed", seeds=5)            # a whole experiment into the run store
    run.comparisons()                           # the seed-paired verdicts, as data

Everything here is a thin composition of the library's layers: the same data chain and errors
as the ``bnlab`` command, the same trainer and epoch loop as the experiment runner. Only
``configure_jax`` changes global state (JAX's configuration), and says so.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optax
from matplotlib.figure import Figure
from rich.console import Console

from bnlab.analysis.stats import PairedComparison, compare_final_accuracy
from bnlab.config.checks import failing_at
from bnlab.config.experiment import (
    ExperimentConfig,
    checked,
    load_experiment,
    with_overrides,
)
from bnlab.config.optimizer import parse_optimizer
from bnlab.config.small_batch import small_batch_warnings
from bnlab.data.datasets import DATASETS, Splits
from bnlab.errors import BnlabWarning, ConfigError
from bnlab.experiments.recalibrate import Recalibration, recalibrate_run
from bnlab.experiments.resume import VariantPlan
from bnlab.experiments.runner import run_experiment
from bnlab.export.exporter import Exported, checked_format, default_path, export_member
from bnlab.export.trained import trained_member
from bnlab.io import cache_folder
from bnlab.nn.model import Sequential
from bnlab.nn.summary import ModelSummary, summarize
from bnlab.nn.zoo import get_model
from bnlab.report.console import new_console, run_overview
from bnlab.report.figures import run_figures
from bnlab.report.html import write_report as html_report
from bnlab.report.plots import learning_curves
from bnlab.report.progress import TrainingProgress, load_showing_downloads
from bnlab.store.lock import RunLock
from bnlab.store.reader import find_resumable, load_run
from bnlab.store.runs import Run, new_run_dir
from bnlab.store.summary import sweep_points
from bnlab.train.engine import TrainState
from bnlab.train.loop import History, train_epochs
from bnlab.train.trainer import SeedBatchTrainer

__all__ = ["Fitted", "cache_folder", "compare", "configure_jax", "export_model", "fit",
           "load_fashion_mnist", "load_run", "model", "plot_curves", "recalibrate", "run",
           "show", "summary", "write_report"]


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def configure_jax(*, cpu_devices: int | None = 0, compilation_cache: bool = True,
                  cache_dir: Path | str | None = None) -> bool:
    """Set JAX up as the ``bnlab`` command does; **changes JAX's global configuration**, so
    call it right after ``import bnlab``, before anything computes with JAX.

    - ``cpu_devices``: the CPU backend gets this many devices (``0``: one per core this
      process may use, ``available_cpus()``; ``None``: leave JAX's choice), so that the seeds
      of a run train side by side on every core. Skipped when the environment already chose
      (``JAX_NUM_CPU_DEVICES``, or XLA_FLAGS' ``--xla_force_host_platform_device_count``) or
      when JAX has started; the return value says whether the count was set. The count
      decides how seeds are grouped, so float rounding, not results, may differ between
      machines with different core counts.
    - ``compilation_cache``: JAX's persistent compilation cache goes to
      ``cache_folder(cache_dir) / "jax"``, so a rerun skips most compilation.
    """
    import jax

    set_devices = False
    chosen = ("xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
              or jax.config.jax_num_cpu_devices != -1)
    if cpu_devices is not None and not chosen:
        try:
            jax.config.update("jax_num_cpu_devices", cpu_devices or available_cpus())
            set_devices = True
        except RuntimeError:  # JAX's backends are already initialized
            pass
    if compilation_cache:
        jax.config.update("jax_compilation_cache_dir", str(cache_folder(cache_dir) / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return set_devices


def load_fashion_mnist(*, data_dir: Path | str | None = None,
                       cache_dir: Path | str | None = None, download: bool = True,
                       progress: bool = True) -> Splits:
    """The real Fashion-MNIST in the notebook's split (``Splits``: ``x_train (55000, 28, 28)
    uint8``, ``x_val`` the first 5,000 training images, ``x_test``, int32 labels).

    The files come from ``data_dir`` only when given; else from the cache, Debian's
    ``dataset-fashion-mnist``, or a download (when ``download``) from the canonical mirrors,
    every file's digest verified. A missing or damaged file is a ``DataError`` naming it and
    the fix. ``progress`` shows a bar while downloading.
    """
    return load_showing_downloads("fashion_mnist", data_dir=data_dir, cache_dir=cache_dir,
                                  download=download, progress=progress)


def model(name: str) -> Sequential:
    """The notebook's model ``name``: ``baseline``, ``bn_after`` or ``bn_before``
    (``bnlab.nn.zoo``; ``docs/reference.md`` lists their layers)."""
    if not isinstance(name, str):
        raise ConfigError(f"model: give a preset name (baseline, bn_after, bn_before), got "
                          f"{type(name).__name__}")
    return get_model(name)


def _as_model(value: Sequential | str, where: str) -> Sequential:
    """A ``Sequential``, or the preset of that name; anything else is a ``ConfigError``."""
    if isinstance(value, Sequential):
        return value
    if isinstance(value, str):
        return get_model(value)
    raise ConfigError(f"{where}: give a bnlab.Sequential or a preset name (baseline, bn_after, "
                      f"bn_before), got {type(value).__name__}")


def summary(model: Sequential | str) -> ModelSummary:
    """The summary of ``model`` (or of the preset of that name) as data: rows, Keras and
    PyTorch counts, BatchNorm variables with their trainable flags. It prints as Keras's
    table and shows as HTML in Jupyter."""
    return summarize(_as_model(model, "summary"))


@dataclass(repr=False, kw_only=True)
class Fitted(History):
    """What ``fit`` returns: the ``History`` of its seeds (``.history`` is Keras's dict),
    the model, and the trained state of every seed (``state``: ``TrainState`` of NumPy arrays,
    leaves ``(seeds, …)``)."""

    model: Sequential
    state: TrainState
    compile_seconds: float
    _trainer: SeedBatchTrainer = field(repr=False)
    _trained_state: TrainState = field(repr=False)  # as the trainer holds it (padded seeds)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> dict[str, float | np.ndarray]:
        """Inference-mode ``{"loss", "accuracy"}`` on ``x``, ``y`` (Keras's ``evaluate``):
        floats for one seed, ``(seeds,)`` arrays for several."""
        loss, accuracy = self._trainer.evaluate_arrays(self._trained_state, x, y)
        if len(self.seeds) == 1:
            return {"loss": float(loss[0]), "accuracy": float(accuracy[0])}
        return {"loss": loss, "accuracy": accuracy}


def fit(model: Sequential | str, x: np.ndarray, y: np.ndarray, *, epochs: int = 1,
        batch_size: int = 32, optimizer: str | optax.GradientTransformation = "sgd",
        learning_rate: float = 1e-3, seed: int = 42, seeds: int = 1,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None, verbose: int = 1,
        compiler_options: Mapping[str, Any] | None = None) -> Fitted:
    """Train ``model`` (a ``Sequential``, or a preset's name) on ``x`` (images: uint8
    pixels, scaled by 1/255 on the device, or floats used as given), ``y`` (integer labels),
    as Keras's ``model.fit``.

    ``optimizer`` is an optax optimizer, or an optax name built with ``learning_rate`` (the
    default is the notebook's SGD at 1e-3). ``seeds`` is a count, as in an experiment file:
    that many runs train in one program, with seeds ``seed, seed+1, …`` (the result's
    ``.seeds``), each its own initialization, shuffle order and dropout. With
    ``validation_data`` every epoch ends with an inference-mode evaluation on it and, for a
    model with BatchNorm, one with batch statistics (``val_batchstats_loss``,
    ``val_batchstats_accuracy`` in ``per_seed``: the train/inference gap). ``verbose``: 1 a
    live progress bar, 2 a Keras line per epoch, 0 nothing. A seed whose
    loss becomes non-finite is recorded in ``.diverged`` (epoch and step) and its metrics are
    NaN from then on, while the other seeds train on (Keras prints ``nan`` and goes on).
    """
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1),
                             ("seeds", seeds, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"fit: {name} must be an integer ≥ {low}, got {value!r}")
    model = _as_model(model, "fit")
    if isinstance(optimizer, str):
        fail = failing_at("fit", "")
        optimizer = parse_optimizer({"name": optimizer, "learning_rate": learning_rate},
                                    fail).build()
    elif not isinstance(optimizer, optax.GradientTransformation):
        raise ConfigError(f"fit: optimizer must be an optax optimizer (optax.sgd(1e-3)) or its "
                          f"name ('sgd'), got {type(optimizer).__name__}")
    if validation_data is not None and (not isinstance(validation_data, tuple | list)
                                        or len(validation_data) != 2):
        raise ConfigError("fit: validation_data must be a pair (x_val, y_val)")
    evaluation = {} if validation_data is None else {"val": tuple(validation_data)}
    trainer = SeedBatchTrainer(model, optimizer, batch_size=batch_size, x_train=x, y_train=y,
                               seeds=range(seed, seed + seeds), evaluation=evaluation,
                               compiler_options=compiler_options)
    state = trainer.init_state()
    history = History(trainer.seeds)
    with TrainingProgress(epochs, verbose=verbose) as progress:
        compile_seconds = trainer.compile(state, batch_statistics=(
            tuple(evaluation) if model.has_batchnorm else ()))
        progress.compiled(model.name, compile_seconds)
        for record in train_epochs(trainer, state, epochs=epochs,
                                   validation="val" if evaluation else None):
            state = record.state
            history.append(record)
            progress.epoch(model.name, record)
    return Fitted(history.seeds, history.per_seed, history.epoch_seconds, history.diverged,
                  model=model,
                  state=trainer.saved(state), compile_seconds=compile_seconds,
                  _trainer=trainer, _trained_state=state)


def run(experiment: str | Path | ExperimentConfig, *, seeds: int | None = None,
        epochs: int | None = None, runs_dir: Path | str = "runs", resume: bool = False,
        retry_diverged: bool = False, data: Splits | None = None,
        data_dir: Path | str | None = None, cache_dir: Path | str | None = None,
        download: bool = True, verbose: int = 1, settings: Sequence[str] = ()) -> Run:
    """Run an experiment into the run store and return it as a ``Run``, as ``bnlab run``.

    ``experiment`` is a TOML file, a preset name (``"seed"``, ``"lr-robustness"``) or an
    ``ExperimentConfig``; one with a ``[sweep]`` runs its points (docs/sweeps.md). ``seeds``
    / ``epochs`` override its own; ``settings`` are ``bnlab run --set`` lines
    (``["optimizer.learning_rate=0.1"]``). ``data`` trains on given ``Splits`` (e.g.
    ``load_fashion_mnist().subset(train=6424)``) instead of loading the experiment's dataset.
    ``resume`` continues, or repairs, the newest unfinished or damaged run of exactly this
    experiment under ``runs_dir``, retraining only what is unfinished or damaged (and with
    ``retry_diverged`` what diverged); a note names each way this environment differs from
    the one it started in. A run's folder is locked while it trains. ``verbose`` as in ``fit``.
    Nothing is written before the experiment, the data and
    every argument have been checked.
    """
    config = (experiment if isinstance(experiment, ExperimentConfig)
              else load_experiment(experiment, settings))
    config = checked(with_overrides(config, seeds=seeds, epochs=epochs))
    progress = TrainingProgress(config.epochs, verbose=verbose)
    if data is None:
        data = load_showing_downloads(config.dataset, data_dir=data_dir, cache_dir=cache_dir,
                                      download=download, progress=verbose > 0)
    for line in small_batch_warnings(config, len(data.y_train)):
        warnings.warn(line, BnlabWarning, stacklevel=2)
    runs_dir = Path(runs_dir)
    if retry_diverged and not resume:
        raise ConfigError("run: retry_diverged retrains the diverged variants of a run being "
                          "resumed; add resume=True")
    run_dir = (find_resumable(runs_dir, config, data, retry_diverged=retry_diverged) if resume
               else new_run_dir(runs_dir, config.name))

    def on_resume(changes: list[str]) -> None:
        for change in changes:
            progress.console.print(f"note: resuming with {change}; the finished epochs were "
                                   "trained in the other environment (environment.json "
                                   "records both)", markup=False)

    def on_plan(plans: Mapping[str, VariantPlan], repaired: list[str]) -> None:
        for line in repaired:
            progress.console.print(f"repair: {line}", markup=False)
        for name, plan in plans.items():
            progress.console.print(f"{name}: {plan.reason}", markup=False)

    with progress:
        run_experiment(config, data, run_dir, resume=resume, retry_diverged=retry_diverged,
                       on_compiled=progress.compiled, on_epoch=progress.epoch,
                       on_resume=on_resume, on_plan=on_plan,
                       figures=run_figures(config.name, sweep_points(config)))
    return load_run(run_dir)


def recalibrate(source: Run | Path | str, *, batches: int = 200, data: Splits | None = None,
                data_dir: Path | str | None = None, cache_dir: Path | str | None = None,
                download: bool = True) -> list[Recalibration]:
    """Recompute a finished run's BatchNorm statistics over ``batches`` training batches, as
    ``bnlab recalibrate`` (``experiments.recalibrate``: fvcore's PreciseBN): each variant's
    ``recalibrated`` checkpoint is written beside its trained one, and each ``Recalibration``
    holds the validation and test loss and accuracy per seed ``before`` and ``after``.
    ``data`` as in ``run``. The run's folder is locked meanwhile."""
    stored = source if isinstance(source, Run) else load_run(source)
    if data is None:
        data = load_showing_downloads(stored.config.dataset, data_dir=data_dir,
                                      cache_dir=cache_dir, download=download, progress=False)
    with RunLock(stored.path):
        return recalibrate_run(stored.path, stored.config, data, batches)


def export_model(source: Run | Path | str, out: Path | str | None = None, *,
                 variant: str | None = None, seed: int | None = None, fold: bool = False,
                 recalibrated: bool = False, format: str = "onnx", data: Splits | None = None,
                 data_dir: Path | str | None = None, cache_dir: Path | str | None = None,
                 download: bool = True) -> Exported:
    """Write one trained member of a finished run, as ``bnlab export`` (docs/deploy.md):
    ``variant`` (default: the first with BatchNorm) and ``seed`` (default: the first), from
    its checkpoint or its ``recalibrated`` one, folded if ``fold``, as ``format`` ``"onnx"``
    (verified by onnxruntime against bnlab on the test images of ``data``, loaded as in
    ``run`` when not given), ``"keras"`` or ``"torch"``. ``out`` defaults to
    ``<run>/<variant>-seed<seed>[-folded].<suffix>``. A model still in training, a diverged
    seed or a damaged checkpoint is a ``BnlabError``, and nothing is written."""
    checked_format(format)
    stored = source if isinstance(source, Run) else load_run(source)
    member = trained_member(stored, variant, seed, recalibrated=recalibrated)
    images = None
    if format == "onnx":
        if data is None:
            data = load_showing_downloads(stored.config.dataset, data_dir=data_dir,
                                          cache_dir=cache_dir, download=download,
                                          progress=False)
        images = data.x_test.astype(np.float32) / 255.0
    return export_member(member, Path(out) if out is not None else default_path(
        member, stored.path, format, fold), format=format, fold=fold,
        class_names=DATASETS[stored.config.dataset].class_names, images=images)


def _histories(source: Run | Path | str | History | Mapping[str, History],
               where: str) -> Run | dict[str, History]:
    """A ``Run`` (a path is loaded), or ``{name: History}`` (one history named by its
    model)."""
    if isinstance(source, str | Path):
        return load_run(source)
    if isinstance(source, Run):
        return source
    if isinstance(source, History):
        return {source.model.name if isinstance(source, Fitted) else "model": source}
    if isinstance(source, Mapping) and all(isinstance(h, History) for h in source.values()):
        return dict(source)
    raise ConfigError(f"{where}: give a Run, a run folder, a History or {{name: History}}, "
                      f"got {type(source).__name__}")


def plot_curves(source: Run | Path | str | History | Mapping[str, History], *,
                title: str = "") -> Figure:
    """Loss and accuracy per epoch, training and validation, as a Matplotlib ``Figure``
    (shown inline as a cell's value in Jupyter; ``figure.savefig(path)`` writes it) of a
    ``Run`` (or run folder), a ``History`` or ``{name: History}``. With several seeds: the
    mean and its 95% confidence band."""
    source = _histories(source, "plot_curves")
    if isinstance(source, Run):
        histories, title = source.histories, title or source.name
    else:
        histories = source
    return learning_curves({name: h.per_seed for name, h in histories.items()}, title=title)


def compare(source: Run | Path | str | Mapping[str, History]) -> list[PairedComparison]:
    """The seed-paired verdicts on the final validation accuracy of every pair of models
    (Holm-adjusted), as data: a ``Run``'s (or run folder's), or those of ``{name: History}``
    from ``fit`` over the same seeds."""
    source = _histories(source, "compare")
    if isinstance(source, Run):
        return source.comparisons()
    histories = source
    epochs = {h.epochs for h in histories.values()}
    if len(epochs) != 1 or any("val_accuracy" not in h.per_seed for h in histories.values()):
        raise ConfigError("compare: give histories of the same number of epochs, each fitted "
                          "with validation_data")
    if len({h.seeds for h in histories.values()}) != 1:
        raise ConfigError("compare: the histories were trained over different seeds "
                          f"({'; '.join(f'{n}: {h.seeds}' for n, h in histories.items())}); "
                          "a seed-paired test needs the same seed and seeds in every fit")
    return compare_final_accuracy({n: h.per_seed for n, h in histories.items()}, epochs.pop())


def show(source: Run | Path | str, *, console: Console | None = None) -> None:
    """Print a run's results table and verdicts, as ``bnlab show`` (in Jupyter as HTML)."""
    stored = source if isinstance(source, Run) else load_run(source)
    (console or new_console()).print(run_overview(stored))


def write_report(runs: Run | Sequence[Run], out: Path | str) -> Path:
    """Write the self-contained HTML report of ``runs`` to ``out`` (as ``bnlab report``);
    returns its path."""
    runs = [runs] if isinstance(runs, Run) else list(runs)
    return html_report(runs, Path(out))

