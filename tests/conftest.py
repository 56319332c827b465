"""Shared fixtures: the real Fashion-MNIST (when installed) and small synthetic splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from bnlab.data.datasets import Splits

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def fashion_mnist(tmp_path_factory) -> Splits:
    """The real dataset from Debian's dataset-fashion-mnist (skipped when absent)."""
    from bnlab.data.datasets import load_dataset

    if not (SYSTEM_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make data)")
    return load_dataset("fashion_mnist", cache_dir=tmp_path_factory.mktemp("cache"),
                        download=False)
