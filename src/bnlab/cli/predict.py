"""``bnlab predict RUN|MODEL.onnx|MODEL.keras IMAGE… [--test N --out FILE]``: the top-3
classes of each image (any size, PNG or JPEG: ``export.predict``), by a run's trained member
(bnlab), an exported ONNX file (onnxruntime) or a Keras 3 file read as data
(``export.keras_format``, run by bnlab); ``--test N`` draws N test images with their
predictions."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bnlab.cli.commands import run_folder
from bnlab.cli.session import console, error_console, load_splits

MAX_GRID = 400  # test images one --test grid draws at most (20 × 20)
GRID_FORMATS = (".png", ".svg", ".pdf")


def cmd_predict(args: argparse.Namespace) -> int:
    from bnlab.api import configure_jax

    configure_jax(cache_dir=args.cache_dir)
    from bnlab.errors import ConfigError
    from bnlab.export.predict import ImageError, image_input, predict

    if not args.images and args.test is None:
        raise ConfigError("give image files to predict, or --test N")
    if args.test is not None and not 1 <= args.test <= MAX_GRID:
        raise ConfigError(f"--test {args.test}: the grid draws 1 to {MAX_GRID} test images")
    grid = args.out or Path(f"predictions-{args.test}.png")
    if args.test is not None and (grid.suffix.lower() not in GRID_FORMATS or grid.is_dir()):
        raise ConfigError(f"--out {grid}: the grid is written as "
                          f"{', '.join(GRID_FORMATS)}; name such a file")
    source = Path(args.model)
    probabilities, class_names, dataset, label = model_source(source, args)
    console.print(f"by {label}", markup=False)
    classes = np.asarray(probabilities(np.zeros((1, 28, 28), np.float32))).shape[1]
    if classes != len(class_names):
        raise ConfigError(f"{source} gives {classes} classes where the dataset has "
                          f"{len(class_names)}; bnlab predict runs Fashion-MNIST classifiers")
    inputs, names, failed = [], [], 0
    for path in args.images:
        try:
            inputs.append(image_input(path))
            names.append(str(path))
        except ImageError as err:
            error_console.print(f"error: {err}", markup=False, soft_wrap=True)
            failed += 1
    if inputs:
        for prediction in predict(probabilities, np.stack(inputs), class_names, names):
            top = " · ".join(f"{name} {p:.3f}" for name, p in prediction.top)
            console.print(f"{prediction.source}: {top}", markup=False)
    if args.test is not None:
        from bnlab.report.plots import prediction_grid, save_figure

        splits = load_splits(args, dataset or "fashion_mnist")
        count = min(args.test, len(splits.y_test))
        images = splits.x_test[:count].astype(np.float32) / 255.0
        guesses = np.asarray(probabilities(images)).argmax(axis=1)
        right = int((guesses == splits.y_test[:count]).sum())
        out = grid
        save_figure(prediction_grid(images, [class_names[g] for g in guesses],
                                    [class_names[t] for t in splits.y_test[:count]],
                                    title=f"{label}: {right} of {count} test images right"),
                    [Path(out)])
        console.print(f"{right} of {count} test images right; wrote {out}", markup=False)
    return 1 if failed else 0


def model_source(source: Path, args: argparse.Namespace):
    """``(probabilities function, class names, dataset name or None, label)`` of a run's
    member, an ONNX file or a Keras file."""
    from bnlab.data.datasets import DATASETS
    from bnlab.errors import ConfigError

    if source.is_file() and source.suffix not in (".onnx", ".keras"):
        raise ConfigError(f"{source}: bnlab predict takes a run folder, a .onnx or a .keras "
                          "file" + (" (a PyTorch export runs in PyTorch, by the .py beside it)"
                                    if source.suffix == ".safetensors" else ""))
    if source.suffix in (".onnx", ".keras") and (args.variant or args.seed is not None):
        raise ConfigError(f"--variant and --seed choose a run's model; {source.name} is one "
                          "model already")
    if source.suffix == ".onnx":
        from bnlab.export.exporter import onnx_module

        classifier = onnx_module().load_classifier(source)
        if classifier.note:
            console.print(f"{source.name}: not written by bnlab; read as {classifier.note}",
                          markup=False)
        names = classifier.class_names or list(DATASETS["fashion_mnist"].class_names)
        return classifier.probabilities, names, None, source.name
    import jax

    if source.suffix == ".keras":  # read as data: nothing in the file runs
        from bnlab.export.keras_format import read_keras

        ported = read_keras(source)
        apply = jax.jit(lambda x: jax.nn.softmax(ported.model.apply(
            ported.params, ported.bn_state, x, train=False)[0]))
        return apply, list(DATASETS["fashion_mnist"].class_names), None, source.name

    from bnlab.export.trained import trained_member
    from bnlab.store.reader import load_run

    run = load_run(run_folder(source, args.runs_dir))
    member = trained_member(run, args.variant, args.seed)
    apply = jax.jit(lambda x: jax.nn.softmax(member.model.apply(
        member.params, member.bn_state, x, train=False)[0]))
    return (apply, list(DATASETS[run.config.dataset].class_names), run.config.dataset,
            f"{run.path.name} {member.variant} seed {member.seed}")
