"""Fixtures for the nn tests: Keras 3 on its JAX backend (the reference) and float64 JAX.

Keras is a test-only dependency; tests that compare against it take the ``keras`` fixture
and are skipped, not failed, where it is not installed. Its backend is chosen when it is
first imported, so the environment variable is set here, before any test imports it.
"""

from __future__ import annotations

import os

import jax
import pytest

os.environ["KERAS_BACKEND"] = "jax"


@pytest.fixture(scope="session")
def keras():
    """The ``keras`` module on the JAX backend (skips the test when Keras is absent)."""
    module = pytest.importorskip("keras")
    backend = module.backend.backend()
    if backend != "jax":  # imported elsewhere before this conftest set the variable
        pytest.fail(f"keras was imported with the {backend!r} backend; the nn tests need 'jax'")
    return module


@pytest.fixture
def float64():
    """Enable 64-bit JAX for one test and restore the previous setting afterwards."""
    with jax.enable_x64(True):
        yield



@pytest.fixture(autouse=True)
def keras_broadcasts_implicitly(request):
    """Keras's own layers add (n, k) + (k,) implicitly, which the tests' rank-promotion check
    (tests/conftest.py) forbids: a test that runs Keras allows it for its duration."""
    if "keras" not in request.fixturenames and "keras_models" not in request.fixturenames:
        yield
        return
    with jax.numpy_rank_promotion("allow"):
        yield


@pytest.fixture(scope="session")
def torch():
    """PyTorch (CPU), the reference for its own conventions (skips the test when absent)."""
    module = pytest.importorskip("torch")
    module.manual_seed(0)
    return module
