"""Small synthetic splits and a tiny model for fast unit tests (never used in the main path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bnlab.data.datasets import Splits
from bnlab.experiments.observer import Observer
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.layers import Dense, Flatten
from bnlab.nn.model import Sequential

# The tiny model as an experiment file's layers: a 10-unit output, so that a stored config
# reads back as a Fashion-MNIST experiment (the splits' labels 0..2 are valid classes of it).
TINY_LAYERS = (
    {"type": "flatten"},
    {"type": "batch_norm"},
    {"type": "dense", "units": 8, "activation": "relu"},
    {"type": "batch_norm"},
    {"type": "dense", "units": 10, "activation": "softmax"},
)


def tiny_splits(n_train: int = 70, n_val: int = 20, n_test: int = 20, seed: int = 0) -> Splits:
    """Random 4×4 'images' in 3 classes whose class shifts the mean pixel (learnable)."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, 3, n).astype(np.int32)
        x = rng.integers(0, 120, (n, 4, 4)) + 60 * y[:, None, None]
        return x.astype(np.uint8), y

    x_train, y_train = make(n_train)
    x_val, y_val = make(n_val)
    x_test, y_test = make(n_test)
    return Splits(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test,
                  y_test=y_test, class_names=("a", "b", "c"), sources=())


def tiny_model() -> Sequential:
    """Flatten → BN → Dense(8, relu) → BN → Dense(3, softmax) for 4×4 inputs."""
    return Sequential((Flatten(), BatchNorm(), Dense(8, activation="relu"), BatchNorm(),
                       Dense(3, activation="softmax")), input_shape=(4, 4), name="tiny")


class Hooks(Observer):
    """An observer that calls a test's hooks — ``on_epoch(point, record)``,
    ``on_compiled(label, seconds)`` — and keeps what it is told: ``notes``, ``warnings``,
    ``plans`` and ``repaired`` lines."""

    def __init__(self, on_epoch=None, on_compiled=None) -> None:
        self.on_epoch, self.on_compiled = on_epoch, on_compiled
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.plans: list = []
        self.repaired: list[str] = []

    def epoch(self, point, record) -> None:
        if self.on_epoch:
            self.on_epoch(point, record)

    def compiled(self, label, seconds) -> None:
        if self.on_compiled:
            self.on_compiled(label, seconds)

    def planned(self, plans, repaired) -> None:
        self.plans.append(dict(plans))
        self.repaired.extend(repaired)

    def note(self, text) -> None:
        self.notes.append(text)

    def warning(self, text) -> None:
        self.warnings.append(text)


def run_stopped_after_one_epoch(config, splits: Splits, run_dir) -> None:
    """``config`` run into ``run_dir`` and interrupted (as Ctrl-C does) when its first epoch
    has been saved: an unfinished run."""
    import pytest

    from bnlab.experiments.runner import run_experiment

    class Stop(KeyboardInterrupt):
        pass

    def stop(name, record):
        raise Stop

    with pytest.raises(Stop):
        run_experiment(config, splits, run_dir, observer=Hooks(on_epoch=stop))


def damage(path: Path, how: str) -> None:
    """``path`` deleted, truncated to its first half, or ``overwrite``: 16 bytes in its
    middle replaced by 0xFF."""
    data = path.read_bytes()
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # 16 bytes in the middle overwritten with 0xFF
        middle = max(0, len(data) // 2 - 8)
        path.write_bytes(data[:middle] + b"\xff" * 16 + data[middle + 16:])
