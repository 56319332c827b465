"""Two lower bounds on an epoch's seconds, measured with NumPy float32 matrix products.

An epoch of the notebook's recipe is 1,719 SGD steps at batch 32 over 55,000 images plus a
forward pass over the 5,000 validation images. Its matrix products, per model, with B the batch
and dims 784 → 300 → 100 → 10:

    forward           X·W      (B, n_in) @ (n_in, n_out)       every Dense layer
    weight gradient   Xᵀ·dY    (n_in, B) @ (B, n_out)          every Dense layer
    input gradient    dY·Wᵀ    (B, n_out) @ (n_out, n_in)      layers 2 and 3; layer 1 too in the
                                                               BN models, whose input BN's γ/β
                                                               need the gradient of its output

F_shape: each of a step's products at B = 32 timed alone (median over rounds of a timed block
of calls; the shapes take turns, see `time_round_robin`), summed, × 1,719 steps, plus the
validation forward products timed at B = 5,000. It is what an engine that did nothing but these
products, one after another, would need.

F_peak: the epoch's matrix-product FLOPs (2·m·k·n each; ≈ 64.6 GFLOP baseline, ≈ 90.5 BN) over
the rate of one large 2048³ sgemm (median over the same rounds): the machine's best-case throughput.

The thread count comes from the environment the orchestrator sets (OMP_NUM_THREADS,
OPENBLAS_NUM_THREADS, MKL_NUM_THREADS) and its CPU affinity mask; threadpoolctl, when installed,
enforces it too. OpenBLAS's kernels follow OPENBLAS_CORETYPE when set (the orchestrator sets
SkylakeX on AVX-512 CPUs OpenBLAS does not recognise; the chosen core is reported).
Prints one JSON object on stdout:  python benchmarks/floors.py --threads 2 [--models ...]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import json
import time
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np

DIMS = (784, 300, 100, 10)
BATCH = 32
TRAIN, VAL = 55_000, 5_000
STEPS = -(-TRAIN // BATCH)  # 1,719; the last step has 24 rows, counted as 32 (0.01 % high)
MODELS = ("baseline", "bn_after", "bn_before")
PEAK_N = 2048


def step_products(model: str, batch: int = BATCH) -> list[tuple[str, int, int, int]]:
    """(kind, m, k, n) of every matrix product of one training step, an m×k by k×n product."""
    products = []
    for layer, (n_in, n_out) in enumerate(itertools.pairwise(DIMS)):
        products.append(("forward", batch, n_in, n_out))
        products.append(("weight_grad", n_in, batch, n_out))
        if layer > 0 or model != "baseline":
            products.append(("input_grad", batch, n_out, n_in))
    return products


def val_products() -> list[tuple[str, int, int, int]]:
    return [("val_forward", VAL, n_in, n_out) for n_in, n_out in itertools.pairwise(DIMS)]


def epoch_flops(model: str) -> int:
    """Matrix-product FLOPs of one epoch: training forward+backward plus validation forward."""
    per_sample = sum(2 * m * k * n for _, m, k, n in step_products(model, batch=1))
    return per_sample * TRAIN + sum(2 * m * k * n for _, m, k, n in val_products())


def operands(kind: str, m: int, k: int, n: int, rng: np.random.Generator):
    """Operands laid out as a real step holds them (transposes are views, as in `x.T @ dy`)."""
    def r(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32)
    if kind == "weight_grad":      # Xᵀ·dY with X (B, n_in), dY (B, n_out)
        return r(k, m).T, r(k, n)
    if kind == "input_grad":       # dY·Wᵀ with W (n_in, n_out)
        return r(m, k), r(n, k).T
    return r(m, k), r(k, n)


def product_call(a: np.ndarray, b: np.ndarray) -> Callable[[], np.ndarray]:
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.float32)
    return lambda: np.matmul(a, b, out=out)


def calibrate(call: Callable[[], object], target: float = 2e-3) -> int:
    """Calls per timed block so that a block lasts about `target` seconds (fastest of 5 tries)."""
    fastest = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        call()
        fastest = min(fastest, time.perf_counter() - start)
    return max(1, int(target / max(fastest, 1e-7)))


def time_round_robin(calls: dict[Hashable, Callable[[], object]],
                     rounds: int) -> dict[Hashable, float]:
    """Median seconds per call of each entry of `calls`, over `rounds` timed blocks.

    The entries take turns, one block each per round, so that a stall of the machine (seconds
    long on these 2-vCPU VMs when a BLAS thread's vCPU is descheduled: a 20 µs product then
    takes 4-16 ms) hits every shape alike and the median over rounds discards it, instead of
    one shape's whole timing window landing inside it.
    """
    blocks = {key: calibrate(call) for key, call in calls.items()}
    times: dict[Hashable, list[float]] = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            start = time.perf_counter()
            for _ in range(blocks[key]):
                call()
            times[key].append((time.perf_counter() - start) / blocks[key])
    return {key: float(np.median(t)) for key, t in times.items()}


def blas_info() -> dict[str, str]:
    """NumPy's BLAS and, for OpenBLAS, the kernel set it chose at run time (e.g. SkylakeX)."""
    info = {"numpy": np.__version__}
    with contextlib.suppress(Exception):
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["blas"] = f"{blas.get('name')} {blas.get('version')}"
    libs = Path(np.__file__).parent.parent.glob("numpy.libs/*openblas*")
    for lib, name in itertools.product(libs, ("scipy_openblas_get_corename64_",
                                             "scipy_openblas_get_corename",
                                             "openblas_get_corename")):
        with contextlib.suppress(OSError, AttributeError):
            corename = getattr(ctypes.CDLL(str(lib)), name)
            corename.restype = ctypes.c_char_p
            info["openblas_core"] = corename().decode()
            break
    return info


def measure(models: list[str], rounds: int) -> dict:
    rng = np.random.default_rng(0)
    shapes = sorted({p for model in models for p in step_products(model)} | set(val_products()))
    calls: dict[Hashable, Callable[[], object]] = {
        p: product_call(*operands(*p, rng)) for p in shapes}
    calls["peak"] = product_call(*operands("forward", PEAK_N, PEAK_N, PEAK_N, rng))
    seconds = time_round_robin(calls, rounds)
    rate = 2 * PEAK_N**3 / seconds.pop("peak")
    result: dict = {"peak_gflops": rate / 1e9, "rounds": rounds, "products": [], "models": {}}
    for (kind, m, k, n), s in seconds.items():
        result["products"].append({"kind": kind, "m": m, "k": k, "n": n, "seconds": s,
                                   "gflops": 2 * m * k * n / s / 1e9})
    for model in models:
        step = sum(seconds[p] for p in step_products(model))
        val = sum(seconds[p] for p in val_products())
        flops = epoch_flops(model)
        result["models"][model] = {"f_shape": step * STEPS + val, "f_peak": flops / rate,
                                   "epoch_gflop": flops / 1e9}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=60,
                        help="timed blocks per shape, taking turns (a round lasts ≈ 0.1 s)")
    args = parser.parse_args()
    models = args.models.split(",")
    limiter = contextlib.nullcontext()
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(limits=args.threads)
    with limiter:
        result = measure(models, args.rounds)
    result["threads"] = args.threads
    result["versions"] = blas_info()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
