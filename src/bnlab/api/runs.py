"""Experiments from Python, as ``bnlab run``, ``sweep`` and ``probe`` run them: each trains
into the run store and returns the ``Run`` read back."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bnlab.analysis.reproduction import Reproduction, reproduction
from bnlab.api.setup import load_data
from bnlab.config.experiment import ExperimentConfig, with_overrides
from bnlab.config.files import load_experiment, with_settings, with_variants
from bnlab.config.small_batch import small_batch_warnings
from bnlab.data.datasets import Splits
from bnlab.errors import ConfigError
from bnlab.experiments.observer import Observer
from bnlab.experiments.ray_cluster import ray_executor, ray_module
from bnlab.experiments.runner import run_experiment
from bnlab.report.figures import run_figures
from bnlab.report.progress import ProgressObserver
from bnlab.store.reader import find_resumable, load_run
from bnlab.store.runs import Run, is_run_folder, new_run_dir, run_folder
from bnlab.store.summary import sweep_points
from bnlab.train.batches import check_batching
from bnlab.train.probes import ProbePlan

Experiment = str | Path | ExperimentConfig


def run(experiment: Experiment, *, seeds: int | None = None, epochs: int | None = None,
        runs_dir: Path | str = "runs", resume: bool = False, retry_diverged: bool = False,
        executor: str = "local", settings: Sequence[str] = (), data: Splits | None = None,
        train_rows: int | None = None, data_dir: Path | str | None = None,
        cache_dir: Path | str | None = None, download: bool = True, verbose: int = 1,
        observer: Observer | None = None, command: Sequence[str] | None = None) -> Run:
    """Run an experiment into the run store and return it as a ``Run``, as ``bnlab run``.

    ``experiment`` is a TOML file, a preset name (``"seed"``, ``"lr-robustness"``) or an
    ``ExperimentConfig``; one with a ``[sweep]`` runs its points (docs/sweeps.md).
    ``settings`` change it for this run (``["optimizer.learning_rate=0.1"]``, as ``bnlab run
    --set``) and ``seeds`` / ``epochs`` override its own. ``executor`` is ``"local"`` (the
    programs train here, one after another) or the address of a Ray cluster (``"auto"``,
    ``"10.0.0.5:6379"``; the ``ray`` extra; ``runs_dir`` must be shared by its nodes).
    ``data`` trains on given ``Splits`` (e.g. ``load_fashion_mnist().subset(train=6424)``)
    instead of loading the experiment's dataset; ``train_rows`` trains on the first rows of
    its training split only (a quick run; the run records its data, and a resume needs the
    same). ``resume`` continues, or repairs, the newest
    unfinished or damaged run of exactly this experiment under ``runs_dir``, retraining only
    what is unfinished or damaged (and with ``retry_diverged`` what diverged); a note names
    each way this environment differs from the one it started in. A run's folder is locked
    while it trains. ``verbose`` as in ``fit``; ``observer`` (``experiments.observer``)
    hears every event instead; ``command``: the shell command to keep in
    ``environment.json``. Nothing is written before the experiment, the data and every
    argument have been checked.
    """
    config = _experiment(experiment, settings, seeds, epochs)
    return train_run(config, runs_dir=runs_dir, resume=resume, retry_diverged=retry_diverged,
                     executor=executor, data=data, train_rows=train_rows, data_dir=data_dir,
                     cache_dir=cache_dir, download=download, verbose=verbose,
                     observer=observer, command=command)


def sweep(experiment: Experiment, **options) -> Run:
    """``run`` of an experiment that has a ``[sweep]`` (``bnlab sweep``); one without is a
    ``ConfigError`` saying how to give it one. Options as ``run``'s."""
    config = _experiment(experiment, options.pop("settings", ()), options.pop("seeds", None),
                         options.pop("epochs", None))
    if not config.sweep:
        raise ConfigError(f"{config.name} has no [sweep] table; add one (docs/sweeps.md), "
                          "give axes as settings ('sweep.\"optimizer.learning_rate\"=[0.01, "
                          "0.1]'), or train it with run")
    return train_run(config, **options)


@dataclass(frozen=True)
class Probed:
    """What ``probe`` trained: the ``run`` with the measures recorded and, when it retrained
    a stored run (``source``), whether it followed that run's trajectory."""

    run: Run
    source: Run | None = None
    reproduction: Reproduction | None = None


def probe(source: Experiment | Run, *, measures_every: int = 500,
          variant: str | Sequence[str] | None = None,
          settings: Sequence[str] = (), seeds: int | None = None, epochs: int | None = None,
          runs_dir: Path | str = "runs", **options) -> Probed:
    """Train with Santurkar et al.'s measures recorded every ``measures_every`` steps (and
    the activation statistics on), as ``bnlab probe`` (docs/why.md). ``source`` is an
    experiment (as ``run`` takes it) or a run (a ``Run`` or its folder, or its name under
    ``runs_dir``): a run's experiment is trained again into a new folder, and since training
    is deterministic the retrained run follows the original's trajectory, which
    ``Probed.reproduction`` checks; it trains on the rows that run trained on unless
    ``train_rows`` says otherwise. ``variant``: only these variants (a name or a list; a
    sweep's variant with all its points), each trained as in the whole run, so the
    reproduction still holds. Other options as ``run``'s."""
    original = _stored_run(source, runs_dir)
    config = original.config if original is not None else (
        source if isinstance(source, ExperimentConfig) else load_experiment(source))
    wanted = [f"probe.measures_every={measures_every}"]
    if not config.probe.every:
        wanted.append(f"probe.every={ProbePlan().every}")
    if variant is not None:
        config = with_variants(config, [variant] if isinstance(variant, str) else variant,
                               command="probe")
    config = with_overrides(with_settings(config, [*wanted, *settings]), seeds=seeds,
                            epochs=epochs)
    # The rows the run trained on (``--train-rows``), or the retrained run learns from other
    # data and cannot follow its trajectory.
    if (original is not None and options.get("train_rows") is None
            and original.training_rows < config.training_rows()):
        options["train_rows"] = original.training_rows
    trained = train_run(config, runs_dir=runs_dir, **options)
    if original is None:
        return Probed(trained)
    histories = {run: {n: h.per_seed for n, h in run.histories.items()}
                 for run in (original, trained)}
    same = ((trained.config.seed_list, trained.config.epochs)
            == (original.config.seed_list, original.config.epochs))
    return Probed(trained, original, reproduction(histories[original], histories[trained],
                                                  name=original.name, comparable=same))


def train_run(config: ExperimentConfig, *, runs_dir: Path | str = "runs", resume: bool = False,
              retry_diverged: bool = False, executor: str = "local",
              data: Splits | None = None, train_rows: int | None = None,
              data_dir: Path | str | None = None,
              cache_dir: Path | str | None = None, download: bool = True, verbose: int = 1,
              observer: Observer | None = None,
              command: Sequence[str] | None = None) -> Run:
    """``run`` of a built ``config``: what ``run``, ``sweep`` and ``probe`` share."""
    if retry_diverged and not resume:
        raise ConfigError("retry_diverged retrains the diverged variants of a run being "
                          "resumed; add {resume=True}")
    if executor != "local":
        ray_module()  # the extra is there, before anything is written
    if train_rows is not None and (isinstance(train_rows, bool) or not isinstance(
            train_rows, int) or not 1 <= train_rows <= config.training_rows()):
        raise ConfigError(f"{{train_rows={train_rows}}}: the training split has 1 to "
                          f"{config.training_rows():,} rows")
    if train_rows is not None:  # before any data is loaded
        _check_rows(config, train_rows)
    with (ProgressObserver(verbose=verbose) if observer is None
          else contextlib.nullcontext(observer)) as observer:
        if data is None:
            data = load_data(config.dataset, data_dir=data_dir, cache_dir=cache_dir,
                             download=download, observer=observer)
        if train_rows is not None:
            data = data.subset(train=min(train_rows, len(data.y_train)))
        if len(data.y_train) != config.training_rows():
            _check_rows(config, len(data.y_train))
        for line in small_batch_warnings(config, len(data.y_train)):
            observer.warning(line)
        runs_dir = Path(runs_dir)
        run_dir = (find_resumable(runs_dir, config, data, retry_diverged=retry_diverged)
                   if resume else new_run_dir(runs_dir, config.name))
        run_experiment(config, data, run_dir, resume=resume, retry_diverged=retry_diverged,
                       observer=observer, figures=run_figures(config.name, sweep_points(config)),
                       command=command, executor_name=executor,
                       executor=None if executor == "local" else ray_executor(
                           executor, observer=observer))
    return load_run(run_dir)


def _check_rows(config: ExperimentConfig, rows: int) -> None:
    """Each point's batches of ``rows`` training rows leave BatchNorm two rows or more, and
    the experiment's ``recalibrate_batches`` are full batches among them."""
    for point in config.points:
        try:
            check_batching(rows, point.batch_size, point.build(config.input_shape()))
        except ConfigError as err:
            raise ConfigError(f"{{train_rows={rows}}}: {err} (point {point.name!r})") from None
    full = config.full_batches(rows)
    if config.recalibrate_batches > full:
        raise ConfigError(
            f"{{train_rows={rows}}}: the experiment recalibrates on {config.recalibrate_batches:,}"
            f" batches, and {rows:,} training rows hold {full:,} full batches of "
            f"{max(p.batch_size for p in config.points)}; train on more rows, or set the "
            f"experiment's recalibrate_batches to {full} or fewer (0: off)")


def _experiment(experiment: Experiment, settings: Sequence[str], seeds: int | None,
                epochs: int | None) -> ExperimentConfig:
    if isinstance(experiment, ExperimentConfig):
        config = with_settings(experiment, settings) if settings else experiment
    else:
        config = load_experiment(experiment, settings)
    return with_overrides(config, seeds=seeds, epochs=epochs)


def _stored_run(source: Experiment | Run, runs_dir: Path | str) -> Run | None:
    """``source`` as a stored run when it is one (a ``Run``, a run folder, or a run's name
    under ``runs_dir``), else ``None``."""
    if isinstance(source, Run):
        return source
    if isinstance(source, ExperimentConfig):
        return None
    path = run_folder(Path(source), Path(runs_dir))
    return load_run(path) if is_run_folder(path) else None
