"""``bnlab recalibrate``, ``export`` and ``predict``: a finished run's models, through
``bnlab.recalibrate``, ``bnlab.export_model`` and ``bnlab.predict``."""

from __future__ import annotations

import argparse
from pathlib import Path

from bnlab.cli.session import console, data_options, error_console


def cmd_recalibrate(args: argparse.Namespace) -> int:
    from bnlab.api import configure_jax

    configure_jax(cache_dir=args.cache_dir)
    from bnlab.api import load_run, recalibrate
    from bnlab.report.console import recalibration_outcome, recalibration_table
    from bnlab.report.progress import ProgressObserver
    from bnlab.store.runs import run_folder

    run = load_run(run_folder(args.run, args.runs_dir))
    with ProgressObserver(verbose=1, console=console) as observer:
        results = recalibrate(run, batches=args.batches, variant=args.variant,
                              **data_options(args), observer=observer)
    console.print(recalibration_table(results))
    for line in recalibration_outcome(run, results, variants_asked=bool(args.variant)):
        console.print(line, markup=False)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bnlab.api import configure_jax

    configure_jax(cache_dir=args.cache_dir)
    from bnlab.api import export_model
    from bnlab.export.exporter import VerificationError
    from bnlab.report.progress import ProgressObserver

    try:
        with ProgressObserver(verbose=1, console=console) as observer:
            exported = export_model(args.run, args.out, variant=args.variant, seed=args.seed,
                                    fold=args.fold, recalibrated=args.recalibrated,
                                    format=args.format, runs_dir=args.runs_dir,
                                    **data_options(args), force=args.force,
                                    observer=observer)
    except VerificationError as err:
        print_exported(err.exported)
        error_console.print(f"error: {err}", markup=False)
        return 1
    print_exported(exported)
    console.print("wrote " + " and ".join(str(p) for p in exported.paths), markup=False)
    return 0


def print_exported(exported) -> None:
    """What ``bnlab.export_model`` did: the member, each fold and each layer kept with the
    folded parameter count, then onnxruntime's agreement or the conventions converted."""
    member = exported.member
    console.print(f"{member.variant}, seed {member.seed}, after {member.epoch} epochs: "
                  f"{exported.parameters:,} parameters", markup=False)
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
                      f"{check.same_top_class:,} of {check.rows:,}{_near_ties(check)}",
                      markup=False)
    else:
        for line in exported.conversions or ("no convention needed converting",):
            console.print(f"  {line}", markup=False)


def _near_ties(check) -> str:
    """How many rows are near ties (their top class may differ by rounding alone)."""
    if not check.near_ties:
        return ""
    rows = "row is a near tie" if check.near_ties == 1 else "rows are near ties"
    return f" ({check.near_ties:,} {rows} within rounding)"


def cmd_predict(args: argparse.Namespace) -> int:
    from bnlab.api import configure_jax

    configure_jax(cache_dir=args.cache_dir)
    from bnlab.api import predict
    from bnlab.report.progress import ProgressObserver

    with ProgressObserver(verbose=1, console=console) as observer:
        found = predict(Path(args.model), args.images, test=args.test, out=args.out,
                        variant=args.variant, seed=args.seed, runs_dir=args.runs_dir,
                        **data_options(args), force=args.force, observer=observer)
    classifier = found.classifier
    console.print(f"by {classifier.label}", markup=False)
    if classifier.note:
        console.print(f"{classifier.label}: {classifier.note}", markup=False)
    for line in found.failed:
        error_console.print(f"error: {line}", markup=False, soft_wrap=True)
    for prediction in found.predictions:
        top = " · ".join(f"{name} {p:.3f}" for name, p in prediction.top)
        console.print(f"{prediction.source}: {top}", markup=False)
    if found.grid is not None:
        console.print(f"{found.right} of {found.tested} test images right; wrote "
                      f"{found.grid}", markup=False)
    return 1 if found.failed else 0
