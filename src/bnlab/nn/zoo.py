"""The notebook's three models, exactly as its Keras code builds them (docs/reference.md).

| name      | layers                                                                     |
|-----------|----------------------------------------------------------------------------|
| baseline  | Flatten → Dense(300, he_normal) → LeakyReLU(0.3) → Dense(100, he_normal)    |
|           | → LeakyReLU(0.3) → Dense(10, softmax)                                      |
| bn_after  | Flatten → BN → Dense(300, relu) → BN → Dense(100, relu) → BN → Dense(10, softmax) |
| bn_before | Flatten → BN → Dense(300, no bias) → BN → ReLU → Dense(100, no bias) → BN   |
|           | → ReLU → Dense(10, softmax)                                                |

BN models use Keras's default glorot_uniform kernels (only the baseline asks for he_normal)
and Keras's BatchNormalization defaults (momentum 0.99, ε 1e-3).
"""

from __future__ import annotations

from collections.abc import Callable

from bnlab.errors import ConfigError
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.layers import Activation, Dense, Flatten, LeakyReLU
from bnlab.nn.model import Sequential


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


MODELS: dict[str, Callable[[], Sequential]] = {
    "baseline": baseline,
    "bn_after": bn_after,
    "bn_before": bn_before,
}


def get_model(name: str) -> Sequential:
    """The preset model called ``name``; a ConfigError lists the known names."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[name]()
