"""Engine: bnlab itself — the library's compiled epoch (`jit` + `lax.scan`), seeds side by side.

Runs exactly what `bnlab seed` runs for one model: `bnlab.train.trainer.SeedBatchTrainer`
(one compiled program per epoch for all seeds, validation in inference mode) driven by the
same epoch loop, `bnlab.train.loop.train_epochs`. `--device gpu` runs it on JAX's CUDA
backend, `cpu` (the default) on the CPU even where JAX sees a GPU. The thread count is
enforced by the orchestrator, which pins every engine to `--threads` CPUs. Run by
epoch_speed.py with .venv/bin/python; see protocol.py for the command line.
"""

from __future__ import annotations

import contextlib
import importlib.metadata

import protocol


def main() -> None:
    args = protocol.parse_args(__doc__.splitlines()[0])
    import jax

    if args.device == "cpu":
        from bnlab.api import configure_jax

        jax.config.update("jax_platforms", "cpu")
        # As the `bnlab` command does: one CPU device per core this process may use (the
        # orchestrator's mask), so that several seeds train side by side.
        configure_jax(compilation_cache=False)
    elif jax.default_backend() != "gpu":  # jax without its CUDA plugin, or no GPU
        protocol.refuse(f"bnlab: JAX's backend here is {jax.default_backend()}, not gpu; "
                        "install the `gpu` extra on a machine with an NVIDIA GPU")
    device = jax.devices()[0]

    from bnlab.config.files import load_experiment
    from bnlab.train.history import History
    from bnlab.train.loop import train_epochs
    from bnlab.train.trainer import SeedBatchTrainer

    data = protocol.load_data(args.data)
    config = load_experiment("seed")  # the notebook's recipe: SGD 1e-3, batch 32
    variant = next(v for v in config.variants if v.name == args.model)
    trainer = SeedBatchTrainer(
        variant.build(), config.optimizer.build(), batch_size=config.batch_size,
        x_train=data["x_train"], y_train=data["y_train"],
        seeds=range(args.seed, args.seed + args.seeds),
        evaluation={"val": (data["x_val"], data["y_val"])})
    state = trainer.init_state()
    compile_seconds = trainer.compile(state)
    protocol.log(f"bnlab {args.model} ×{args.seeds}: compiled in {compile_seconds:.2f} s")
    history = History(trainer.seeds)
    for record in train_epochs(trainer, state, epochs=args.epochs):
        history.append(record)
        protocol.log(f"epoch {record.epoch}: {record.seconds:.3f} s, val_accuracy "
                     f"{record.metrics['val_accuracy'].mean():.4f}")
    # The first epoch includes compilation, as the peers' first epochs do.
    epoch_seconds = [history.epoch_seconds[0] + compile_seconds, *history.epoch_seconds[1:]]
    values = {key: history.per_seed[key].T for key in protocol.HISTORY_KEYS}  # (epochs, seeds)
    versions = {}
    for package in ("bnlab", "jax", "jaxlib", "optax", "jax-cuda12-plugin", "jax-cuda13-plugin"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    protocol.emit(engine="bnlab", args=args, epoch_seconds=epoch_seconds,
                  history={key: [float(v[0]) if args.seeds == 1 else v.tolist() for v in rows]
                           for key, rows in values.items()},
                  versions=versions, device=f"{args.device}:{device.device_kind}")


if __name__ == "__main__":
    main()
