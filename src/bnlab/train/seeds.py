"""Seeds side by side: one program trains a batch of seeds, spread over devices and vmapped.

A run's seeds differ only in their keys, so one compiled program can train all of them: the
per-seed ``TrainState`` and keys carry a leading seed axis, and ``over_seeds`` maps a
single-seed function over it. How the seeds share the machine is a speed choice (measured by
``benchmarks/seed_batching.py``); every layout gives each seed the numbers it would get alone,
up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec


def seeds_per_vmap(devices: int, convolutional: bool = False) -> int | None:
    """Seeds per vmapped group on each of ``devices`` devices of JAX's default backend
    (``None``: all of a device's seeds in one vmap).

    CPU with one device per core: up to 3; CPU with one device for all cores: up to 5 (a
    larger vmap's working set leaves the cache). GPU: a batch-32 step leaves the device
    mostly idle, so every seed goes into one vmap. These are the fastest groupings that
    ``benchmarks/seed_batching.py`` measured (``benchmarks/results/``). A model with
    convolutions on CPU: 1, one seed after the other — a vmapped convolution with a kernel
    per seed becomes a grouped convolution, which XLA's CPU backend runs several times
    slower per seed than the seeds' convolutions one by one.
    """
    if jax.default_backend() != "cpu":
        return None
    if convolutional:
        return 1
    return 3 if devices > 1 else 5


def spread(seeds: int, devices: int) -> tuple[int, int]:
    """``(devices used, seeds per device)`` for ``seeds`` seeds on ``devices`` devices: the
    fewest seeds per device, on as few devices as give that (the least padding), e.g. 10
    seeds on 8 devices → 5 devices × 2, 5 seeds on 2 devices → 2 × 3 (one padding seed)."""
    per_device = -(-seeds // min(devices, seeds))
    return -(-seeds // per_device), per_device


def seeds_to_run(seeds: Sequence[int],
                 devices: Sequence[jax.Device] | None = None) -> tuple[int, ...]:
    """``seeds`` as ``over_seeds`` runs them on ``devices`` (default: every device of JAX's
    default backend): the last seed repeated until they fill every device used (``spread``),
    e.g. 5 seeds on 2 devices → 6. A caller that keeps its seed-stacked state at this size
    (``trainer.SeedBatchTrainer``, with ``pad_seeds``) spares every program the padding and
    un-padding of each leaf, which would otherwise about double its compilation."""
    used, per_device = spread(len(seeds), len(jax.devices() if devices is None else devices))
    return (*seeds, *[seeds[-1]] * (used * per_device - len(seeds)))


def pad_seeds(tree, count: int):
    """``tree``'s leaves, each ``(seeds, …)``, as ``(count, …)``: the last seed repeated."""
    return jax.tree_util.tree_map(
        lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], count - a.shape[0], axis=0)]), tree)


def over_seeds(fn: Callable, in_axes: tuple[int | None, ...], seeds: int,
               group: int | None = None,
               devices: Sequence[jax.Device] | None = None,
               convolutional: bool = False) -> Callable:
    """``fn`` over a leading seed axis of the arguments whose ``in_axes`` is 0 (the others,
    ``None``, are shared), as one program; every output has the seed axis in front.

    The seeds are spread over ``devices`` (default: every device of JAX's default backend;
    ``bnlab.configure_jax`` gives the CPU backend one device per core), as ``spread`` says, with
    ``jax.shard_map``; the seed axis is padded by repeating the last seed where needed, and the
    repeats are dropped from the outputs (5 seeds on 2 devices run as 3 + 3; callers that pad
    once themselves, ``seeds_to_run``, compile faster). A batch-32 product is too small to
    keep two threads busy, so seeds spread over one CPU device per core train faster than on
    one device using every core for each product. On each device:

    - one seed: a plain call, the axis dropped and restored (a vmap of size 1 turns every
      matrix product into a batched one, which is slower on CPU);
    - up to ``group`` seeds: ``jax.vmap``; ``group=None`` takes ``seeds_per_vmap`` (on CPU 3
      when the seeds spread over several devices, 5 on one, 1 for a ``convolutional``
      ``fn``; every seed elsewhere);
    - more: ``jax.lax.map`` over groups of ``group`` seeds, each group vmapped (the last may
      be smaller), or with ``group`` 1 over the seeds themselves, none vmapped.

    Every seed's numbers are the same, up to float rounding, whichever layout runs it.
    """
    devices = list(jax.devices() if devices is None else devices)
    used, per_device = spread(seeds, len(devices))
    devices = devices[:used]
    if group is None:
        group = seeds_per_vmap(len(devices), convolutional) or per_device
    local = _on_one_device(fn, in_axes, per_device, group)
    if len(devices) == 1:
        return local
    mesh = Mesh(np.array(devices), ("seeds",))
    specs = tuple(PartitionSpec() if axis is None else PartitionSpec("seeds") for axis in in_axes)
    sharded = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=PartitionSpec("seeds"),
                            check_vma=False)
    padded = per_device * len(devices)

    def spread_seeds(*args):
        if padded > seeds:
            args = [arg if axis is None else pad_seeds(arg, padded)
                    for arg, axis in zip(args, in_axes, strict=True)]
        return jax.tree_util.tree_map(lambda a: a[:seeds], sharded(*args))

    return spread_seeds


def _on_one_device(fn: Callable, in_axes: tuple[int | None, ...], seeds: int,
                   group: int) -> Callable:
    """``fn`` over ``seeds`` seeds on one device: plain, one vmap, or lax.map over vmapped
    groups (see ``over_seeds``)."""
    if seeds == 1:
        def single(*args):
            unbatched = [arg if axis is None else jax.tree_util.tree_map(lambda a: a[0], arg)
                         for arg, axis in zip(args, in_axes, strict=True)]
            return jax.tree_util.tree_map(lambda a: a[None], fn(*unbatched))

        return single
    if seeds <= group:
        return jax.vmap(fn, in_axes=in_axes)

    def grouped(*args):
        per_seed = [arg for arg, axis in zip(args, in_axes, strict=True) if axis is not None]

        def one_seed(seed_args):
            it = iter(seed_args)
            return fn(*[arg if axis is None else next(it)
                        for arg, axis in zip(args, in_axes, strict=True)])

        return jax.lax.map(one_seed, per_seed, batch_size=group if group > 1 else None)

    return grouped
