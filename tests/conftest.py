"""Shared fixtures: the real Fashion-MNIST (when on disk), small synthetic splits, and the
reference frameworks: Keras 3 on its JAX backend and PyTorch (CPU).

Keras and PyTorch are test-only dependencies; tests that compare against them take the
``keras`` / ``torch`` fixture and are skipped, not failed, where one is not installed.
Keras's backend is chosen when it is first imported, so the environment variable is set
here, before any test imports it."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest
from platformdirs import user_cache_dir

from bnlab.data.datasets import Splits
from bnlab.errors import DataError

os.environ["KERAS_BACKEND"] = "jax"
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


@pytest.fixture(scope="session")
def keras():
    """The ``keras`` module on the JAX backend (skips the test when Keras is absent)."""
    module = pytest.importorskip("keras")
    backend = module.backend.backend()
    if backend != "jax":  # imported elsewhere before this conftest set the variable
        pytest.fail(f"keras was imported with the {backend!r} backend; the nn tests need 'jax'")
    return module


@pytest.fixture(scope="session")
def torch():
    """PyTorch (CPU), the reference for its own conventions (skips the test when absent)."""
    module = pytest.importorskip("torch")
    module.manual_seed(0)
    return module


@pytest.fixture(autouse=True)
def keras_broadcasts_implicitly(request):
    """Keras's own layers add (n, k) + (k,) implicitly, which the tests' rank-promotion check
    (tests/conftest.py) forbids: a test that runs Keras allows it for its duration."""
    if "keras" not in request.fixturenames and "keras_models" not in request.fixturenames:
        yield
        return
    with jax.numpy_rank_promotion("allow"):
        yield
