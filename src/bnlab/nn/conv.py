"""2-D convolution over images in NHWC layout, Keras's ``Conv2D``.

For an input ``x: (batch, height, width, in_channels)`` and a kernel
``kernel: (kh, kw, in_channels, filters)`` (HWIO, Keras's layout; PyTorch's ``Conv2d`` keeps
OIHW, the same numbers transposed), each output is a cross-correlation plus a bias:

    z[n, i, j, f] = Σ_{a<kh, b<kw, c} x_pad[n, i·sh + a, j·sw + b, c] · kernel[a, b, c, f] + bias[f]
    y = activation(z)

``padding="valid"`` uses no padding: out = ⌊(H − kh) / sh⌋ + 1. ``padding="same"`` pads with
zeros so that out = ⌈H / sh⌉, the total padding max((out − 1)·sh + kh − H, 0) split with the
extra row and column at the bottom and right (TensorFlow's and Keras's rule; PyTorch's
``padding="same"`` exists only for stride 1, where the two agree up to that odd split).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from bnlab.errors import ConfigError
from bnlab.lazy import Deferred
from bnlab.nn.layers import (
    ACTIVATIONS,
    MATMUL_PRECISION,
    check_kernel_options,
    initial_kernel,
    per_channel,
)

if TYPE_CHECKING:
    from jax import Array

jax = Deferred("jax")
jnp = Deferred("jax.numpy")
LAYOUT = ("NHWC", "HWIO", "NHWC")  # input, kernel, output: jax.lax.conv_dimension_numbers


def pair(name: str, value: object) -> tuple[int, int]:
    """``value`` as ``(rows, columns)``: one positive integer for both, or two; a
    ``ConfigError`` naming ``name`` otherwise."""
    values = (value, value) if isinstance(value, int) else value
    if (not isinstance(values, list | tuple) or len(values) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)):
        raise ConfigError(f"{name} must be a positive integer or two of them, got {value!r}")
    return int(values[0]), int(values[1])


def check_padding(kind: str, padding: str) -> None:
    if padding not in ("valid", "same"):
        raise ConfigError(f"{kind} padding must be 'valid' or 'same', got {padding!r}")


def windows_shape(kind: str, in_shape: tuple[int, ...], window: tuple[int, int],
                  strides: tuple[int, int], padding: str) -> tuple[int, int]:
    """``(out_height, out_width)`` of a sliding window over ``in_shape = (H, W, C)`` (module
    docstring's formulas); a ``ConfigError`` when the input is not an image or too small."""
    if len(in_shape) != 3:
        raise ConfigError(f"{kind} expects images (batch, height, width, channels), got feature "
                          f"shape {tuple(in_shape)}; put a Reshape layer (target_shape = "
                          f"[28, 28, 1]) before it")
    out = []
    for size, span, step in zip(in_shape[:2], window, strides, strict=True):
        if padding == "same":
            out.append(math.ceil(size / step))
        elif size < span:
            raise ConfigError(f"{kind}: a {window[0]}×{window[1]} window does not fit in a "
                              f"{in_shape[0]}×{in_shape[1]} input without padding; use "
                              f"padding = \"same\" or a smaller window")
        else:
            out.append((size - span) // step + 1)
    return out[0], out[1]


@dataclass(frozen=True)
class Conv2D:
    """``y = activation(conv(x, kernel) + bias)`` for ``x: (batch, H, W, C)`` (module
    docstring), ``kernel: (kh, kw, C, filters)``, ``bias: (filters,)``.

    ``kernel_size`` and ``strides`` are one integer or ``(rows, columns)``; the initializers
    are Dense's, with Keras's fans (``nn.layers.initial_kernel``); ``use_bias=False`` before
    a BatchNorm, whose β plays the bias's role. Products in true float32 (``MATMUL_PRECISION``).
    """

    filters: int
    kernel_size: int | tuple[int, int]
    strides: int | tuple[int, int] = 1
    padding: Literal["valid", "same"] = "valid"
    activation: str = "linear"
    use_bias: bool = True
    kernel_init: str = "glorot_uniform"
    kernel_stddev: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.filters, int) or isinstance(self.filters, bool) or self.filters < 1:
            raise ConfigError(f"Conv2D filters must be a positive integer, got {self.filters!r}")
        object.__setattr__(self, "kernel_size", pair("Conv2D kernel_size", self.kernel_size))
        object.__setattr__(self, "strides", pair("Conv2D strides", self.strides))
        check_padding("Conv2D", self.padding)
        check_kernel_options("Conv2D", self.activation, self.kernel_init, self.kernel_stddev)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*windows_shape("Conv2D", in_shape, self.kernel_size, self.strides,
                               self.padding), self.filters)

    def init(self, key: Array, in_shape: tuple[int, ...]) -> tuple[dict, dict, tuple[int, ...]]:
        out_shape = self.output_shape(in_shape)
        params = {"kernel": initial_kernel(self.kernel_init, self.kernel_stddev, key,
                                           (*self.kernel_size, in_shape[-1], self.filters))}
        if self.use_bias:
            params["bias"] = jnp.zeros((self.filters,), jnp.float32)
        return params, {}, out_shape

    def pre_activation(self, params: dict, x: Array) -> Array:
        """``conv(x, kernel) + bias``: ``(batch, H, W, C) -> (batch, H', W', filters)``."""
        z = jax.lax.conv_general_dilated(
            x, params["kernel"], window_strides=self.strides, padding=self.padding.upper(),
            dimension_numbers=LAYOUT, precision=MATMUL_PRECISION)
        return z + per_channel(params["bias"], z) if self.use_bias else z

    def activate(self, z: Array) -> Array:
        """The activation applied to a pre-activation ``z``."""
        return ACTIVATIONS[self.activation](z)

    def apply(self, params: dict, bn_state: dict, x: Array, *, train: bool,
              mask: Array | None = None, key: Array | None = None) -> tuple[Array, dict]:
        del train, mask, key
        return self.activate(self.pre_activation(params, x)), bn_state
