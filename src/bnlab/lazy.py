"""Modules imported when first used.

The layers (``nn``), the experiment (``config``) and a run's record (``store``) are plain
data until something computes with them, so reading a run folder (``bnlab runs``, ``bnlab
show``) and ``bnlab --help`` never import JAX, which costs a second or more. A module that
computes with JAX names it through ``Deferred``; the import happens at the first attribute
used (a trace, an initializer), after which each access is a dictionary lookup:

    from bnlab.lazy import Deferred

    jax = Deferred("jax")
    jnp = Deferred("jax.numpy")
"""

from __future__ import annotations

import importlib
from typing import Any


class Deferred:
    """Module ``name``, imported on its first attribute access."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported when first used>"
