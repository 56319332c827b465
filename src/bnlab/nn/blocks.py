"""Residual blocks (He, Zhang, Ren & Sun 2016, "Deep Residual Learning for Image Recognition")
as a small graph inside ``Sequential``'s flat list of layers.

A block is written as a ``Residual``: a ``branch`` of layers and a ``shortcut`` (empty: the
identity; else a projection such as a strided 1×1 Conv2D and a BatchNorm), summed, then an
activation (ReLU by default, the paper's Figure 2):

    y = activation(shortcut(x) + branch(x))

``Sequential`` expands it into plain layers, so every layer of a residual net — each
BatchNorm of each block — has its own index, name, parameters and statistics like any layer
(summaries, checkpoints, probes, recalibration and sweeps need no special case). Two layers
carry the graph: ``Branch(source)`` continues from an earlier layer's output, and
``Add(source)`` adds one to the current value; ``source`` is a layer's index in the flat
list, ``-1`` the model's input. The expansion of a block whose input is layer ``s``'s output:

    branch layers … [SkipInit]  Add(s)                        identity shortcut
    branch layers … [SkipInit]  Branch(s)  shortcut layers …  Add(end of branch)

followed by ``Activation(activation)`` unless it is ``"linear"``.

**Normalization-free control.** ``skip_init=True`` ends the branch with a learned scalar α
initialized to 0 (``SkipInit``; De & Smith 2020, "Batch Normalization Biases Residual
Blocks Towards the Identity Function in Deep Networks", §4): every block starts as its
shortcut, the property that lets deep residual nets train without BatchNorm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bnlab.errors import ConfigError
from bnlab.lazy import Deferred
from bnlab.nn.layers import ACTIVATIONS, Activation, ShapeKeeping, _check_choice

if TYPE_CHECKING:
    from jax import Array

jnp = Deferred("jax.numpy")


@dataclass(frozen=True)
class Branch(ShapeKeeping):
    """Continue from the output of layer ``source`` (``-1``: the model's input): this layer
    outputs that value unchanged, and the layers after it compute on it (``Sequential``
    passes it the source's value and shape as its input)."""

    source: int

    def apply(self, params: dict, bn_state: dict, x: Array, *, train: bool,
              mask: Array | None = None, key: Array | None = None) -> tuple[Array, dict]:
        del params, train, mask, key
        return x, bn_state  # Sequential passes the source's value


@dataclass(frozen=True)
class Add(ShapeKeeping):
    """``y = x + (output of layer source)``: the sum that closes a residual block (Keras's
    ``Add``); both must have the same shape."""

    source: int

    def apply(self, params: dict, bn_state: dict, x: Array, *, train: bool,
              mask: Array | None = None, key: Array | None = None) -> tuple[Array, dict]:
        raise TypeError("Add is applied by Sequential, which holds the value it adds")


@dataclass(frozen=True)
class SkipInit:
    """``y = α · x`` with one learned scalar ``alpha`` initialized to 0 (module docstring)."""

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape

    def init(self, key: Array, in_shape: tuple[int, ...]) -> tuple[dict, dict, tuple[int, ...]]:
        del key
        return {"alpha": jnp.zeros((), jnp.float32)}, {}, in_shape

    def apply(self, params: dict, bn_state: dict, x: Array, *, train: bool,
              mask: Array | None = None, key: Array | None = None) -> tuple[Array, dict]:
        del train, mask, key
        return params["alpha"] * x, bn_state


@dataclass(frozen=True)
class Residual:
    """``y = activation(shortcut(x) + branch(x))`` (module docstring): ``branch`` and
    ``shortcut`` are sequences of layers (``shortcut`` empty: the identity);
    ``skip_init`` ends the branch with a ``SkipInit`` scalar. Not a layer itself:
    ``Sequential`` expands it (``expand``)."""

    branch: tuple[Any, ...]
    shortcut: tuple[Any, ...] = ()
    activation: str = "relu"
    skip_init: bool = False
    STACKS: ClassVar[tuple[str, ...]] = ("branch", "shortcut")  # fields that hold layers

    def __post_init__(self) -> None:
        object.__setattr__(self, "branch", tuple(self.branch))
        object.__setattr__(self, "shortcut", tuple(self.shortcut))
        if not self.branch:
            raise ConfigError("Residual needs at least one layer in its branch")
        _check_choice("activation", self.activation, ACTIVATIONS)

    def expand(self, start: int) -> tuple[Any, ...]:
        """The block as plain layers, placed at index ``start`` of the flat list (its input
        is layer ``start − 1``'s output); nested blocks are expanded too."""
        block_input = start - 1
        layers = list(expand_blocks(self.branch, start))
        if self.skip_init:
            layers.append(SkipInit())
        if self.shortcut:
            branch_end = start + len(layers) - 1
            layers.append(Branch(block_input))
            layers += expand_blocks(self.shortcut, start + len(layers))
            layers.append(Add(branch_end))
        else:
            layers.append(Add(block_input))
        if self.activation != "linear":
            layers.append(Activation(self.activation))
        return tuple(layers)


def expand_blocks(layers: tuple[Any, ...], start: int = 0) -> tuple[Any, ...]:
    """``layers`` with every ``Residual`` expanded in place, for a list that begins at flat
    index ``start``."""
    flat: list[Any] = []
    for layer in layers:
        if isinstance(layer, Residual):
            flat += layer.expand(start + len(flat))
        else:
            flat.append(layer)
    return tuple(flat)


def source_of(layer: object, index: int) -> int | None:
    """The earlier layer whose output ``layer`` (at ``index``) reads besides its input
    (``Branch``, ``Add``), checked to lie before it; ``None`` for any other layer."""
    if not isinstance(layer, Branch | Add):
        return None
    source = layer.source
    if not isinstance(source, int) or isinstance(source, bool) or not -1 <= source < index:
        raise ConfigError(f"{type(layer).__name__} at layer {index} reads layer {source!r}, "
                          f"which is not an earlier layer (-1 is the model's input)")
    return source
