"""How should N seeds of one model share the machine? Per-model-epoch cost, side by side.

For each model and N in --seeds, in one invocation, with repeats interleaved so drift hits
every layout alike (median of --repeats training epochs after compilation):

  bnlab     what ``bnlab run --seeds N`` does on this backend (``train.seeds.over_seeds``):
            the seeds spread over the devices (on CPU one per core, as the ``bnlab`` command
            sets up), on each device one seed plainly, several in one ``vmap`` or as groups
            (``train.seeds.seeds_per_vmap``); N seeds that do not fill the devices evenly
            are padded once, before the program (``train.seeds.seeds_to_run``), as bnlab does
  spread by 5  like bnlab, with vmapped groups of up to 5 seeds per device instead of 3
  vmap      one program, ``jax.vmap`` over all N seeds, one device
  vmap by 5  one program, ``jax.lax.map`` over vmapped groups of 5 seeds, one device (what
            bnlab runs where JAX has one CPU device, and ran before it spread seeds)
  vmap shared order  ``vmap`` over all N seeds with one data order for all of them: a
            first Dense layer fed by the data becomes one wide product over the seeds
  lax.map   one program, the seeds' epochs one after another inside it (``jax.lax.map``)
  separate  N single-seed programs called one after another (N runs of ``--seeds 1``)

All but ``bnlab`` and ``spread by 5`` run on the first device; every product may use every
core.

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

from bnlab.api import configure_jax
from bnlab.data.datasets import load_dataset
from bnlab.nn.zoo import get_model
from bnlab.train.engine import RunKeys, compiler_options, fixed, init_train_states, make_train_epoch
from bnlab.train.seeds import over_seeds, pad_seeds, seeds_to_run

LAYOUTS = ("bnlab", "spread by 5", "vmap", "vmap by 5", "vmap shared order", "lax.map",
           "separate")


def layouts(name: str, n: int, x: jax.Array, y: jax.Array,
            wanted: list[str]) -> dict[str, Callable[[], object]]:
    """The ``wanted`` ways to train ``n`` seeds of model ``name`` for one epoch, as no-argument
    calls (only those are compiled)."""
    model, optimizer = get_model(name), optax.sgd(1e-3)
    full_epoch = make_train_epoch(fixed(model, optimizer), len(y), 32)

    def epoch(state, x, y, shuffle, dropout):  # no sweep scalars, every seed training
        return full_epoch(state, {}, True, x, y, shuffle, dropout)

    keys = RunKeys.for_seeds(range(n))
    state = init_train_states(fixed(model, optimizer), keys)
    shuffle, dropout = keys.epoch(0)
    seed_states = [jax.tree_util.tree_map(lambda a, i=i: a[i], state) for i in range(n)]

    def compiled(fn, *args):  # as bnlab compiles (trainer.SeedBatchTrainer.compile)
        return jax.jit(fn).lower(*args).compile(compiler_options())

    seeded = (0, None, None, 0, 0)
    first = jax.devices()[:1]
    run = len(seeds_to_run(range(n)))  # bnlab's padded seed count (5 on 2 devices → 6)
    programs = {  # layout -> (function, its arguments)
        "bnlab": (over_seeds(epoch, seeded, run),
                  (pad_seeds(state, run), x, y, pad_seeds(shuffle, run), pad_seeds(dropout, run))),
        "vmap": (jax.vmap(epoch, in_axes=seeded), (state, x, y, shuffle, dropout)),
        "spread by 5": (over_seeds(epoch, seeded, n, group=5), (state, x, y, shuffle, dropout)),
        "vmap by 5": (over_seeds(epoch, seeded, n, group=5, devices=first),
                      (state, x, y, shuffle, dropout)),
        "vmap shared order": (jax.vmap(epoch, in_axes=(0, None, None, None, 0)),
                               (state, x, y, shuffle[0], dropout)),
        "lax.map": (lambda s, a, b: jax.lax.map(lambda t: epoch(t[0], x, y, t[1], t[2]),
                                                (s, a, b)), (state, shuffle, dropout)),
    }
    calls: dict[str, Callable[[], object]] = {}
    for layout in wanted:
        if layout == "separate":
            single = compiled(epoch, seed_states[0], x, y, shuffle[0], dropout[0])
            calls[layout] = lambda single=single: [
                single(seed_states[i], x, y, shuffle[i], dropout[i]) for i in range(n)]
        else:
            fn, args = programs[layout]
            program = compiled(fn, *args)
            # The arguments where the program wants them, once (as SeedBatchTrainer places the
            # data), so that a timed call copies nothing between devices.
            placed = jax.device_put(args, program.input_shardings[0])
            calls[layout] = lambda program=program, placed=placed: program(*placed)
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="baseline,bn_after,bn_before")
    parser.add_argument("--seeds", default="1,5,10")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layouts", default=",".join(LAYOUTS),
                        help="comma-separated subset; separate is always run (the ratios' base)")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/bnlab-bench-cache"))
    args = parser.parse_args()
    configure_jax(compilation_cache=False)  # one CPU device per core, as the bnlab command
    names = [k for k in LAYOUTS if k in args.layouts.split(",") and k != "separate"]
    if unknown := set(args.layouts.split(",")) - set(LAYOUTS):
        parser.error(f"unknown layout(s) {sorted(unknown)}; choose from {', '.join(LAYOUTS)}")
    names.append("separate")
    splits = load_dataset("fashion_mnist", cache_dir=args.cache_dir)
    x, y = jnp.asarray(splits.x_train), jnp.asarray(splits.y_train)
    device = jax.devices()[0]
    table = Table(title="seconds per model-epoch (median of repeats); ratio to separate runs; "
                        f"{jax.device_count()} × {device.platform}:{device.device_kind}")
    for column in ("model", "N", *names, *(f"{k} ÷ separate" for k in names[:-1])):
        table.add_column(column, justify="right")
    for name in args.models.split(","):
        for n in map(int, args.seeds.split(",")):
            calls = layouts(name, n, x, y, names)
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
                          *(f"{med[k] / med['separate']:.2f}" for k in names[:-1]))
            print(name, n, {k: round(v, 3) for k, v in med.items()}, flush=True)
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
