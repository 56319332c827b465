"""The real-data regression run and its golden numbers: the notebook's three models, seeds
42-44 in one program, 2 epochs on the first 6,424 training rows (200 steps of 32 and a ragged
last batch of 24 per epoch, as the notebook's 55,000 end).

``golden_seed.json`` holds what one commit gave, with the commit, the CPU and the versions
that produced it. A change that means to move these numbers regenerates the file:

    .venv/bin/python -m tests.experiments.golden_seed
"""

from __future__ import annotations

import dataclasses
import json
import platform
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bnlab.config.experiment import ExperimentConfig
from bnlab.config.files import load_experiment
from bnlab.data.datasets import Splits
from bnlab.store.record import VariantRecord

GOLDEN = Path(__file__).with_name("golden_seed.json")
TRAIN_ROWS = 6424


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


def main() -> None:
    from bnlab.api import configure_jax, load_fashion_mnist
    from bnlab.experiments.runner import run_experiment

    configure_jax(cpu_devices=2, compilation_cache=False)  # as the tests run (conftest)
    config, splits = experiment(load_fashion_mnist(download=False))
    with tempfile.TemporaryDirectory() as folder:
        records = run_experiment(config, splits, Path(folder))
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                            text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    document = {"commit": commit, "cpu": _cpu(), "python": platform.python_version(),
                "packages": {name: _version(name) for name in ("jax", "jaxlib", "optax")},
                "finals": finals(records)}
    GOLDEN.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {GOLDEN} ({commit}, {document['cpu']})")


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
