"""Does one wide first-layer product beat per-member products for a sweep's members?

Members of one seed see the same batch, so the first Dense layer's products of P points can be
one product per seed: ``(batch, 784) @ (784, 300·P)`` forward and ``(784, batch) @ (batch,
300·P)`` for the weight gradient, instead of P products of ``(batch, 784) @ (784, 300)`` (what
vmapping over members gives). This times the three layouts of those two products for S seeds ×
P points, alone (no other layer), in one process, each inside a compiled 200-step loop whose
steps depend on each other (nothing hoisted):

- **batched**: every member its own product, the batch broadcast per point (vmap's layout);
- **wide**: one product per seed with the kernels as ``(P, 784, 300)`` (output transposed);
- **contiguous**: one product per seed with the kernels side by side, ``(784, P·300)``.

    .venv/bin/python benchmarks/wide_product.py --seeds 5 --points 7 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

BATCH, INPUTS, UNITS, STEPS = 32, 784, 300, 200


def layouts(seeds: int, points: int) -> dict:
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(k1, (seeds, BATCH, INPUTS))
    w = jax.random.normal(k2, (seeds, points, INPUTS, UNITS))
    dy = jax.random.normal(k3, (seeds, points, BATCH, UNITS))
    side_by_side = jnp.transpose(w, (0, 2, 1, 3)).reshape(seeds, INPUTS, points * UNITS)
    dy_side = jnp.transpose(dy, (0, 2, 1, 3)).reshape(seeds, BATCH, points * UNITS)

    def batched(x, w, dy):
        xm = jnp.broadcast_to(x[:, None], (seeds, points, BATCH, INPUTS)) + 0.0
        return jnp.einsum("spbi,spio->spbo", xm, w), jnp.einsum("spbi,spbo->spio", xm, dy)

    def wide(x, w, dy):
        return jnp.einsum("sbi,spio->spbo", x, w), jnp.einsum("sbi,spbo->spio", x, dy)

    def contiguous(x, w, dy):
        return jnp.einsum("sbi,sin->sbn", x, w), jnp.einsum("sbi,sbn->sin", x, dy)

    return {"batched": (batched, (x, w, dy)), "wide": (wide, (x, w, dy)),
            "contiguous": (contiguous, (x, side_by_side, dy_side))}


def looped(product):
    def run(x, w, dy):
        def step(carry, _):
            y, g = product(x + carry, w, dy)  # each step depends on the last
            return carry + 1e-30 * (y.ravel()[0] + g.ravel()[0]), None
        return jax.lax.scan(step, jnp.float32(0), None, length=STEPS)[0]
    return jax.jit(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--points", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    programs = {name: (looped(f), arguments)
                for name, (f, arguments) in layouts(args.seeds, args.points).items()}
    for program, arguments in programs.values():
        program(*arguments).block_until_ready()
    times: dict[str, list[float]] = {name: [] for name in programs}
    for _ in range(args.repeats):  # the layouts take turns within each repeat
        for name, (program, arguments) in programs.items():
            start = time.perf_counter()
            program(*arguments).block_until_ready()
            times[name].append((time.perf_counter() - start) / STEPS)
    print(f"{args.seeds} seeds × {args.points} points, batch {BATCH}, on "
          f"{jax.devices()[0].device_kind}; ms per step (forward + weight gradient of the "
          f"first layer), median and range of {args.repeats}:")
    for name, values in times.items():
        print(f"  {name:>10}: {1e3 * statistics.median(values):.2f} "
              f"({1e3 * min(values):.2f}–{1e3 * max(values):.2f})")


if __name__ == "__main__":
    main()
