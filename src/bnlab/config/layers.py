"""Layers in an experiment file: ``{ type = "batch_norm", momentum = 0.9 }`` → ``BatchNorm``.

``LAYER_TYPES`` is the one place that names the layer types a file may use. A layer's
options are the fields of its dataclass and their types its annotations, so a new option is
a new field of the layer (in ``bnlab.nn``) and nothing here changes: it is accepted, type
checked and listed in the messages at once.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from bnlab.config.checks import option_type, shown, value_problem
from bnlab.errors import ConfigError
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.blocks import Residual
from bnlab.nn.conv import Conv2D
from bnlab.nn.layers import Activation, Dense, Dropout, Flatten, LeakyReLU, Reshape
from bnlab.nn.model import Layer
from bnlab.nn.norms import BatchRenorm, GhostBatchNorm, GroupNorm, LayerNorm, NoisyBatchNorm
from bnlab.nn.pooling import AveragePooling2D, GlobalAveragePooling2D, MaxPool2D

LAYER_TYPES: dict[str, type] = {
    "flatten": Flatten,
    "reshape": Reshape,
    "dense": Dense,
    "conv2d": Conv2D,
    "max_pool2d": MaxPool2D,
    "average_pool2d": AveragePooling2D,
    "global_average_pool2d": GlobalAveragePooling2D,
    "batch_norm": BatchNorm,
    "noisy_batch_norm": NoisyBatchNorm,
    "batch_renorm": BatchRenorm,
    "ghost_batch_norm": GhostBatchNorm,
    "layer_norm": LayerNorm,
    "group_norm": GroupNorm,
    "activation": Activation,
    "leaky_relu": LeakyReLU,
    "dropout": Dropout,
    "residual": Residual,
}
# Fields that are for code, not for files: BatchNorm.axis_name names a mapped device axis.
FILE_HIDDEN_OPTIONS = {"axis_name"}


def build_layer(spec: dict[str, Any]) -> Layer:
    """The layer a file's inline table describes; a ``ConfigError`` (without the file's
    position, which the caller adds) for an unknown type, an unknown option, an option of
    the wrong type, a number that is not finite or beyond float32 (``value_problem``), a
    missing required option, or a value the layer itself rejects."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    if not isinstance(kind, str) or kind not in LAYER_TYPES:
        raise ConfigError(f"layer type {shown(kind)} unknown; allowed: {', '.join(LAYER_TYPES)}")
    cls = LAYER_TYPES[kind]
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in FILE_HIDDEN_OPTIONS}
    stacks = getattr(cls, "STACKS", ())  # options that hold layers: a residual block's
    for option, value in spec.items():
        if option not in fields:
            raise ConfigError(f"{kind} layer has no option {option!r}; allowed: "
                              f"{', '.join(sorted(fields)) or 'none'}")
        if option in stacks:
            spec[option] = build_stack(kind, option, value)
            continue
        accepts, description = option_type(hints[option])
        if not accepts(value):
            raise ConfigError(f"{kind} layer option {option} must be {description}, "
                              f"got {shown(value)}")
        if problem := value_problem(value):
            raise ConfigError(f"{kind} layer option {option} {problem}")
    missing = [name for name, f in fields.items() if f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING and name not in spec]
    if missing:
        raise ConfigError(f"{kind} layer needs {', '.join(missing)}")
    return cls(**spec)


def build_stack(kind: str, option: str, specs: Any) -> tuple[Layer, ...]:
    """The layers of a block's ``option`` (``residual``'s ``branch``, ``shortcut``): an array
    of inline tables, each a layer; a message names the layer's place in it."""
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise ConfigError(f"{kind} layer option {option} must be an array of layer tables, "
                          f"got {shown(specs)}")
    layers = []
    for index, spec in enumerate(specs):
        try:
            layers.append(build_layer(spec))
        except ConfigError as err:
            raise ConfigError(f"{option}[{index}]: {err}") from None
    return tuple(layers)
