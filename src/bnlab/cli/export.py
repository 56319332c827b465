"""``bnlab export RUN [--variant V] [--seed S] [--fold] [--recalibrated] [--format F]
[--out FILE]``: one trained member of a run written as ONNX (the default: checked by
``onnx.checker`` and run by onnxruntime against bnlab's own inference on the dataset's test
images before the file is written), a Keras 3 ``.keras`` file, or a PyTorch ``state_dict``
in safetensors with the code that loads it; the conventions converted are printed."""

from __future__ import annotations

import argparse
from pathlib import Path

from bnlab.cli.commands import run_folder
from bnlab.cli.session import console, error_console, load_splits


def cmd_export(args: argparse.Namespace) -> int:
    from bnlab.api import configure_jax

    configure_jax(cache_dir=args.cache_dir)
    from bnlab.data.datasets import DATASETS
    from bnlab.export.exporter import (
        VerificationError,
        checked_format,
        default_path,
        export_member,
        onnx_module,
    )
    from bnlab.export.trained import trained_member
    from bnlab.nn.summary import summarize
    from bnlab.store.reader import load_run

    if checked_format(args.format) == "onnx":
        onnx_module()  # the extra is there, before anything else is done
    run = load_run(run_folder(Path(args.run), args.runs_dir))
    member = trained_member(run, args.variant, args.seed, recalibrated=args.recalibrated)
    counts = summarize(member.model)
    console.print(f"{run.path.name}: {member.variant}, seed {member.seed}, after "
                  f"{member.epoch} epochs{' (recalibrated statistics)' * args.recalibrated}: "
                  f"{counts.total:,} parameters ({counts.trainable:,} trainable)", markup=False)
    images = None
    if args.format == "onnx":
        images = load_splits(args, run.config.dataset).x_test.astype("float32") / 255.0
    try:
        exported = export_member(
            member, args.out or default_path(member, run.path, args.format, args.fold),
            format=args.format, fold=args.fold, images=images,
            class_names=DATASETS[run.config.dataset].class_names)
    except VerificationError as err:
        print_exported(err.exported)
        error_console.print(f"error: {err}", markup=False)
        return 1
    print_exported(exported)
    console.print("wrote " + " and ".join(str(p) for p in exported.paths), markup=False)
    return 0


def print_exported(exported) -> None:
    """What ``export.exporter.export_member`` did: each fold and each layer kept with the
    folded parameter count, then onnxruntime's agreement or the conventions converted."""
    if exported.folded is not None:
        for bn, dense, direction in exported.folded.folds:
            into = "the Dense before it" if direction == "backward" else "the Dense after it"
            console.print(f"  folded {bn} into {dense} ({into})", markup=False)
        for name, why in exported.folded.kept:
            console.print(f"  kept {name}: {why}", markup=False)
        if not exported.folded.folds and not exported.folded.kept:
            console.print("  no BatchNorm layer: nothing to fold", markup=False)
        console.print(f"folded: {exported.exported_parameters:,} parameters", markup=False)
    check = exported.verification
    if check is not None:
        console.print(f"onnx.checker: valid; onnxruntime against bnlab on the {check.rows:,} "
                      f"test images: max |Δ probability| {check.max_probability_error:.1e}, "
                      f"max |Δ logit| {check.max_logit_error:.1e}, same top class on "
                      f"{check.same_top_class:,} of {check.rows:,}", markup=False)
    else:
        for line in exported.conversions or ("no convention needed converting",):
            console.print(f"  {line}", markup=False)
