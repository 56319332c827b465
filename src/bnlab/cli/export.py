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
    from bnlab.api import export_model
    from bnlab.export.exporter import VerificationError
    from bnlab.store.reader import load_run

    run = load_run(run_folder(Path(args.run), args.runs_dir))
    data = load_splits(args, run.config.dataset) if args.format == "onnx" else None
    try:
        exported = export_model(run, args.out, variant=args.variant, seed=args.seed,
                                fold=args.fold, recalibrated=args.recalibrated,
                                format=args.format, data=data)
    except VerificationError as err:
        error_console.print(f"error: {err}", markup=False)
        return 1
    member = exported.member
    console.print(f"{run.path.name}: {member.variant}, seed {member.seed}, after "
                  f"{member.epoch} epochs{' (recalibrated statistics)' * args.recalibrated}: "
                  f"{exported.parameters:,} parameters", markup=False)
    if exported.folded is not None:
        for bn, dense, direction in exported.folded.folds:
            into = "the Dense before it" if direction == "backward" else "the Dense after it"
            console.print(f"  folded {bn} into {dense} ({into})", markup=False)
        for name, why in exported.folded.kept:
            console.print(f"  kept {name}: {why}", markup=False)
        console.print(f"folded: {exported.exported_parameters:,} parameters", markup=False)
    check = exported.verification
    if check is not None:
        console.print(f"onnx.checker: valid; onnxruntime against bnlab on the {check.rows:,} "
                      f"test images: max |Δ probability| {check.max_probability_error:.1e}, "
                      f"max |Δ logit| {check.max_logit_error:.1e}, same top class on "
                      f"{check.same_top_class:,} of {check.rows:,}", markup=False)
    elif args.format != "onnx":
        for line in exported.conversions or ("no convention needed converting",):
            console.print(f"  {line}", markup=False)
    console.print("wrote " + " and ".join(str(p) for p in exported.paths), markup=False)
    return 0
