"""Pooling over images in NHWC layout: Keras's ``MaxPooling2D``, ``AveragePooling2D`` and
``GlobalAveragePooling2D``.

A window of ``pool_size`` slides by ``strides`` (default: the pool size) over each channel of
``x: (batch, H, W, C)``; output sizes follow ``nn.conv``'s rule for ``"valid"`` and ``"same"``
padding. With ``"same"`` the windows at the edges hang over the image: max pooling takes the
maximum of the real values, average pooling their mean — the padded positions are not
counted (Keras's and TensorFlow's rule; PyTorch's ``AvgPool2d(count_include_pad=False)``).
No parameters, no state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from bnlab.errors import ConfigError
from bnlab.lazy import Deferred
from bnlab.nn.conv import check_padding, pair, windows_shape
from bnlab.nn.layers import WithoutParameters

if TYPE_CHECKING:
    from jax import Array

jax = Deferred("jax")
jnp = Deferred("jax.numpy")


@dataclass(frozen=True)
class _Pool2D(WithoutParameters):
    """A window of ``pool_size`` sliding by ``strides`` (``None``: the pool size)."""

    pool_size: int | tuple[int, int] = 2
    strides: int | tuple[int, int] | None = None
    padding: Literal["valid", "same"] = "valid"

    def __post_init__(self) -> None:
        kind = type(self).__name__
        object.__setattr__(self, "pool_size", pair(f"{kind} pool_size", self.pool_size))
        strides = self.pool_size if self.strides is None else self.strides
        object.__setattr__(self, "strides", pair(f"{kind} strides", strides))
        check_padding(kind, self.padding)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*windows_shape(type(self).__name__, in_shape, self.pool_size, self.strides,
                               self.padding), in_shape[-1])

    def reduce_windows(self, x: Array, initial: float, reduce) -> Array:
        """``reduce`` (max, add) over each window of ``x: (batch, H, W, C)``, the padding at
        ``initial``."""
        return jax.lax.reduce_window(x, initial, reduce, (1, *self.pool_size, 1),
                                     (1, *self.strides, 1), self.padding.upper())


@dataclass(frozen=True)
class MaxPool2D(_Pool2D):
    """``y[n, i, j, c] = max over the window at (i·sh, j·sw) of x[n, ·, ·, c]``."""

    def apply(self, params: dict, bn_state: dict, x: Array, *, train: bool,
              mask: Array | None = None, key: Array | None = None) -> tuple[Array, dict]:
        del params, train, mask, key
        return self.reduce_windows(x, -jnp.inf, jax.lax.max), bn_state


@dataclass(frozen=True)
class AveragePooling2D(_Pool2D):
    """``y[n, i, j, c] = mean of the window's real values`` (padding not counted)."""

    def apply(self, params: dict, bn_state: dict, x: Array, *, train: bool,
              mask: Array | None = None, key: Array | None = None) -> tuple[Array, dict]:
        del params, train, mask, key
        sums = self.reduce_windows(x, 0.0, jax.lax.add)
        if self.padding == "valid":
            return sums / (self.pool_size[0] * self.pool_size[1]), bn_state
        counts = self.reduce_windows(jnp.ones((1, *x.shape[1:3], 1), x.dtype), 0.0, jax.lax.add)
        return sums / counts, bn_state


@dataclass(frozen=True)
class GlobalAveragePooling2D(WithoutParameters):
    """``(batch, H, W, C) -> (batch, C)``: each channel's mean over the image."""

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 3:
            raise ConfigError(f"GlobalAveragePooling2D expects images (batch, height, width, "
                              f"channels), got feature shape {tuple(in_shape)}")
        return (in_shape[-1],)

    def apply(self, params: dict, bn_state: dict, x: Array, *, train: bool,
              mask: Array | None = None, key: Array | None = None) -> tuple[Array, dict]:
        del params, train, mask, key
        return x.mean(axis=(1, 2)), bn_state
