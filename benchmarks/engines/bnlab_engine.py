"""Engine: bnlab itself — the library's compiled epoch (`jit` + `lax.scan`), seeds side by side.

Uses exactly what `bnlab seed` runs (`bnlab.experiments.runner.VariantTrainer`): one compiled
program per epoch for all seeds, validation in inference mode. `--device gpu` runs it on JAX's
CUDA backend, `cpu` (the default) on the CPU even where JAX sees a GPU. The thread count is
enforced by the orchestrator, which pins every engine to `--threads` CPUs. Run by epoch_speed.py
with .venv/bin/python; see protocol.py for the command line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import time

import protocol


def main() -> None:
    args = protocol.parse_args(__doc__.splitlines()[0])
    import jax

    if args.device == "cpu":
        from bnlab.train.seeds import one_cpu_device_per_core

        jax.config.update("jax_platforms", "cpu")
        # As the `bnlab` command does: one CPU device per core this process may use (the
        # orchestrator's mask), so that several seeds train side by side.
        one_cpu_device_per_core()
    elif jax.default_backend() != "gpu":  # jax without its CUDA plugin, or no GPU
        protocol.refuse(f"bnlab: JAX's backend here is {jax.default_backend()}, not gpu; "
                        "install the `gpu` extra on a machine with an NVIDIA GPU")
    device = jax.devices()[0]

    from bnlab.data.datasets import Splits
    from bnlab.experiments.config import load_experiment
    from bnlab.experiments.runner import VariantTrainer

    data = protocol.load_data(args.data)
    splits = Splits(x_train=data["x_train"], y_train=data["y_train"], x_val=data["x_val"],
                    y_val=data["y_val"], x_test=data["x_val"], y_test=data["y_val"],
                    class_names=(), sources=())
    config = dataclasses.replace(load_experiment("seed"), seed=args.seed, seeds=args.seeds,
                                 epochs=args.epochs)
    variant = next(v for v in config.variants if v.name == args.model)
    trainer = VariantTrainer(variant, config, splits, config.seed_list)
    state = trainer.init_state()
    compile_seconds = trainer.compile(state)
    protocol.log(f"bnlab {args.model} ×{args.seeds}: compiled in {compile_seconds:.2f} s")
    x_val, y_val = trainer.placed_for_evaluation(splits.x_val, splits.y_val)
    history = {key: [] for key in protocol.HISTORY_KEYS}
    epoch_seconds = []
    for epoch in range(args.epochs):
        start = time.perf_counter()
        state, loss, accuracy = trainer.train_epoch(state, epoch)
        val_loss, val_accuracy = trainer.evaluate(state, x_val, y_val)
        seconds = time.perf_counter() - start
        if epoch == 0:
            seconds += compile_seconds  # the first epoch includes compilation, as for peers
        epoch_seconds.append(seconds)
        for key, values in zip(protocol.HISTORY_KEYS, (loss, accuracy, val_loss, val_accuracy),
                               strict=True):
            history[key].append(float(values[0]) if args.seeds == 1 else values.tolist())
        protocol.log(f"epoch {epoch + 1}: {seconds:.3f} s, val_accuracy "
                     f"{float(val_accuracy.mean()):.4f}")
    versions = {}
    for package in ("bnlab", "jax", "jaxlib", "optax", "jax-cuda12-plugin", "jax-cuda13-plugin"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    protocol.emit(engine="bnlab", args=args, epoch_seconds=epoch_seconds, history=history,
                  versions=versions, device=f"{args.device}:{device.device_kind}")


if __name__ == "__main__":
    main()
