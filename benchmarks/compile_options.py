"""What do XLA compiler options cost or buy? Compile seconds, s/epoch and results, side by side.

For each option set (a JSON object of XLA debug options, as ``jit(...).lower(...).compile(options)``
takes them), a fresh process compiles what ``bnlab seed`` compiles for one model (the training
epoch and the 5,000-row evaluation, ``trainer.SeedBatchTrainer.compile``, given the option set
as its ``compiler_options`` in place of ``engine.compiler_options()``), then times --epochs
epochs through ``train.loop``. A fresh process per set keeps
XLA's in-memory autotuning results of one set from speeding up the next. The final parameters
are compared with the first set's (max |Δ|), so an option that changes results shows it.

    .venv/bin/python benchmarks/compile_options.py --model bn_after \\
        --options '{}' '{"xla_cpu_copy_insertion_use_region_analysis": true}'
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def measure(model: str, options: dict, epochs: int, seeds: int, params_out: Path) -> dict:
    """In this process: compile with ``options``, train ``epochs`` epochs, save final params."""
    import jax
    import optax

    from bnlab.data.datasets import load_dataset
    from bnlab.nn.zoo import get_model
    from bnlab.train.loop import train_epochs
    from bnlab.train.trainer import SeedBatchTrainer

    # The same download cache as seed_batching.py and profile_epoch.py (used only without
    # Debian's dataset package).
    splits = load_dataset("fashion_mnist", cache_dir=Path("/tmp/bnlab-bench-cache"))
    trainer = SeedBatchTrainer(get_model(model), optax.sgd(1e-3), batch_size=32,
                               x_train=splits.x_train, y_train=splits.y_train,
                               seeds=range(42, 42 + seeds),
                               evaluation={"val": (splits.x_val, splits.y_val)},
                               compiler_options=options)
    state = trainer.init_state()
    compile_seconds = trainer.compile(state)
    seconds = []
    for record in train_epochs(trainer, state, epochs=epochs):
        seconds.append(record.seconds)  # training and validation, as bnlab seed times them
        state = record.state
    leaves = jax.tree_util.tree_leaves(trainer.saved(state).params)  # the real seeds
    np.savez(params_out, *[np.asarray(leaf) for leaf in leaves])
    device = jax.devices()[0]
    return {"compile_seconds": compile_seconds, "epoch_seconds": seconds,
            "device": f"{device.platform}:{device.device_kind}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bn_after",
                        choices=("baseline", "bn_after", "bn_before"))
    parser.add_argument("--options", nargs="+", default=["{}"], help="JSON objects")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # options of one child process
    parser.add_argument("--params-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        result = measure(args.model, json.loads(args.child), args.epochs, args.seeds,
                         args.params_out)
        print(json.dumps(result))
        return
    rows, first = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(args.options):
            params = Path(tmp) / f"params{i}.npz"
            cmd = [sys.executable, __file__, "--model", args.model, "--epochs", str(args.epochs),
                   "--seeds", str(args.seeds), "--child", text, "--params-out", str(params)]
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
                rows.append(f"{text}: FAILED ({tail[0][:200]})")
                print(rows[-1], flush=True)
                continue
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            with np.load(params) as npz:
                leaves = [npz[k] for k in sorted(npz.files, key=lambda k: int(k[4:]))]
            if first is None:
                first = leaves
            diff = max(float(np.max(np.abs(a - b))) for a, b in zip(leaves, first, strict=True))
            steady = statistics.median(result["epoch_seconds"][1:] or result["epoch_seconds"])
            rows.append(f"{text}: compile {result['compile_seconds']:.1f} s, "
                        f"{steady:.3f} s/epoch (median of epochs 2+), process {wall:.0f} s, "
                        f"max |Δ params| vs first set {diff:.2e} [{result['device']}]")
            print(rows[-1], flush=True)
    print(f"\n{args.model}, {args.seeds} seed(s), {args.epochs} epochs, one process per set:")
    print("\n".join(f"  {row}" for row in rows))


if __name__ == "__main__":
    main()
