"""The engine protocol of benchmarks/epoch_speed.py, shared by every engine script.

An engine is a script run by its own interpreter (each engine has its own virtual environment):

    <python> benchmarks/engines/<name>.py --model {baseline,bn_after,bn_before} --epochs E
        --seed S --data PATH.npz --threads T [--seeds N] [--device {cpu,gpu}]
        [--learning-rate LR]

It trains the notebook's model on the data in PATH.npz (written by the orchestrator with
`np.savez`: uint8 `x_train (55000, 28, 28)`, int32 `y_train (55000,)`, uint8 `x_val (5000, 28, 28)`,
int32 `y_val (5000,)`), prints progress on stderr, and prints exactly one JSON object as the last
line of stdout:

    {"engine": str, "model": str, "threads": int, "seeds": int, "device": str,
     "epoch_seconds": [float per epoch, the first included],
     "first_epoch_seconds": float,
     "history": {"loss": [...], "accuracy": [...], "val_loss": [...], "val_accuracy": [...]},
     "versions": {package: version}}

An epoch's seconds are wall-clock training plus validation evaluation. With `--seeds N > 1` an
engine trains N models per epoch (history entries are then lists of N values per epoch); an
engine that cannot do that exits with status 2 and one line on stderr. `--device gpu` asks for
the engine's GPU path (the data on the GPU once, the epoch on it); an engine without one, or on a
machine whose framework sees no GPU, exits with status 2 and one line on stderr. `device` in the
result names what actually ran the epoch (e.g. "cpu", "gpu:NVIDIA H200").

Scripts import this file as `protocol` (their own folder is first on `sys.path`); it needs only
the standard library and NumPy.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

MODELS = ("baseline", "bn_after", "bn_before")
ARRAYS = {"x_train": (55_000, 28, 28), "y_train": (55_000,), "x_val": (5_000, 28, 28),
          "y_val": (5_000,)}
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
DEVICES = ("cpu", "gpu")


def parse_args(description: str) -> argparse.Namespace:
    """Parse the protocol's command line (the same for every engine)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", required=True, choices=MODELS)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data", required=True, help="npz written by epoch_speed.py")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    parser.add_argument("--learning-rate", type=float, default=1e-3,
                        help="SGD learning rate (the notebook's 1e-3; sweep_speed.py varies it)")
    args = parser.parse_args()
    if args.epochs < 1 or args.threads < 1 or args.seeds < 1:
        parser.error("--epochs, --threads and --seeds must be at least 1")
    return args


def load_data(path: str) -> dict[str, np.ndarray]:
    """Load and check the orchestrator's npz: uint8 images, int32 labels, the shapes above."""
    with np.load(path, allow_pickle=False) as npz:
        data = {name: npz[name] for name in ARRAYS}
    for name, shape in ARRAYS.items():
        want = np.uint8 if name.startswith("x") else np.int32
        if data[name].shape != shape or data[name].dtype != want:
            raise SystemExit(f"{path}: {name} is {data[name].dtype}{data[name].shape}, "
                             f"expected {np.dtype(want)}{shape}")
    return data


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the result line."""
    print(message, file=sys.stderr, flush=True)


def refuse(message: str) -> None:
    """Exit with status 2 and one line: this engine cannot run what was asked."""
    log(message)
    raise SystemExit(2)


def emit(*, engine: str, args: argparse.Namespace, epoch_seconds: list[float],
         history: dict[str, list[Any]], versions: dict[str, str], device: str) -> None:
    """Print the one JSON result line on stdout."""
    result = {
        "engine": engine,
        "model": args.model,
        "threads": args.threads,
        "seeds": args.seeds,
        "device": device,
        "epoch_seconds": [float(s) for s in epoch_seconds],
        "first_epoch_seconds": float(epoch_seconds[0]),
        "history": {key: history[key] for key in HISTORY_KEYS},
        "versions": versions,
    }
    print(json.dumps(result, default=float), flush=True)  # default: NumPy scalars
