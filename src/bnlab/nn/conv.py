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

import functools
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
        pads = tuple(padding_pair(size, window, step, self.padding) for size, window, step
                     in zip(x.shape[1:3], self.kernel_size, self.strides, strict=True))
        z = convolve(x, params["kernel"], self.strides, pads)
        return z + per_channel(params["bias"], z) if self.use_bias else z

    def activate(self, z: Array) -> Array:
        """The activation applied to a pre-activation ``z``."""
        return ACTIVATIONS[self.activation](z)

    def apply(self, params: dict, bn_state: dict, x: Array, *, train: bool,
              mask: Array | None = None, key: Array | None = None) -> tuple[Array, dict]:
        del train, mask, key
        return self.activate(self.pre_activation(params, x)), bn_state


def padding_pair(size: int, window: int, step: int, padding: str) -> tuple[int, int]:
    """``(before, after)`` zero rows of one spatial axis (module docstring): none for
    ``"valid"``; for ``"same"`` the total that gives ⌈size / step⌉ outputs, the odd one
    after."""
    if padding == "valid":
        return 0, 0
    total = max((math.ceil(size / step) - 1) * step + window - size, 0)
    return total // 2, total - total // 2


def convolve(x: Array, kernel: Array, strides: tuple[int, int],
             pads: tuple[tuple[int, int], ...]) -> Array:
    """The cross-correlation of ``x: (N, H, W, C)`` with ``kernel: (kh, kw, C, F)`` at
    ``strides`` after zero ``pads`` (``padding_pair`` per axis).

    Its gradients are written out (``_convolve_backward``) instead of JAX's own transposition
    rules, which give XLA convolutions with permuted dimension numbers: inside the epoch's
    ``lax.scan`` XLA's CPU backend ran the kernel gradient of those about 20× slower than
    outside a loop (2026-12-07, JAX 0.10; the same numbers either way, tested against JAX's
    rule and PyTorch)."""
    return _differentiable_convolution()(x, kernel, strides, pads)


def _correlate(x, kernel, strides, pads):
    return jax.lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=LAYOUT,
                                        precision=MATMUL_PRECISION)


@functools.cache
def _differentiable_convolution():
    """``_correlate`` with the gradients of ``_convolve_backward`` (built on first use: the
    module is imported without JAX)."""
    function = jax.custom_vjp(_correlate, nondiff_argnums=(2, 3))
    function.defvjp(_convolve_forward, _convolve_backward)
    return function


def _convolve_forward(x, kernel, strides, pads):
    return _correlate(x, kernel, strides, pads), (x, kernel)


def _convolve_backward(strides, pads, residuals, dz):
    """``(∂L/∂x, ∂L/∂kernel)`` for ``dz = ∂L/∂z``:

    - ∂L/∂x: ``dz`` dilated by the strides, correlated with the kernel flipped in space and
      with its channel axes swapped (HWIO with I = F, O = C), padded so that output row j
      collects every window that read input row j: ``k − 1 − before`` rows before and
      ``H + before − (H' − 1)·s − 1`` after;
    - ∂L/∂kernel: ``_kernel_gradient``.
    """
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    spatial = [(x.shape[1 + axis], dz.shape[1 + axis], (kh, kw)[axis]) for axis in (0, 1)]
    input_pads = [(window - 1 - before, size + before - (out - 1) * step - 1)
                  for (size, out, window), (before, _), step in zip(spatial, pads, strides,
                                                                    strict=True)]
    flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
    dx = jax.lax.conv_general_dilated(dz, flipped, (1, 1), input_pads, lhs_dilation=strides,
                                      dimension_numbers=LAYOUT, precision=MATMUL_PRECISION)
    return dx, _kernel_gradient(x, dz, (kh, kw), strides, pads)


def _kernel_gradient(x, dz, window, strides, pads):
    """∂L/∂kernel[a, b, c, f] = Σ_{n,i,j} x_pad[n, a + i·sh, b + j·sw, c] · dz[n, i, j, f]
    as one matrix product ``patches · dz`` of ``(kh·kw·C, N·H'·W') × (N·H'·W', F)``, the
    patches gathered from ``x`` read as (C, N, H, W) so that the long axis is contiguous in
    both factors. XLA's CPU backend ran this at 1.4× the speed of the same sum written as a
    convolution of ``x`` read as (C, H, W, N) with ``dz`` as the kernel (the cnn preset's
    second layer, 2026-12-07, JAX 0.10), and that convolution at about 20× the speed of JAX's
    own transposition rule inside ``lax.scan``."""
    batch, out_h, out_w, filters = dz.shape
    channels = x.shape[3]
    padded = jnp.pad(x.transpose(3, 0, 1, 2), ((0, 0), (0, 0), *pads))
    windows = [jax.lax.slice(padded, (0, 0, a, b),
                             (channels, batch, a + (out_h - 1) * strides[0] + 1,
                              b + (out_w - 1) * strides[1] + 1), (1, 1, *strides))
               for a in range(window[0]) for b in range(window[1])]
    patches = jnp.stack(windows).reshape(-1, batch * out_h * out_w)
    gradient = jnp.matmul(patches, dz.reshape(-1, filters), precision=MATMUL_PRECISION)
    return gradient.reshape(*window, channels, filters)
