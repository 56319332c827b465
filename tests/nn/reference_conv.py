"""Independent NumPy references (float64) for the image layers: convolution and pooling
transcribed from their definitions with explicit loops over output positions, TensorFlow's
"SAME" padding rule written out, and Group Normalization over images (Wu & He 2018, eq. 1).
Shares no code with bnlab.

Shapes: images ``x: (n, height, width, channels)`` (NHWC); kernels ``(kh, kw, in, out)`` (HWIO).
"""

from __future__ import annotations

import math

import numpy as np


def same_padding(size: int, window: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "SAME": out = ⌈size / stride⌉, total padding max((out − 1)·stride +
    window − size, 0), the odd one at the end."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def padded(x: np.ndarray, window: tuple[int, int], strides: tuple[int, int], padding: str,
           fill: float) -> np.ndarray:
    """``x`` with the rows and columns "SAME" adds, at ``fill``; unchanged for "valid"."""
    if padding == "valid":
        return x
    (top, bottom), (left, right) = (same_padding(x.shape[axis], window[k], strides[k])
                                    for k, axis in enumerate((1, 2)))
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)


def output_size(size: int, window: int, stride: int, padding: str) -> int:
    return math.ceil(size / stride) if padding == "same" else (size - window) // stride + 1


def conv2d(x, kernel, bias, strides: tuple[int, int], padding: str) -> np.ndarray:
    """``z[n, i, j, f] = Σ_{a, b, c} x_pad[n, i·sh + a, j·sw + b, c] · kernel[a, b, c, f]
    + bias[f]`` (cross-correlation, as every framework computes "convolution")."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    kh, kw, _, filters = kernel.shape
    sh, sw = strides
    out_h = output_size(x.shape[1], kh, sh, padding)
    out_w = output_size(x.shape[2], kw, sw, padding)
    xp = padded(x, (kh, kw), strides, padding, 0.0)
    z = np.zeros((x.shape[0], out_h, out_w, filters))
    for i in range(out_h):
        for j in range(out_w):
            window = xp[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :]  # (n, kh, kw, c)
            for f in range(filters):
                z[:, i, j, f] = (window * kernel[:, :, :, f]).sum(axis=(1, 2, 3))
    return z + (0.0 if bias is None else np.asarray(bias, np.float64))


def pool2d(x, pool: tuple[int, int], strides: tuple[int, int], padding: str,
           kind: str) -> np.ndarray:
    """Max or average over each window; with "same" padding the padded positions are left
    out (max of the real values, mean of the real values)."""
    x = np.asarray(x, np.float64)
    ph, pw = pool
    sh, sw = strides
    out_h = output_size(x.shape[1], ph, sh, padding)
    out_w = output_size(x.shape[2], pw, sw, padding)
    xp = padded(x, pool, strides, padding, np.nan)  # NaN marks padding
    y = np.zeros((x.shape[0], out_h, out_w, x.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            window = xp[:, i * sh:i * sh + ph, j * sw:j * sw + pw, :]
            y[:, i, j, :] = (np.nanmax(window, axis=(1, 2)) if kind == "max"
                             else np.nanmean(window, axis=(1, 2)))
    return y


def group_norm_images(x, gamma, beta, epsilon: float, groups: int) -> np.ndarray:
    """Wu & He's eq. 1 on NHWC: per image, per group of C/G channels, statistics over every
    pixel of those channels; γ, β per channel."""
    x = np.asarray(x, np.float64)
    n, _, _, channels = x.shape
    size = channels // groups
    y = np.empty_like(x)
    for i in range(n):
        for g in range(groups):
            cols = slice(g * size, (g + 1) * size)
            values = x[i, :, :, cols]
            mu = values.sum() / values.size
            var = ((values - mu) ** 2).sum() / values.size
            y[i, :, :, cols] = gamma[cols] * (values - mu) / np.sqrt(var + epsilon) + beta[cols]
    return y


def pixel_rows(x) -> np.ndarray:
    """Images ``(n, h, w, c)`` as ``(n·h·w, c)`` rows, one per pixel, image after image: the
    sample a BatchNorm over (N, H, W) takes its per-channel statistics from (Ioffe & Szegedy
    §3.2), ready for the row references of ``reference_bn`` and ``reference_norms``."""
    x = np.asarray(x)
    return x.reshape(-1, x.shape[-1])
