"""Fixtures for the data tests; the builders live in `tinydata`."""

import pytest

from tests.data.tinydata import Tiny, make_tiny


@pytest.fixture
def tiny() -> Tiny:
    """A fresh tiny dataset (see `tinydata.make_tiny`)."""
    return make_tiny()
