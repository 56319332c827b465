"""Shared fixtures: the real Fashion-MNIST (when on disk) and small synthetic splits."""

from __future__ import annotations

from pathlib import Path

import jax
import pytest
from platformdirs import user_cache_dir

from bnlab.data.datasets import Splits
from bnlab.errors import DataError

# Two CPU devices, as the `bnlab` command gives a 2-core machine (one per core), whatever this
# machine has: runs of several seeds then spread them over devices as they do for users.
if jax.config.jax_num_cpu_devices == -1:
    jax.config.update("jax_num_cpu_devices", 2)
# An implicit broadcast between arrays of different ranks is an error in the tests: bnlab's
# shapes are explicit, and a silent (n,) + (n, 1) would be a bug.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session")
def fashion_mnist() -> Splits:
    """The real dataset: Debian's dataset-fashion-mnist (`make data` installs it), else the
    copy `bnlab` downloaded into the user cache; skipped, saying so, when neither is there.
    Never downloads: the tests run offline."""
    from bnlab.data.datasets import load_dataset

    try:
        return load_dataset("fashion_mnist", cache_dir=Path(user_cache_dir("bnlab")) / "datasets",
                            download=False)
    except DataError as err:
        if "downloading is off" not in str(err):
            raise  # a damaged copy must fail the tests, not skip them
        pytest.skip(f"real Fashion-MNIST not on disk (make data, or run bnlab once): {err}")
