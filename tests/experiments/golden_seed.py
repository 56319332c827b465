"""The real-data regression run, its golden numbers and their tolerances: the notebook's three
models, seeds 42-44 in one program, 2 epochs on the first 6,424 training rows (200 steps of 32
and a ragged last batch of 24 per epoch, as the notebook's 55,000 end).

``golden_seed.json`` holds what one commit gave, with the commit, the CPU and the versions
that produced it, and how far the same run moves when XLA compiles it for each older
instruction set this CPU has (``--xla_cpu_max_isa``: SSE4.2, AVX, AVX2, AVX-512 use other
vector widths and kernels, so other summation orders and roundings, which four hundred SGD
steps amplify). That measured spread is the stand-in for another CPU's float32 kernels: the
tolerances are ``SAFETY`` times it, and the script refuses tolerances too loose to tell one
seed from another (what a change of initialization or data order moves). A change that means
to move the numbers regenerates the file:

    .venv/bin/python -m tests.experiments.golden_seed
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bnlab.config.experiment import ExperimentConfig
from bnlab.config.files import load_experiment
from bnlab.data.datasets import Splits
from bnlab.store.record import VariantRecord

GOLDEN = Path(__file__).with_name("golden_seed.json")
TRAIN_ROWS = 6424
# The instruction sets the spread is measured over (those the CPU lacks are skipped).
ISAS = ("SSE4_2", "AVX", "AVX2", "AVX512")
# Tolerance = SAFETY × the largest deviation measured, per kind of metric (losses, relative;
# accuracies, in predictions changed, at least one).
SAFETY = 4.0
LOSSES = ("loss", "val_loss")
ACCURACIES = {"val_accuracy": 5_000, "test_accuracy": 10_000}  # metric: predictions behind it


def experiment(fashion_mnist: Splits) -> tuple[ExperimentConfig, Splits]:
    """The run's experiment and data."""
    config = dataclasses.replace(load_experiment("seed"), epochs=2, seeds=3)
    return config, fashion_mnist.subset(train=TRAIN_ROWS)


def finals(records: Sequence[VariantRecord]) -> dict[str, dict[str, list[float]]]:
    """Per model, the final values the regression test compares, per seed."""
    return {r.name: {"loss": r.history.final("loss").tolist(),
                     "val_loss": r.history.final("val_loss").tolist(),
                     "val_accuracy": r.history.final("val_accuracy").tolist(),
                     "test_accuracy": r.test_accuracy.tolist()} for r in records}


def deviations(golden: dict, other: dict) -> dict[str, float]:
    """The largest deviation of ``other`` from ``golden`` per metric: relative for losses,
    absolute for accuracies."""
    out = {}
    for metric in (*LOSSES, *ACCURACIES):
        want = np.array([golden[name][metric] for name in golden])
        got = np.array([other[name][metric] for name in golden])
        gap = np.abs(got - want) / (np.abs(want) if metric in LOSSES else 1.0)
        out[metric] = float(gap.max())
    return out


def tolerances(spread: dict[str, float]) -> dict[str, float]:
    """``SAFETY`` × the measured spread, pooled per kind of metric: the losses' largest
    relative deviation; the accuracies' largest number of predictions that changed (at least
    one), as a fraction of each metric's predictions."""
    loss = SAFETY * max(spread[m] for m in LOSSES)
    changed = max(1.0, *(round(spread[m] * n) for m, n in ACCURACIES.items()))
    return {**dict.fromkeys(LOSSES, loss),
            **{m: SAFETY * changed / n for m, n in ACCURACIES.items()}}


def seed_separation(golden: dict) -> dict[str, float]:
    """Per loss, the smallest relative difference between two seeds of one model: a
    tolerance at half of it or more could not tell the seeds apart."""
    out = {}
    for metric in LOSSES:
        gaps = []
        for values in (np.array(golden[name][metric]) for name in golden):
            pairs = np.abs(values[:, None] - values[None, :])[np.triu_indices(len(values), 1)]
            gaps.append(pairs / np.abs(values).max())
        out[metric] = float(np.concatenate(gaps).min())
    return out


def _train() -> dict:
    from bnlab.api import configure_jax, load_fashion_mnist
    from bnlab.experiments.runner import run_experiment

    configure_jax(cpu_devices=2, compilation_cache=False)  # as the tests run (conftest)
    config, splits = experiment(load_fashion_mnist(download=False))
    with tempfile.TemporaryDirectory() as folder:
        return finals(run_experiment(config, splits, Path(folder)))


def _train_in_child(isa: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if isa is not None:
        env["XLA_FLAGS"] = f"--xla_cpu_max_isa={isa}"
    out = subprocess.run([sys.executable, "-m", "tests.experiments.golden_seed", "--train"],
                         env=env, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[2])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if sys.argv[1:] == ["--train"]:
        print(json.dumps(_train()))
        return
    golden = _train_in_child(None)
    flags = _cpu_flags()
    measured = {}
    for isa in ISAS:
        if isa.lower().replace("avx512", "avx512f") not in flags:
            continue
        measured[isa] = deviations(golden, _train_in_child(isa))
        print(f"{isa}: {measured[isa]}")
    spread = {metric: max(m[metric] for m in measured.values()) for metric in measured[ISAS[0]]}
    tolerance = tolerances(spread)
    separation = seed_separation(golden)
    loose = [m for m in separation if tolerance[m] >= separation[m] / 2]
    if loose:
        sys.exit(f"tolerances {tolerance} cannot tell seeds apart for {loose} "
                 f"(smallest seed difference {separation}): not written")
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                            text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    document = {"commit": commit, "cpu": _cpu(), "python": platform.python_version(),
                "packages": {name: _version(name) for name in ("jax", "jaxlib", "optax")},
                "deviation_per_isa": measured, "safety": SAFETY, "tolerance": tolerance,
                "seed_separation": separation, "finals": golden}
    GOLDEN.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {GOLDEN} ({commit}, {document['cpu']}); tolerances {tolerance}")


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
