"""The notebook's three models, exactly as its Keras code builds them (docs/reference.md), and
the convolutional networks of the ``cnn`` and ``resnet`` presets.

| name      | layers                                                                     |
|-----------|----------------------------------------------------------------------------|
| baseline  | Flatten → Dense(300, he_normal) → LeakyReLU(0.3) → Dense(100, he_normal)    |
|           | → LeakyReLU(0.3) → Dense(10, softmax)                                      |
| bn_after  | Flatten → BN → Dense(300, relu) → BN → Dense(100, relu) → BN → Dense(10, softmax) |
| bn_before | Flatten → BN → Dense(300, no bias) → BN → ReLU → Dense(100, no bias) → BN   |
|           | → ReLU → Dense(10, softmax)                                                |

BN models use Keras's default glorot_uniform kernels (only the baseline asks for he_normal)
and Keras's BatchNormalization defaults (momentum 0.99, ε 1e-3).

Convolutional networks for 28 × 28 × 1 images (the ``cnn`` and ``resnet`` presets):

| name          | layers                                                                     |
|---------------|----------------------------------------------------------------------------|
| cnn           | Reshape(28, 28, 1) → [Conv(32, 3×3, same, relu) → MaxPool 2] → [Conv(64) …] |
|               | → Flatten → Dense(128, relu) → Dense(10, softmax)                          |
| cnn_bn_after  | the same with BN after each ReLU (conv blocks and the hidden Dense)         |
| cnn_bn_before | the same with BN between each (bias-free) Conv / Dense and its ReLU         |
| resnet_bn     | Conv(16) stem, residual stages of 16, 32, 64 channels (2 + 2 + 2 blocks of |
|               | two 3×3 convs, the first of a stage strided with a 1×1 projection), BN     |
|               | before each ReLU, global average pooling, Dense(10) (He et al. 2016, v1)   |
| resnet_gn     | the same with GroupNorm (4 groups) in place of each BN                      |
| resnet_skipinit | the same without normalization: each block's branch ends in SkipInit's α = 0 |
|               | (De & Smith 2020), convolutions with biases                               |
"""

from __future__ import annotations

from collections.abc import Callable

from bnlab.errors import ConfigError
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.blocks import Residual
from bnlab.nn.conv import Conv2D
from bnlab.nn.layers import Activation, Dense, Flatten, LeakyReLU, Reshape
from bnlab.nn.model import Sequential
from bnlab.nn.norms import GroupNorm
from bnlab.nn.pooling import GlobalAveragePooling2D, MaxPool2D


def baseline() -> Sequential:
    return Sequential((
        Flatten(),
        Dense(300, kernel_init="he_normal"),
        LeakyReLU(),
        Dense(100, kernel_init="he_normal"),
        LeakyReLU(),
        Dense(10, activation="softmax"),
    ), name="baseline")


def bn_after() -> Sequential:
    return Sequential((
        Flatten(),
        BatchNorm(),
        Dense(300, activation="relu"),
        BatchNorm(),
        Dense(100, activation="relu"),
        BatchNorm(),
        Dense(10, activation="softmax"),
    ), name="bn_after")


def bn_before() -> Sequential:
    return Sequential((
        Flatten(),
        BatchNorm(),
        Dense(300, use_bias=False),
        BatchNorm(),
        Activation("relu"),
        Dense(100, use_bias=False),
        BatchNorm(),
        Activation("relu"),
        Dense(10, activation="softmax"),
    ), name="bn_before")


def _cnn(name: str, placement: str | None) -> Sequential:
    """Two conv blocks and a hidden Dense layer, BN ``placement`` "after" the ReLU, "before"
    it (the layer without bias), or ``None``."""
    layers: list = [Reshape((28, 28, 1))]
    for filters in (32, 64):
        layers += [*_relu_block(Conv2D, {"filters": filters, "kernel_size": 3,
                                         "padding": "same"}, placement), MaxPool2D(2)]
    layers += [Flatten(), *_relu_block(Dense, {"units": 128}, placement)]
    return Sequential((*layers, Dense(10, activation="softmax")), name=name)


def _relu_block(kind: type, options: dict, placement: str | None) -> list:
    """``kind(**options)`` with a ReLU, and a BatchNorm ``placement`` "before" or "after"
    the ReLU (before: the layer without bias, β plays its role) or none."""
    if placement == "before":
        return [kind(**options, use_bias=False), BatchNorm(), Activation("relu")]
    layer = kind(**options, activation="relu")
    return [layer, BatchNorm()] if placement == "after" else [layer]


def cnn() -> Sequential:
    return _cnn("cnn", None)


def cnn_bn_after() -> Sequential:
    return _cnn("cnn_bn_after", "after")


def cnn_bn_before() -> Sequential:
    return _cnn("cnn_bn_before", "before")


def _resnet(name: str, norm: str) -> Sequential:
    """The residual network of the module docstring with ``norm`` "bn", "gn" or "skipinit"."""
    def normalized(filters: int, strides: int = 1, kernel: int = 3) -> list:
        conv = Conv2D(filters, kernel, strides=strides, padding="same",
                      use_bias=norm == "skipinit", kernel_init="he_normal")
        if norm == "skipinit":
            return [conv]
        return [conv, BatchNorm() if norm == "bn" else GroupNorm(groups=4)]

    layers: list = [Reshape((28, 28, 1)), *normalized(16), Activation("relu")]
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(2):
            strides = 2 if stage > 0 and block == 0 else 1
            branch = [*normalized(filters, strides), Activation("relu"), *normalized(filters)]
            shortcut = normalized(filters, strides, kernel=1) if strides > 1 else []
            layers.append(Residual(branch=tuple(branch), shortcut=tuple(shortcut),
                                   skip_init=norm == "skipinit"))
    return Sequential((*layers, GlobalAveragePooling2D(), Dense(10, activation="softmax")),
                      name=name)


def resnet_bn() -> Sequential:
    return _resnet("resnet_bn", "bn")


def resnet_gn() -> Sequential:
    return _resnet("resnet_gn", "gn")


def resnet_skipinit() -> Sequential:
    return _resnet("resnet_skipinit", "skipinit")


MODELS: dict[str, Callable[[], Sequential]] = {
    "baseline": baseline,
    "bn_after": bn_after,
    "bn_before": bn_before,
    "cnn": cnn,
    "cnn_bn_after": cnn_bn_after,
    "cnn_bn_before": cnn_bn_before,
    "resnet_bn": resnet_bn,
    "resnet_gn": resnet_gn,
    "resnet_skipinit": resnet_skipinit,
}


def get_model(name: str) -> Sequential:
    """The preset model called ``name``; a ConfigError lists the known names."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[name]()
