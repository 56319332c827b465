"""A finished run's models, as ``bnlab recalibrate``, ``export`` and ``predict`` take them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnlab.api.setup import load_data
from bnlab.api.stored import RunSource, open_run
from bnlab.config.experiment import ExperimentConfig
from bnlab.data.datasets import DATASETS, Splits
from bnlab.errors import ConfigError, some_of
from bnlab.experiments.observer import SILENT, Observer
from bnlab.experiments.recalibrate import chosen_points, recalibrable, recalibrate_run
from bnlab.export.classifier import (
    SUFFIXES,
    Classifier,
    model_file_classifier,
    run_classifier,
)
from bnlab.export.exporter import (
    Exported,
    checked_format,
    default_path,
    export_member,
    onnx_module,
)
from bnlab.export.keras_format import h5py_module
from bnlab.export.predict import ImageError, Prediction, image_input
from bnlab.export.predict import predict as top_classes
from bnlab.export.trained import trained_member
from bnlab.report.plots import prediction_grid, save_figure
from bnlab.store.lock import RunLock
from bnlab.store.outputs import check_output
from bnlab.store.reader import run_config
from bnlab.store.recalibrations import Recalibration
from bnlab.store.runs import Run, run_folder

MAX_GRID = 400  # test images one grid draws at most (20 × 20)
GRID_FORMATS = (".png", ".svg", ".pdf")


def recalibrate(source: RunSource, *, batches: int = 200,
                variant: str | Sequence[str] | None = None, runs_dir: Path | str = "runs",
                data: Splits | None = None, data_dir: Path | str | None = None,
                cache_dir: Path | str | None = None, download: bool = True,
                observer: Observer = SILENT) -> list[Recalibration]:
    """Recompute a finished run's BatchNorm statistics over ``batches`` training batches, as
    ``bnlab recalibrate`` (``experiments.recalibrate``: fvcore's PreciseBN): each variant's
    ``recalibrated`` checkpoint is written beside its trained one (those without BatchNorm
    have nothing to recalibrate and get none), and each ``Recalibration``
    holds the validation and test loss and accuracy per seed ``before`` and ``after``.
    ``variant``: only these variants (or points; a name or a list), each with BatchNorm.
    ``source``: a ``Run``, its folder or its name under ``runs_dir``; ``data`` as in
    ``run``. The run's folder is locked meanwhile."""
    stored = open_run(source, runs_dir)
    rows = stored.training_rows
    full = stored.config.full_batches(rows)
    if isinstance(batches, bool) or not isinstance(batches, int) or not 1 <= batches <= full:
        raise ConfigError(f"recalibration batches must be a whole number in 1..{full:,} (full "
                          f"batches in {rows:,} training rows), got {{batches={batches}}}")
    variants = [variant] if isinstance(variant, str) else variant
    _check_trained(stored, None if variants is None else chosen_points(stored.config, variants))
    if data is None:
        data = load_data(stored.config.dataset, data_dir=data_dir, cache_dir=cache_dir,
                         download=download, observer=observer)
    with RunLock(stored.path):
        return recalibrate_run(stored.path, stored.config, data, batches, variants=variants)


def _check_trained(run: Run, wanted: set[str] | None) -> None:
    """The points to recalibrate (``wanted``, else every one with BatchNorm) have trained to
    the end, before any data is loaded: else a ``ConfigError`` naming those that have not (a
    damaged record is left to ``recalibrate_run``, which names the damage)."""
    if wanted is None:
        wanted = {p.name for program in recalibrable(run.config) for p in program.points}
    damaged = {d.variant for d in run.damage}
    untrained = [p.name for p in run.config.points if p.name in wanted and p.name not in damaged
                 and (p.name not in run.records
                      or not run.records[p.name].finished(run.config.epochs))]
    if untrained:
        epochs = run.config.epochs
        raise ConfigError(f"{run.path.name} is unfinished: {some_of(untrained)} not trained "
                          f"to the run's {epochs} epoch{'s' * (epochs != 1)}; finish the run "
                          "first (bnlab run … --resume), or recalibrate the finished variants "
                          "alone {variant=NAME}")


def export_model(source: RunSource, out: Path | str | None = None, *,
                 variant: str | None = None, seed: int | None = None, fold: bool = False,
                 recalibrated: bool = False, format: str = "onnx",
                 runs_dir: Path | str = "runs", data: Splits | None = None,
                 data_dir: Path | str | None = None, cache_dir: Path | str | None = None,
                 download: bool = True, force: bool = False,
                 observer: Observer = SILENT) -> Exported:
    """Write one trained member of a finished run, as ``bnlab export`` (docs/deploy.md):
    ``variant`` (default: the first with BatchNorm) and ``seed`` (default: the first), from
    its checkpoint or its ``recalibrated`` one, folded if ``fold``, as ``format`` ``"onnx"``
    (verified by onnxruntime against bnlab on the test images of ``data``, loaded as in
    ``run`` when not given), ``"keras"`` or ``"torch"``. ``out`` defaults to
    ``<run>/<variant>-seed<seed>[-folded].<suffix>``; a named ``out`` that exists is written
    over only if ``force``, and a run's own files never (``store.outputs``). The member's
    checkpoint is read once. A
    model still in training, a diverged seed or a damaged checkpoint is a ``BnlabError``,
    and nothing is written."""
    checked_format(format)
    if format == "onnx":  # the extra a format needs is there, before anything else is done
        onnx_module()
    elif format == "keras":
        h5py_module()
    run_dir, config = _run_of(source, runs_dir)
    member = trained_member(run_dir, config, variant, seed, recalibrated=recalibrated)
    path = Path(out) if out is not None else default_path(member, run_dir, format, fold)
    for written in (path, path.with_suffix(".py")) if format == "torch" else (path,):
        check_output(written, force=force, given=out is not None)
    images = None
    if format == "onnx":
        if data is None:
            data = load_data(config.dataset, data_dir=data_dir, cache_dir=cache_dir,
                             download=download, observer=observer)
        images = data.x_test.astype(np.float32) / 255.0
    return export_member(member, path, format=format, fold=fold,
        class_names=DATASETS[config.dataset].class_names, images=images)


@dataclass(frozen=True)
class Predictions:
    """What ``predict`` found: the model it ran (``classifier``: its label, classes and how
    it was read), each readable image's top classes, a line for each image that could not be
    read, and with a test grid its file and how many of its test images were right."""

    classifier: Classifier
    predictions: tuple[Prediction, ...] = ()
    failed: tuple[str, ...] = ()
    grid: Path | None = None
    right: int | None = None
    tested: int | None = None


def predict(model: RunSource, images: Sequence[Path | str] = (), *, test: int | None = None,
            out: Path | str | None = None, variant: str | None = None,
            seed: int | None = None, top: int = 3, runs_dir: Path | str = "runs",
            data: Splits | None = None, data_dir: Path | str | None = None,
            cache_dir: Path | str | None = None, download: bool = True,
            force: bool = False, observer: Observer = SILENT) -> Predictions:
    """The ``top`` classes of each image file (any size, PNG/JPEG, converted to
    Fashion-MNIST's form: ``export.predict``) by ``model``: a run's trained member
    (``variant``, ``seed`` as in ``export_model``), an exported ``.onnx`` file (any image
    classifier; training-mode files refused) or a Keras 3 ``.keras`` file (read as data), as
    ``bnlab predict``. An image that cannot be read is a line in ``Predictions.failed``; the
    others are predicted. ``test=N`` also draws the first N test images (1-400) with
    predicted and true labels into ``out`` (``.png``, ``.svg`` or ``.pdf``; default
    ``predictions-N.png``; a named ``out`` that exists is written over only if ``force``).
    Every argument is checked before any data is loaded."""
    grid = _grid_path(test, out, images)
    if test is not None:
        check_output(grid, force=force, given=out is not None)
    classifier = _classifier(model, variant, seed, runs_dir)
    classes = np.asarray(classifier.probabilities(np.zeros((1, 28, 28), np.float32))).shape[1]
    if classes != len(classifier.class_names):
        name = model.path.name if isinstance(model, Run) else model
        raise ConfigError(f"{name} gives {classes} classes where the dataset has "
                          f"{len(classifier.class_names)}; predict runs Fashion-MNIST "
                          "classifiers")
    inputs, names, failed = [], [], []
    for path in images:
        try:
            inputs.append(image_input(Path(path)))
            names.append(str(path))
        except ImageError as err:
            failed.append(str(err))
    found: tuple[Prediction, ...] = ()
    if inputs:
        found = tuple(top_classes(classifier.probabilities, np.stack(inputs),
                                  classifier.class_names, names, top))
    result = Predictions(classifier, found, tuple(failed))
    if test is None:
        return result
    if data is None:
        data = load_data(classifier.dataset or "fashion_mnist", data_dir=data_dir,
                         cache_dir=cache_dir, download=download, observer=observer)
    count = min(test, len(data.y_test))
    pictures = data.x_test[:count].astype(np.float32) / 255.0
    guesses = np.asarray(classifier.probabilities(pictures)).argmax(axis=1)
    right = int((guesses == data.y_test[:count]).sum())
    names = classifier.class_names
    save_figure(prediction_grid(pictures, [names[g] for g in guesses],
                                [names[t] for t in data.y_test[:count]],
                                title=f"{classifier.label}: {right} of {count} test images "
                                      "right"), [grid])
    return Predictions(classifier, found, tuple(failed), grid, right, count)


def _grid_path(test: int | None, out: Path | str | None,
               images: Sequence[Path | str]) -> Path:
    if not images and test is None:
        raise ConfigError("give image files to predict, or a number of test images to draw")
    if test is not None and (isinstance(test, bool) or not isinstance(test, int)
                             or not 1 <= test <= MAX_GRID):
        raise ConfigError(f"{{test={test}}}: the grid draws 1 to {MAX_GRID} test images")
    grid = Path(out) if out is not None else Path(f"predictions-{test}.png")
    if test is not None and (grid.suffix.lower() not in GRID_FORMATS or grid.is_dir()):
        raise ConfigError(f"{grid}: the grid is written as {', '.join(GRID_FORMATS)}; name "
                          "such a file")
    return grid


def _classifier(source: RunSource, variant: str | None, seed: int | None,
                runs_dir: Path | str) -> Classifier:
    """A model file's classifier, or a run's member's (a ``Run``, its folder or name)."""
    if not isinstance(source, Run) and (Path(source).is_file()
                                        or Path(source).suffix in SUFFIXES):
        if variant or seed is not None:
            raise ConfigError(f"{{variant}} and {{seed}} choose a run's model; "
                              f"{Path(source).name} is one model already")
        return model_file_classifier(Path(source))
    run_dir, config = _run_of(source, runs_dir)
    return run_classifier(run_dir, config, variant, seed)


def _run_of(source: RunSource, runs_dir: Path | str) -> tuple[Path, ExperimentConfig]:
    """The folder and experiment of a run (a ``Run``, its folder or its name under
    ``runs_dir``) without reading its records (``store.reader.run_config``)."""
    if isinstance(source, Run):
        return source.path, source.config
    run_dir = run_folder(Path(source), Path(runs_dir))
    return run_dir, run_config(run_dir)
