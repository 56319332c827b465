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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optax
from matplotlib.figure import Figure
from rich.console import Console, Group
from rich.text import Text

from bnlab.analysis.stats import PairedComparison, compare_final_accuracy
from bnlab.config.checks import failing_at
from bnlab.config.experiment import ExperimentConfig, load_experiment, with_overrides
from bnlab.config.optimizer import parse_optimizer
from bnlab.data.datasets import Splits, load_dataset
from bnlab.errors import ConfigError
from bnlab.experiments.runner import run_experiment
from bnlab.io import cache_folder
from bnlab.nn.model import Sequential
from bnlab.nn.summary import ModelSummary, summarize
from bnlab.nn.zoo import get_model
from bnlab.report.console import results_table, verdict_lines
from bnlab.report.html import write_report as html_report
from bnlab.report.plots import learning_curves
from bnlab.report.progress import DownloadBars, TrainingProgress
from bnlab.store.runs import Run, find_resumable, load_run, new_run_dir
from bnlab.train.engine import TrainState
from bnlab.train.loop import History, train_epochs
from bnlab.train.seeds import one_cpu_device_per_core
from bnlab.train.trainer import SeedBatchTrainer

__all__ = ["Fitted", "cache_folder", "compare", "configure_jax", "fit", "load_fashion_mnist",
           "load_run", "model", "plot_curves", "run", "show", "summary", "write_report"]


def configure_jax(*, cpu_devices: int | None = 0, cache_dir: Path | str | None = None) -> bool:
    """Set JAX up as the ``bnlab`` command does; **changes JAX's global configuration**, so
    call it right after ``import bnlab``, before anything computes with JAX.

    - ``cpu_devices``: the CPU backend gets this many devices (``0``: one per core this
      process may use; ``None``: leave JAX's choice), so that the seeds of a run train side
      by side on every core. Skipped when ``JAX_NUM_CPU_DEVICES`` or XLA_FLAGS' device count
      already chose, or when JAX has started (then it returns ``False``).
    - JAX's persistent compilation cache goes to ``cache_folder(cache_dir) / "jax"``, so a
      rerun skips most compilation.

    Returns whether the CPU device count was set.
    """
    import jax

    set_devices = False
    if cpu_devices is not None:
        set_devices = one_cpu_device_per_core(cpu_devices or None)
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
    datasets = cache_folder(cache_dir) / "datasets"
    with DownloadBars() as bars:
        return load_dataset("fashion_mnist", data_dir=None if data_dir is None else
                            Path(data_dir), cache_dir=datasets, download=download,
                            on_progress=bars if progress else None)


def model(name: str) -> Sequential:
    """The notebook's model ``name``: ``baseline``, ``bn_after`` or ``bn_before``
    (``bnlab.nn.zoo``; ``docs/reference.md`` lists their layers)."""
    return get_model(name)


def summary(model: Sequential) -> ModelSummary:
    """``model``'s summary as data (rows, Keras and PyTorch counts, BatchNorm variables with
    their trainable flags); it prints as Keras's table and shows as HTML in Jupyter."""
    return summarize(model)


@dataclass(repr=False, kw_only=True)
class Fitted(History):
    """What ``fit`` returns: the ``History`` of its seeds (``.history`` is Keras's dict),
    the model, and the trained state of every seed (``state``: ``TrainState`` of NumPy arrays,
    leaves ``(seeds, …)``)."""

    model: Sequential
    state: TrainState
    compile_seconds: float
    trainer: SeedBatchTrainer = field(repr=False)
    trained_state: TrainState = field(repr=False)  # as the trainer holds it (padded seeds)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> dict[str, float | np.ndarray]:
        """Inference-mode ``{"loss", "accuracy"}`` on ``x``, ``y`` (Keras's ``evaluate``):
        floats for one seed, ``(seeds,)`` arrays for several."""
        loss, accuracy = self.trainer.evaluate_arrays(self.trained_state, x, y)
        if len(self.seeds) == 1:
            return {"loss": float(loss[0]), "accuracy": float(accuracy[0])}
        return {"loss": loss, "accuracy": accuracy}


def fit(model: Sequential, x: np.ndarray, y: np.ndarray, *, epochs: int = 1,
        batch_size: int = 32, optimizer: str | optax.GradientTransformation = "sgd",
        learning_rate: float = 1e-3, seed: int = 42, seeds: int = 1,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None, verbose: int = 1,
        compiler_options: Mapping[str, Any] | None = None) -> Fitted:
    """Train ``model`` on ``x`` (images: uint8 pixels, scaled by 1/255 on the device, or
    floats used as given), ``y`` (integer labels), as Keras's ``model.fit``.

    ``optimizer`` is an optax optimizer, or an optax name built with ``learning_rate`` (the
    default is the notebook's SGD at 1e-3). ``seeds`` runs train in one program, with seeds
    ``seed, seed+1, …``: each its own initialization, shuffle order and dropout. With
    ``validation_data`` every epoch ends with an inference-mode evaluation on it.
    ``verbose``: 1 a live progress bar, 2 a Keras line per epoch, 0 nothing. A diverging
    loss is a ``DivergenceError``.
    """
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1),
                             ("seeds", seeds, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"fit: {name} must be an integer ≥ {low}, got {value!r}")
    if isinstance(optimizer, str):
        fail = failing_at("fit", "")
        optimizer = parse_optimizer({"name": optimizer, "learning_rate": learning_rate},
                                    fail).build()
    evaluation = {} if validation_data is None else {"val": tuple(validation_data)}
    trainer = SeedBatchTrainer(model, optimizer, batch_size=batch_size, x_train=x, y_train=y,
                               seeds=range(seed, seed + seeds), evaluation=evaluation,
                               compiler_options=compiler_options)
    state = trainer.init_state()
    history = History(trainer.seeds)
    with TrainingProgress(epochs, verbose=verbose) as progress:
        compile_seconds = trainer.compile(state)
        progress.compiled(model.name, compile_seconds)
        for record in train_epochs(trainer, state, epochs=epochs,
                                   validation="val" if evaluation else None):
            state = record.state
            history.append(record)
            progress.epoch(model.name, record)
    return Fitted(history.seeds, history.per_seed, history.epoch_seconds, model=model,
                  state=trainer.saved(state), compile_seconds=compile_seconds,
                  trainer=trainer, trained_state=state)


def run(experiment: str | Path | ExperimentConfig, *, seeds: int | None = None,
        epochs: int | None = None, runs_dir: Path | str = "runs", resume: bool = False,
        data: Splits | None = None, data_dir: Path | str | None = None,
        cache_dir: Path | str | None = None, download: bool = True, verbose: int = 1) -> Run:
    """Run an experiment into the run store and return it as a ``Run``, as ``bnlab run``.

    ``experiment`` is a TOML file, a preset name (``"seed"``) or an ``ExperimentConfig``;
    ``seeds`` / ``epochs`` override its own. ``data`` trains on given ``Splits`` (e.g.
    ``load_fashion_mnist().subset(train=6424)``) instead of loading the experiment's dataset.
    ``resume`` continues the newest unfinished run of exactly this experiment under
    ``runs_dir``. ``verbose`` as in ``fit``.
    """
    config = (experiment if isinstance(experiment, ExperimentConfig)
              else load_experiment(experiment))
    config = with_overrides(config, seeds=seeds, epochs=epochs)
    if data is None:
        data = load_fashion_mnist(data_dir=data_dir, cache_dir=cache_dir, download=download)
    runs_dir = Path(runs_dir)
    run_dir = find_resumable(runs_dir, config) if resume else new_run_dir(runs_dir, config.name)
    with TrainingProgress(config.epochs, verbose=verbose) as progress:
        run_experiment(config, data, run_dir, resume=resume, on_compiled=progress.compiled,
                       on_epoch=progress.epoch)
    return load_run(run_dir)


def plot_curves(source: Run | History | Mapping[str, History], *, title: str = "") -> Figure:
    """Loss and accuracy per epoch, training and validation, as a Matplotlib ``Figure``
    (shown inline as a cell's value in Jupyter; ``figure.savefig(path)`` writes it). With
    several seeds: the mean and its 95% confidence band."""
    if isinstance(source, Run):
        histories, title = source.histories, title or source.name
    elif isinstance(source, History):
        histories = {"model": source}
    else:
        histories = dict(source)
    return learning_curves({name: h.per_seed for name, h in histories.items()}, title=title)


def compare(source: Run | Mapping[str, History]) -> list[PairedComparison]:
    """The seed-paired verdicts on the final validation accuracy of every pair of models
    (Holm-adjusted), as data: a ``Run``'s, or those of ``fit`` histories trained over the
    same seeds."""
    if isinstance(source, Run):
        return source.comparisons()
    histories = dict(source)
    epochs = {h.epochs for h in histories.values()}
    if len(epochs) != 1 or any("val_accuracy" not in h.per_seed for h in histories.values()):
        raise ConfigError("compare: give histories of the same number of epochs, each fitted "
                          "with validation_data")
    return compare_final_accuracy({n: h.per_seed for n, h in histories.items()}, epochs.pop())


def show(source: Run | Path | str, *, console: Console | None = None) -> None:
    """Print a run's results table and verdicts, as ``bnlab show`` (in Jupyter as HTML)."""
    stored = source if isinstance(source, Run) else load_run(source)
    console = console or Console(highlight=False)
    console.print(Group(results_table(stored),
                        *(Text.from_markup(line) for line in verdict_lines(stored))))


def write_report(runs: Run | Sequence[Run], out: Path | str) -> Path:
    """Write the self-contained HTML report of ``runs`` to ``out`` (as ``bnlab report``);
    returns its path."""
    runs = [runs] if isinstance(runs, Run) else list(runs)
    return html_report(runs, Path(out))

