"""Pooling over images in NHWC layout: Keras's ``MaxPooling2D``, ``AveragePooling2D`` and
``GlobalAveragePooling2D``.

A window of ``pool_size`` slides by ``strides`` (default: the pool size) over each channel of
``x: (batch, H, W, C)``; output sizes follow ``nn.conv``'s rule for ``"valid"`` and ``"same"``
padding. With ``"same"`` the windows at the edges hang over the image: max pooling takes the
maximum of the real values, average pooling their mean — the padded positions are not
counted (Keras's and TensorFlow's rule; PyTorch's ``AvgPool2d(count_include_pad=False)``).
No parameters, no state.

When the windows tile the image (strides = pool size, the usual 2×2 pooling), the image is
padded or cut to whole tiles and reshaped to ``(batch, OH, ph, OW, pw, C)``, and the reduction
runs over the two window axes: element-wise passes that XLA fuses. The general path,
``lax.reduce_window``, differentiates max pooling through ``select_and_scatter``, which XLA's
CPU backend ran slower than the rest of the `cnn` preset's epoch put together (2026-12-07,
JAX 0.10). The two paths differ only in the gradient of a tied maximum: the general one gives
it to the first maximal position in row-major window order, as Keras, TensorFlow and PyTorch
do; the tiled one shares it equally among the tied positions (JAX's rule for a maximum; a
custom rule for the first position cost a fifth of the epoch). Ties come where a ReLU before
the pooling zeroed the window, whose gradient that ReLU drops either way, so networks built
that way train identically under both rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from bnlab.errors import ConfigError
from bnlab.lazy import Deferred
from bnlab.nn.conv import check_padding, padding_pair, pair, windows_shape
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

    @property
    def tiled(self) -> bool:
        """Whether the windows tile the image (strides = pool size)."""
        return self.strides == self.pool_size

    def tiles(self, x: Array, fill: float) -> Array:
        """``x: (batch, H, W, C)`` padded with ``fill`` (``"same"``) or cut (``"valid"``) to
        whole windows, as ``(batch, OH, ph, OW, pw, C)``; only when ``tiled``."""
        (ph, pw), (height, width) = self.pool_size, x.shape[1:3]
        out_h, out_w = self.output_shape(x.shape[1:])[:2]
        edges = [(0, 0, 0)]
        for size, window, out in ((height, ph, out_h), (width, pw, out_w)):
            before, after = padding_pair(size, window, window, self.padding)
            edges.append((before, after if self.padding == "same" else out * window - size, 0))
        if any(edge != (0, 0, 0) for edge in edges):
            x = jax.lax.pad(x, jnp.asarray(fill, x.dtype), [*edges, (0, 0, 0)])
        return x.reshape(x.shape[0], out_h, ph, out_w, pw, x.shape[3])

    def reduce_windows(self, x: Array, initial: float, reduce) -> Array:
        """``reduce`` (max, add) over each window of ``x: (batch, H, W, C)``, the padding at
        ``initial``: the general path (module docstring)."""
        return jax.lax.reduce_window(x, initial, reduce, (1, *self.pool_size, 1),
                                     (1, *self.strides, 1), self.padding.upper())


@dataclass(frozen=True)
class MaxPool2D(_Pool2D):
    """``y[n, i, j, c] = max over the window at (i·sh, j·sw) of x[n, ·, ·, c]``."""

    def apply(self, params: dict, bn_state: dict, x: Array, *, train: bool,
              mask: Array | None = None, key: Array | None = None) -> tuple[Array, dict]:
        del params, train, mask, key
        if self.tiled:
            return self.tiles(x, -jnp.inf).max(axis=(2, 4)), bn_state
        return self.reduce_windows(x, -jnp.inf, jax.lax.max), bn_state


@dataclass(frozen=True)
class AveragePooling2D(_Pool2D):
    """``y[n, i, j, c] = mean of the window's real values`` (padding not counted)."""

    def apply(self, params: dict, bn_state: dict, x: Array, *, train: bool,
              mask: Array | None = None, key: Array | None = None) -> tuple[Array, dict]:
        del params, train, mask, key
        if self.padding == "valid":
            return self.sums(x) / (self.pool_size[0] * self.pool_size[1]), bn_state
        return self.sums(x) / self.sums(jnp.ones((1, *x.shape[1:3], 1), x.dtype)), bn_state

    def sums(self, x: Array) -> Array:
        """The sum of each window's real values."""
        if self.tiled:
            return self.tiles(x, 0.0).sum(axis=(2, 4))
        return self.reduce_windows(x, 0.0, jax.lax.add)


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
