"""Fixtures for the nn tests: float64 JAX (the ``keras`` and ``torch`` fixtures are in
``tests/conftest.py``)."""

from __future__ import annotations

import jax
import pytest


@pytest.fixture
def float64():
    """Enable 64-bit JAX for one test and restore the previous setting afterwards."""
    with jax.enable_x64(True):
        yield
