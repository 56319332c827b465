"""Layers as frozen dataclasses with explicit ``init`` / ``apply`` over plain dicts.

Every layer follows one protocol (BatchNorm in ``batchnorm.py`` too):

    output_shape(in_shape) -> out_shape     plain Python; a ConfigError if it cannot take it
    init(key, in_shape)  -> (params, bn_state, out_shape)     in_shape excludes the batch axis
    apply(params, bn_state, x, *, train, mask=None, key=None) -> (y, new_bn_state)

``params`` holds trainable arrays, ``bn_state`` non-trainable ones (a BatchNorm's moving
statistics); both are dicts (empty for layers without any). Keras conventions are the
defaults: Dense uses ``glorot_uniform`` kernels and zero biases; ``he_normal`` is Keras's
*truncated* normal (JAX's ``jax.nn.initializers.he_normal`` is the same: VarianceScaling(2,
fan_in, truncated normal, stddev divided by 0.87962566)); LeakyReLU's negative slope is 0.3.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bnlab.errors import ConfigError
from bnlab.lazy import Deferred

if TYPE_CHECKING:
    from jax import Array

jax = Deferred("jax")
jnp = Deferred("jax.numpy")
MATMUL_PRECISION = "highest"  # float32 products everywhere (see Dense)

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "linear": lambda x: x,
    "relu": lambda x: jax.nn.relu(x),
    "sigmoid": lambda x: jax.nn.sigmoid(x),
    "tanh": lambda x: jnp.tanh(x),
    "elu": lambda x: jax.nn.elu(x),
    "selu": lambda x: jax.nn.selu(x),
    "gelu": lambda x: jax.nn.gelu(x),
    "swish": lambda x: jax.nn.swish(x),
    "softmax": lambda x: jax.nn.softmax(x),
}
# Keras's initializer names, as jax.nn.initializers names them; random_normal draws
# N(0, kernel_stddev²), Keras's RandomNormal.
INITIALIZERS = {"glorot_uniform": "glorot_uniform", "glorot_normal": "glorot_normal",
                "he_normal": "he_normal", "he_uniform": "he_uniform",
                "lecun_normal": "lecun_normal", "lecun_uniform": "lecun_uniform",
                "random_normal": "normal"}
RANDOM_NORMAL_STDDEV = 0.05  # Keras's RandomNormal default


def is_number(value: object) -> bool:
    """Whether ``value`` is a real number, Python's or NumPy's, not a bool (nor a JAX array or
    tracer): a layer checks the range of its numeric options only then, since a traced value
    has no value to check."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def is_traced(value: object) -> bool:
    """Whether ``value`` is a JAX array or tracer: a sweep member's scalar bound as data."""
    return isinstance(value, jax.Array | jax.core.Tracer)


def per_channel(values: Array, x: Array) -> Array:
    """``values: (channels,)`` shaped to broadcast against ``x: (batch, ..., channels)``
    (explicitly: ``(1, ..., 1, channels)``)."""
    return values.reshape((1,) * (x.ndim - 1) + values.shape)


def _check_choice(kind: str, value: str, allowed: dict) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {kind} {value!r}; allowed: {', '.join(sorted(allowed))}")


def check_kernel_options(kind: str, activation: str, kernel_init: str,
                         kernel_stddev: float | None) -> None:
    """The options a layer with a kernel shares (Dense, Conv2D): an activation and an
    initializer by name, and ``kernel_stddev`` only with ``random_normal``."""
    _check_choice("activation", activation, ACTIVATIONS)
    _check_choice("kernel initializer", kernel_init, INITIALIZERS)
    if kernel_stddev is not None:
        if kernel_init != "random_normal":
            raise ConfigError(f"{kind} kernel_stddev sets the spread of random_normal "
                              f"kernels; give kernel_init = \"random_normal\" with it "
                              f"(got {kernel_init!r})")
        if not 0 < kernel_stddev < float("inf"):
            raise ConfigError(f"{kind} kernel_stddev must be a finite number > 0, got "
                              f"{kernel_stddev!r}")


def initial_kernel(kernel_init: str, kernel_stddev: float | None, key: Array,
                   shape: tuple[int, ...]) -> Array:
    """A float32 kernel of ``shape`` drawn by the named initializer. The fans are Keras's:
    ``fan_in = shape[-2] · receptive field``, ``fan_out = shape[-1] · receptive field``,
    the receptive field being the product of the leading axes (1 for Dense)."""
    make = getattr(jax.nn.initializers, INITIALIZERS[kernel_init])
    initializer = (make(kernel_stddev or RANDOM_NORMAL_STDDEV)
                   if kernel_init == "random_normal" else make())
    return initializer(key, shape, jnp.float32)


class WithoutParameters:
    """Base of the layers without parameters or state: ``init`` gives only their output
    shape (``output_shape``)."""

    def init(self, key: Array, in_shape: tuple[int, ...]) -> tuple[dict, dict, tuple[int, ...]]:
        del key
        return {}, {}, self.output_shape(in_shape)


class ShapeKeeping(WithoutParameters):
    """Base of the layers without parameters whose output has their input's shape."""

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape


@dataclass(frozen=True)
class Flatten(WithoutParameters):
    """``(batch, *dims) -> (batch, prod(dims))``."""

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(in_shape),)

    def apply(self, params: dict, bn_state: dict, x: Array, *, train: bool,
              mask: Array | None = None, key: Array | None = None) -> tuple[Array, dict]:
        del params, train, mask, key
        return x.reshape(x.shape[0], -1), bn_state


@dataclass(frozen=True)
class Reshape(WithoutParameters):
    """``(batch, *dims) -> (batch, *target_shape)`` with the same number of values per row:
    ``Reshape((28, 28, 1))`` turns Fashion-MNIST's ``(28, 28)`` images into the
    ``(height, width, channels)`` that convolutions take (Keras's ``Reshape``)."""

    target_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        shape = tuple(self.target_shape) if isinstance(self.target_shape, list | tuple) else ()
        if not shape or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                                for n in shape):
            raise ConfigError(f"Reshape target_shape must be a list of positive integers, "
                              f"got {self.target_shape!r}")
        object.__setattr__(self, "target_shape", shape)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if math.prod(in_shape) != math.prod(self.target_shape):
            raise ConfigError(f"Reshape cannot make {math.prod(in_shape):,} values per row "
                              f"(shape {tuple(in_shape)}) into {self.target_shape} "
                              f"({math.prod(self.target_shape):,} values)")
        return self.target_shape

    def apply(self, params: dict, bn_state: dict, x: Array, *, train: bool,
              mask: Array | None = None, key: Array | None = None) -> tuple[Array, dict]:
        del params, train, mask, key
        return x.reshape(x.shape[0], *self.target_shape), bn_state


@dataclass(frozen=True)
class Dense:
    """``y = activation(x @ kernel + bias)`` with ``kernel: (in, units)``, ``bias: (units,)``.

    ``kernel_init`` names a ``jax.nn.initializers`` function (Keras names); ``random_normal``
    draws N(0, ``kernel_stddev``²) (default 0.05, Keras's ``RandomNormal``), the "small
    random Gaussian values" of Ioffe & Szegedy's Figure 1; ``use_bias=False``
    drops the bias (redundant before a BatchNorm, whose β plays its role). The product is
    true float32 on every backend (``MATMUL_PRECISION``): JAX's default on recent NVIDIA GPUs
    rounds float32 inputs to TensorFloat-32 (10-bit mantissa), which would make GPU results
    differ from CPU ones and from PyTorch's float32 default well beyond the reference
    tolerances. On CPU the setting changes nothing.
    """

    units: int
    activation: str = "linear"
    use_bias: bool = True
    kernel_init: str = "glorot_uniform"
    kernel_stddev: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.units, int) or self.units < 1:
            raise ConfigError(f"Dense units must be a positive integer, got {self.units!r}")
        check_kernel_options("Dense", self.activation, self.kernel_init, self.kernel_stddev)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 1:
            raise ConfigError(
                f"Dense expects flat (batch, features) inputs, got feature shape {in_shape}; "
                "put a Flatten layer before it"
            )
        return (self.units,)

    def init(self, key: Array, in_shape: tuple[int, ...]) -> tuple[dict, dict, tuple[int, ...]]:
        out_shape = self.output_shape(in_shape)
        kernel = initial_kernel(self.kernel_init, self.kernel_stddev, key,
                                (in_shape[0], self.units))
        params = {"kernel": kernel}
        if self.use_bias:
            params["bias"] = jnp.zeros((self.units,), jnp.float32)
        return params, {}, out_shape

    def pre_activation(self, params: dict, x: Array) -> Array:
        """``x @ kernel + bias``: ``(batch, in) -> (batch, units)``."""
        z = jnp.matmul(x, params["kernel"], precision=MATMUL_PRECISION)
        return z + params["bias"][None, :] if self.use_bias else z

    def apply(self, params: dict, bn_state: dict, x: Array, *, train: bool,
              mask: Array | None = None, key: Array | None = None) -> tuple[Array, dict]:
        del train, mask, key
        return self.activate(self.pre_activation(params, x)), bn_state

    def activate(self, z: Array) -> Array:
        """The activation applied to a pre-activation ``z: (batch, units)``."""
        return ACTIVATIONS[self.activation](z)


@dataclass(frozen=True)
class Activation(ShapeKeeping):
    """Element-wise activation by name (``relu``, ``sigmoid``, ``tanh``, ``softmax``, …)."""

    name: str

    def __post_init__(self) -> None:
        _check_choice("activation", self.name, ACTIVATIONS)

    def apply(self, params: dict, bn_state: dict, x: Array, *, train: bool,
              mask: Array | None = None, key: Array | None = None) -> tuple[Array, dict]:
        del params, train, mask, key
        return ACTIVATIONS[self.name](x), bn_state


@dataclass(frozen=True)
class LeakyReLU(ShapeKeeping):
    """``y = x if x ≥ 0 else negative_slope · x``; Keras's default slope is 0.3 (PyTorch 0.01)."""

    negative_slope: float = 0.3

    def apply(self, params: dict, bn_state: dict, x: Array, *, train: bool,
              mask: Array | None = None, key: Array | None = None) -> tuple[Array, dict]:
        del params, train, mask, key
        return jax.nn.leaky_relu(x, self.negative_slope), bn_state


@dataclass(frozen=True)
class Dropout(ShapeKeeping):
    """Inverted dropout: in training zero each value with probability ``rate``, scale by
    ``1 / (1 − rate)``; identity at inference. Needs a PRNG ``key`` in training."""

    rate: float

    def __post_init__(self) -> None:
        if is_number(self.rate) and not 0.0 <= self.rate < 1.0:  # a traced rate: checked before
            raise ConfigError(f"Dropout rate must be in [0, 1), got {self.rate}")

    def apply(self, params: dict, bn_state: dict, x: Array, *, train: bool,
              mask: Array | None = None, key: Array | None = None) -> tuple[Array, dict]:
        del params, mask
        if not train or (is_number(self.rate) and self.rate == 0.0):
            return x, bn_state
        if key is None:
            raise ConfigError("Dropout in training needs a PRNG key")
        keep = jax.random.bernoulli(key, 1.0 - self.rate, x.shape)
        return jnp.where(keep, x / (1.0 - self.rate), 0.0), bn_state
