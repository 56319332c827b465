"""What does the divergence guard cost? Seconds per epoch with and without it, side by side.

The guard (``train.engine.make_train_epoch(guard=True)``, bnlab's default) checks every
step's loss and updated parameters for non-finite values and stops updating a seed at the
first one. For each model and seed count, in one invocation, this compiles the epoch as
``bnlab run`` does (``train.seeds.over_seeds`` over the devices) with and without the guard
and times them alternately (median of --repeats epochs after compilation), so drift hits
both alike. Prints seconds per model-epoch and the ratio guarded ÷ unguarded.

Run: ``.venv/bin/python benchmarks/divergence_guard.py --models bn_after --seeds 1,3``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from rich.console import Console
from rich.table import Table

from bnlab.api import configure_jax
from bnlab.data.datasets import load_dataset
from bnlab.nn.zoo import get_model
from bnlab.train.engine import RunKeys, compiler_options, fixed, init_train_states, make_train_epoch
from bnlab.train.seeds import over_seeds, seeds_to_run


def compiled_epoch(name: str, seeds: int, x: jax.Array, y: jax.Array, *, guard: bool):
    """A no-argument call that trains ``seeds`` seeds of ``name`` for one epoch."""
    model, optimizer = get_model(name), optax.sgd(1e-3)
    run = len(seeds_to_run(range(seeds)))
    keys = RunKeys.for_seeds(range(run))
    state = init_train_states(fixed(model, optimizer), keys)
    shuffle, dropout = keys.epoch(0)
    epoch = over_seeds(make_train_epoch(fixed(model, optimizer), len(y), 32, guard=guard),
                       (0, None, None, None, None, 0, 0), run)
    args = (state, {}, True, x, y, shuffle, dropout)
    program = jax.jit(epoch).lower(*args).compile(compiler_options())
    placed = jax.device_put(args, program.input_shardings[0])
    return lambda: jax.block_until_ready(program(*placed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="baseline,bn_after,bn_before")
    parser.add_argument("--seeds", default="1,3")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/bnlab-bench-cache"))
    args = parser.parse_args()
    configure_jax(compilation_cache=False)  # one CPU device per core, as the bnlab command
    splits = load_dataset("fashion_mnist", cache_dir=args.cache_dir)
    x, y = jnp.asarray(splits.x_train), jnp.asarray(splits.y_train)
    device = jax.devices()[0]
    table = Table(title="seconds per epoch of all seeds (median of repeats); "
                        f"{jax.device_count()} × {device.platform}:{device.device_kind}")
    for column in ("model", "seeds", "unguarded s", "guarded s", "guarded ÷ unguarded"):
        table.add_column(column, justify="right")
    for name in args.models.split(","):
        for seeds in map(int, args.seeds.split(",")):
            calls = {guard: compiled_epoch(name, seeds, x, y, guard=guard)
                     for guard in (False, True)}
            for call in calls.values():
                call()  # warm-up
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.repeats):
                for guard, call in calls.items():
                    start = time.perf_counter()
                    call()
                    times[guard].append(time.perf_counter() - start)
            off, on = (statistics.median(times[g]) for g in (False, True))
            table.add_row(name, str(seeds), f"{off:.3f}", f"{on:.3f}", f"{on / off:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
