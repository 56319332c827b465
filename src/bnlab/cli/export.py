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

TOLERANCE = 1e-5  # largest |Δ probability| accepted between onnxruntime and bnlab


def cmd_export(args: argparse.Namespace) -> int:
    from bnlab.api import configure_jax

    configure_jax(cache_dir=args.cache_dir)
    from bnlab.data.datasets import DATASETS
    from bnlab.errors import ConfigError
    from bnlab.export.onnx import to_onnx, verify
    from bnlab.export.trained import trained_member
    from bnlab.io import atomic_write_bytes
    from bnlab.nn.fold import fold_batchnorm
    from bnlab.nn.summary import summarize
    from bnlab.store.reader import load_run

    try:
        import onnx  # noqa: F401 — only to say how to get it
    except ImportError:
        raise ConfigError("bnlab export needs the onnx extra: pip install 'bnlab[onnx]'") from None
    run = load_run(run_folder(Path(args.run), args.runs_dir))
    member = trained_member(run, args.variant, args.seed, recalibrated=args.recalibrated)
    model, params, state = member.model, member.params, member.bn_state
    before = summarize(model)
    console.print(f"{run.path.name}: {member.variant}, seed {member.seed}, after "
                  f"{member.epoch} epochs{' (recalibrated statistics)' * args.recalibrated}: "
                  f"{before.total:,} parameters ({before.trainable:,} trainable)", markup=False)
    if args.fold:
        folded = fold_batchnorm(model, params, state)
        model, params, state = folded.model, folded.params, folded.bn_state
        for bn, dense, direction in folded.folds:
            into = "the Dense before it" if direction == "backward" else "the Dense after it"
            console.print(f"  folded {bn} into {dense} ({into})", markup=False)
        for name, why in folded.kept:
            console.print(f"  kept {name}: {why}", markup=False)
        console.print(f"folded: {summarize(model).total:,} parameters", markup=False)
    stem = f"{member.variant}-seed{member.seed}{'-folded' * args.fold}"
    if args.format != "onnx":
        return _write_ported(args, run.path / stem, model, params, state)
    proto = to_onnx(model, params, state, name=f"{member.variant}-seed{member.seed}",
                    class_names=DATASETS[run.config.dataset].class_names)
    splits = load_splits(args, run.config.dataset)
    images = splits.x_test.astype("float32") / 255.0
    check = verify(proto, model, params, state, images)
    console.print(f"onnx.checker: valid; onnxruntime against bnlab on the {check.rows:,} test "
                  f"images: max |Δ probability| {check.max_probability_error:.1e}, max "
                  f"|Δ logit| {check.max_logit_error:.1e}, same top class on "
                  f"{check.same_top_class:,} of {check.rows:,}", markup=False)
    if check.max_probability_error > TOLERANCE:
        error_console.print(f"error: onnxruntime differs from bnlab by more than {TOLERANCE:g}; "
                            "nothing written", markup=False)
        return 1
    out = args.out or run.path / f"{stem}.onnx"
    atomic_write_bytes(Path(out), proto.SerializeToString())
    console.print(f"wrote {out}", markup=False)
    return 0


def _write_ported(args: argparse.Namespace, default_stem: Path, model, params, state) -> int:
    """``--format keras`` or ``torch``: write the file(s) and print every convention
    converted (``export.keras_format``, ``export.torch_format``)."""
    if args.format == "keras":
        from bnlab.export.keras_format import write_keras

        out = Path(args.out or default_stem.with_suffix(".keras"))
        written = write_keras(out, model, params, state)
        paths = [out]
    else:
        from bnlab.export.torch_format import write_torch

        out = Path(args.out or default_stem.with_suffix(".safetensors"))
        written = write_torch(out, model, params, state)
        paths = [out, out.with_suffix(".py")]
    for line in written.conversions or ("no convention needed converting",):
        console.print(f"  {line}", markup=False)
    console.print("wrote " + " and ".join(str(p) for p in paths), markup=False)
    return 0
