"""How should N seeds of one model share the machine? Per-model-epoch cost, side by side.

For each model and N in --seeds, in one invocation, with repeats interleaved so drift hits
every layout alike (median of --repeats training epochs after compilation):

  bnlab     what ``bnlab run --seeds N`` does (``runner.over_seeds``): one seed plainly, up
            to 5 seeds in one ``vmap``, more as ``lax.map`` over vmapped groups of 5
  vmap      one program, ``jax.vmap`` over all N seeds
  vmap, shared order   the same with one data order for all seeds (``shared_data_order``):
            a first Dense layer fed by the data becomes one wide product over the seeds
  lax.map   one program, the seeds' epochs one after another inside it (``jax.lax.map``)
  separate  N single-seed programs called one after another (N runs of ``--seeds 1``)

Prints seconds per model-epoch (training epoch of 55,000 rows at batch 32) and each layout's
ratio to ``separate``. Run: ``.venv/bin/python benchmarks/seed_batching.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from rich.console import Console
from rich.table import Table

from bnlab.data.datasets import load_dataset
from bnlab.experiments.runner import over_seeds
from bnlab.nn.zoo import get_model
from bnlab.train.engine import RunKeys, compiler_options, init_train_state, make_train_epoch


def layouts(name: str, n: int, x: jax.Array, y: jax.Array) -> dict[str, Callable[[], object]]:
    """The ways to train ``n`` seeds of model ``name`` for one epoch, as no-argument calls."""
    model, optimizer = get_model(name), optax.sgd(1e-3)
    epoch = make_train_epoch(model, optimizer, len(y), 32)
    keys = [RunKeys.from_seed(s) for s in range(n)]
    state = jax.vmap(lambda k: init_train_state(model, optimizer, k))(
        jnp.stack([k.init for k in keys]))
    shuffle = jnp.stack([k.epoch(0)[0] for k in keys])
    dropout = jnp.stack([k.epoch(0)[1] for k in keys])
    seed_states = [jax.tree_util.tree_map(lambda a, i=i: a[i], state) for i in range(n)]

    def compiled(fn, *args):  # as bnlab compiles (runner.VariantTrainer.compile)
        return jax.jit(fn).lower(*args).compile(compiler_options())

    single = compiled(epoch, seed_states[0], x, y, shuffle[0], dropout[0])
    vmapped = compiled(jax.vmap(epoch, in_axes=(0, None, None, 0, 0)), state, x, y, shuffle,
                       dropout)
    shared = compiled(jax.vmap(epoch, in_axes=(0, None, None, None, 0)), state, x, y,
                      shuffle[0], dropout)
    mapped = compiled(lambda s, a, b: jax.lax.map(lambda t: epoch(t[0], x, y, t[1], t[2]),
                                                  (s, a, b)), state, shuffle, dropout)
    grouped = compiled(over_seeds(epoch, (0, None, None, 0, 0), n), state, x, y, shuffle,
                       dropout)
    return {
        "bnlab": lambda: grouped(state, x, y, shuffle, dropout),
        "vmap": lambda: vmapped(state, x, y, shuffle, dropout),
        "vmap, shared order": lambda: shared(state, x, y, shuffle[0], dropout),
        "lax.map": lambda: mapped(state, shuffle, dropout),
        "separate": lambda: [single(seed_states[i], x, y, shuffle[i], dropout[i])
                             for i in range(n)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="baseline,bn_after,bn_before")
    parser.add_argument("--seeds", default="1,5,10")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/bnlab-bench-cache"))
    args = parser.parse_args()
    splits = load_dataset("fashion_mnist", cache_dir=args.cache_dir)
    x, y = jnp.asarray(splits.x_train), jnp.asarray(splits.y_train)
    names = ("bnlab", "vmap", "vmap, shared order", "lax.map", "separate")
    table = Table(title="seconds per model-epoch (median of repeats); ratio to separate runs")
    for column in ("model", "N", *names, *(f"{k} ÷ separate" for k in names[:4])):
        table.add_column(column, justify="right")
    for name in args.models.split(","):
        for n in map(int, args.seeds.split(",")):
            calls = layouts(name, n, x, y)
            for call in calls.values():
                jax.block_until_ready(call())  # warm-up
            times: dict[str, list[float]] = {k: [] for k in calls}
            for _ in range(args.repeats):  # interleaved: drift hits every layout alike
                for key, call in calls.items():
                    start = time.perf_counter()
                    jax.block_until_ready(call())
                    times[key].append((time.perf_counter() - start) / n)
            med = {k: statistics.median(v) for k, v in times.items()}
            table.add_row(name, str(n), *(f"{med[k]:.3f}" for k in names),
                          *(f"{med[k] / med['separate']:.2f}" for k in names[:4]))
            print(name, n, {k: round(v, 3) for k, v in med.items()}, flush=True)
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
