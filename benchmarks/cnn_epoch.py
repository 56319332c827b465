"""One training epoch of the `cnn` preset's BN network (`cnn_bn_after`), side by side.

Every engine trains the same network — Reshape(28, 28, 1) → [Conv 3×3 32, ReLU, BN, MaxPool 2]
→ [Conv 3×3 64, ReLU, BN, MaxPool 2] → Dense 128, ReLU, BN → Dense 10 — with SGD (lr 0.01,
momentum 0.9) at batch 64 on the first `--rows` real Fashion-MNIST training images, for
`--repeats` timed epochs after one warm-up epoch (compilation, allocation), each engine in a
process of its own with `--threads` threads:

  bnlab ×1      bnlab's compiled epoch (`train.engine.make_train_epoch`, `jit` + `lax.scan`),
                one seed on one JAX CPU device that uses every thread
  bnlab ×5      five seeds in one program laid out as `bnlab run` lays them out (one device
                per thread, seeds one after the other on each: `train.seeds.over_seeds`);
                seconds per seed
  torch NCHW    PyTorch eager (oneDNN), the idiomatic loop, `torch.set_num_threads`
  torch NHWC    the same with `channels_last` memory format
  keras         Keras 3 `model.fit` on its JAX backend (the `keras` of the test extra)

and two floors from the same process as the orchestrator: the epoch's convolution and matrix
FLOPs (forward, weight gradients, input gradients but the first layer's) at the rate of a
2048³ sgemm (NumPy float32). Seconds are wall-clock training only (no evaluation); the table
gives the median and the range over the repeats. Run:

    .venv/bin/python benchmarks/cnn_epoch.py --rows 12800 --repeats 3 [--out results/FILE.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BATCH, LR, MOMENTUM = 64, 0.01, 0.9
ENGINES = ("bnlab×1", "bnlab×5", "torch-nchw", "torch-nhwc", "keras")


def epoch_flops(rows: int) -> float:
    """The convolution and matrix FLOPs of one training epoch over ``rows`` images: forward,
    weight gradient and input gradient (the first convolution's input needs none)."""
    conv1 = 2 * 28 * 28 * 9 * 1 * 32
    conv2 = 2 * 14 * 14 * 9 * 32 * 64
    dense1, dense2 = 2 * 3136 * 128, 2 * 128 * 10
    per_image = conv1 * 2 + (conv2 + dense1 + dense2) * 3
    return float(per_image) * rows


def sgemm_rate(threads: int) -> float:
    """FLOP/s of a 2048³ float32 product, best of 5 (NumPy's BLAS with ``threads``)."""
    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(5))
    return 2 * 2048**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def load_rows(rows: int) -> tuple[np.ndarray, np.ndarray]:
    from bnlab.api.setup import load_fashion_mnist

    splits = load_fashion_mnist(download=False)
    return splits.x_train[:rows], splits.y_train[:rows].astype(np.int32)


def run_bnlab(x, y, seeds: int, repeats: int) -> list[float]:
    import jax

    from bnlab.nn.zoo import get_model
    from bnlab.train.engine import RunKeys, fixed, init_train_states, make_train_epoch
    from bnlab.train.seeds import over_seeds, seeds_to_run

    model = get_model("cnn_bn_after")
    import optax

    optimizer = optax.sgd(LR, momentum=MOMENTUM)
    run_seeds = seeds_to_run(list(range(42, 42 + seeds)))
    keys = RunKeys.for_seeds(run_seeds)
    states = init_train_states(fixed(model, optimizer), keys)
    epoch = jax.jit(over_seeds(make_train_epoch(fixed(model, optimizer), len(y), BATCH),
                               (0, 0, 0, None, None, 0, 0), len(run_seeds),
                               convolutional=True), donate_argnums=0)
    images, labels = jax.device_put(x), jax.device_put(y)
    active = np.ones(len(run_seeds), bool)
    times = []
    for e in range(repeats + 1):
        shuffle, dropout = keys.epoch(e)
        start = time.perf_counter()
        states, metrics = epoch(states, {}, active, images, labels, shuffle, dropout)
        jax.block_until_ready(metrics.loss)
        times.append(time.perf_counter() - start)
    return [t / seeds for t in times[1:]]


def run_torch(x, y, repeats: int, channels_last: bool, threads: int) -> list[float]:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    nn = torch.nn

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(),
                nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01), nn.MaxPool2d(2)]

    model = nn.Sequential(*block(1, 32), *block(32, 64), nn.Flatten(), nn.Linear(3136, 128),
                          nn.ReLU(), nn.BatchNorm1d(128, eps=1e-3, momentum=0.01),
                          nn.Linear(128, 10))
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    images = torch.from_numpy(x).float().div_(255.0).unsqueeze(1)
    labels = torch.from_numpy(y).long()
    times = []
    for _ in range(repeats + 1):
        order = torch.randperm(len(labels))
        start = time.perf_counter()
        for i in range(0, len(labels), BATCH):
            rows = order[i:i + BATCH]
            batch = images[rows].contiguous(memory_format=memory)
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(batch), labels[rows])
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return times[1:]


def run_keras(x, y, repeats: int) -> list[float]:
    os.environ["KERAS_BACKEND"] = "jax"
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((28, 28)), layers.Reshape((28, 28, 1)),
        layers.Conv2D(32, 3, padding="same", activation="relu"), layers.BatchNormalization(),
        layers.MaxPooling2D(), layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.BatchNormalization(), layers.MaxPooling2D(), layers.Flatten(),
        layers.Dense(128, activation="relu"), layers.BatchNormalization(),
        layers.Dense(10, activation="softmax")])
    model.compile(keras.optimizers.SGD(LR, momentum=MOMENTUM),
                  "sparse_categorical_crossentropy")
    images = x.astype(np.float32) / 255.0
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        model.fit(images, y, batch_size=BATCH, epochs=1, verbose=0)
        times.append(time.perf_counter() - start)
    return times[1:]


def engine_main(args: argparse.Namespace) -> None:
    x, y = load_rows(args.rows)
    if args.engine.startswith("bnlab"):
        times = run_bnlab(x, y, 5 if args.engine == "bnlab×5" else 1, args.repeats)
    elif args.engine.startswith("torch"):
        times = run_torch(x, y, args.repeats, args.engine == "torch-nhwc", args.threads)
    else:
        times = run_keras(x, y, args.repeats)
    print(json.dumps({"engine": args.engine, "seconds": times}))


def engine_env(engine: str, threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    devices = threads if engine == "bnlab×5" else 1  # ×5: as `bnlab run` (one per core)
    return env | {"JAX_NUM_CPU_DEVICES": str(devices), "JAX_PLATFORMS": "cpu",
                  "OMP_NUM_THREADS": str(threads)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=12_800)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="also write the table as Markdown")
    args = parser.parse_args()
    if args.engine:
        engine_main(args)
        return
    results = {}
    for engine in args.engines.split(","):
        done = subprocess.run([sys.executable, __file__, "--engine", engine, "--rows",
                               str(args.rows), "--repeats", str(args.repeats), "--threads",
                               str(args.threads)], capture_output=True, text=True,
                              env=engine_env(engine, args.threads))
        if done.returncode:
            print(f"NOTE: {engine} failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        results[engine] = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
        print(f"{engine}: {results[engine]}", flush=True)
    rate = sgemm_rate(args.threads)
    floor = epoch_flops(args.rows) / rate
    torch_best = min((statistics.median(results[e]) for e in ("torch-nchw", "torch-nhwc")
                      if e in results), default=None)
    lines = [f"CNN epoch ({args.rows:,} rows, batch {BATCH}, cnn_bn_after), {args.threads} "
             f"threads, {platform.processor() or platform.machine()}; sgemm {rate / 1e9:.0f} "
             f"GFLOP/s; epoch {epoch_flops(args.rows) / 1e9:.1f} GFLOP → floor {floor:.2f} s",
             "", "| engine | s/epoch (median) | range | × floor | × best PyTorch |",
             "|---|---|---|---|---|"]
    for engine, times in results.items():
        median = statistics.median(times)
        ratio = f"{median / torch_best:.2f}" if torch_best else "–"
        lines.append(f"| {engine} | {median:.2f} | {min(times):.2f}–{max(times):.2f} | "
                     f"{median / floor:.1f} | {ratio} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(f"# CNN epoch speed\n\nCommand: `{' '.join(sys.argv)}`\n\n{table}\n")


if __name__ == "__main__":
    main()
