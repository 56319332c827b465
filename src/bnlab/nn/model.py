"""``Sequential``: a stack of layers with explicit params and BN state.

``params`` and ``bn_state`` are tuples with one dict per layer (empty for layers without
any), so trainable vs non-trainable is a matter of which tree a value lives in:

    params, bn_state = model.init(key)
    logits, bn_state = model.apply(params, bn_state, x, train=True, mask=mask, key=key)

``apply`` returns **logits**: when the last layer is ``Dense(..., activation="softmax")``
the softmax is left to the loss (``optax.softmax_cross_entropy_with_integer_labels``),
which computes it stably; ``jax.nn.softmax(logits)`` gives the probabilities.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bnlab.errors import ConfigError, LayerInputError
from bnlab.lazy import Deferred
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.blocks import Add, Branch, SkipInit, expand_blocks, source_of
from bnlab.nn.conv import Conv2D
from bnlab.nn.layers import (
    Activation,
    Dense,
    Dropout,
    Flatten,
    LeakyReLU,
    Reshape,
    WithoutParameters,
)
from bnlab.nn.norms import BatchRenorm, GhostBatchNorm, GroupNorm, LayerNorm, NoisyBatchNorm
from bnlab.nn.pooling import AveragePooling2D, GlobalAveragePooling2D, MaxPool2D

if TYPE_CHECKING:
    from jax import Array

jax = Deferred("jax")
Layer = (Flatten | Reshape | Dense | Conv2D | MaxPool2D | AveragePooling2D
         | GlobalAveragePooling2D | Activation | LeakyReLU | Dropout | BatchNorm | NoisyBatchNorm
         | BatchRenorm | GhostBatchNorm | LayerNorm | GroupNorm | Branch | Add | SkipInit)
WEIGHTED = (Dense, Conv2D)  # layers with a kernel, a pre-activation and an activation

KERAS_TYPE_NAMES = {  # layer type -> (Keras class name, Keras auto-name base)
    Flatten: ("Flatten", "flatten"),
    Reshape: ("Reshape", "reshape"),
    Dense: ("Dense", "dense"),
    Conv2D: ("Conv2D", "conv2d"),
    MaxPool2D: ("MaxPooling2D", "max_pooling2d"),
    AveragePooling2D: ("AveragePooling2D", "average_pooling2d"),
    GlobalAveragePooling2D: ("GlobalAveragePooling2D", "global_average_pooling2d"),
    Activation: ("Activation", "activation"),
    LeakyReLU: ("LeakyReLU", "leaky_re_lu"),
    Dropout: ("Dropout", "dropout"),
    BatchNorm: ("BatchNormalization", "batch_normalization"),
    NoisyBatchNorm: ("NoisyBatchNormalization", "noisy_batch_normalization"),  # bnlab's
    BatchRenorm: ("BatchRenormalization", "batch_renormalization"),  # Keras 2: an option of BN
    GhostBatchNorm: ("GhostBatchNormalization", "ghost_batch_normalization"),  # bnlab's
    LayerNorm: ("LayerNormalization", "layer_normalization"),
    GroupNorm: ("GroupNormalization", "group_normalization"),
    Branch: ("Branch", "branch"),  # bnlab's: a residual block's shortcut starts here
    Add: ("Add", "add"),
    SkipInit: ("SkipInit", "skip_init"),  # bnlab's (De & Smith 2020)
}


@dataclass(frozen=True)
class Sequential:
    """Layers applied in order to inputs ``x: (batch, *input_shape)``; a ``Residual`` block
    among them is expanded into its layers (``nn.blocks``), so ``layers`` is always flat."""

    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...] = (28, 28)
    name: str = "sequential"

    def __post_init__(self) -> None:
        layers = expand_blocks(tuple(self.layers))  # a list is fine too
        unknown = [type(layer).__name__ for layer in layers if type(layer) not in
                   KERAS_TYPE_NAMES]
        if unknown:
            known = ", ".join(kind.__name__ for kind in KERAS_TYPE_NAMES)
            raise ConfigError(f"Sequential takes bnlab layers ({known}), got "
                              f"{', '.join(unknown)}")
        for index, layer in enumerate(layers):
            source_of(layer, index)  # a Branch or Add reads an earlier layer
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "input_shape", tuple(self.input_shape))

    @property
    def has_batchnorm(self) -> bool:
        """Whether a layer normalizes with batch statistics in training (the BatchNorm
        family), so that training and inference compute differently."""
        return any(isinstance(layer, BatchNorm) for layer in self.layers)

    def without_training_noise(self) -> Sequential:
        """This model with what training adds at random taken out: Dropout at rate 0, noisy
        BatchNorm as the BatchNorm it wraps. ``apply(..., train=True)`` of it normalizes
        with batch statistics and is otherwise deterministic (needs no key)."""
        plain_fields = {f.name for f in dataclasses.fields(BatchNorm)}

        def quiet(layer: Layer) -> Layer:
            if isinstance(layer, Dropout):
                return Dropout(0.0)
            if isinstance(layer, NoisyBatchNorm):
                return BatchNorm(**{name: getattr(layer, name) for name in plain_fields})
            return layer

        return dataclasses.replace(self, layers=tuple(quiet(layer) for layer in self.layers))

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Keras-style names: ``dense``, ``dense_1``, ``batch_normalization``, …"""
        seen: dict[str, int] = {}
        names = []
        for layer in self.layers:
            base = KERAS_TYPE_NAMES[type(layer)][1]
            count = seen.get(base, 0)
            names.append(base if count == 0 else f"{base}_{count}")
            seen[base] = count + 1
        return tuple(names)

    @property
    def output_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Each layer's output shape without the batch axis (``layer.output_shape``, plain
        Python: validating a config computes nothing). A layer that cannot take its input
        raises ``LayerInputError`` with its index."""
        shapes: list[tuple[int, ...]] = []
        shape = self.input_shape
        for index, layer in enumerate(self.layers):
            try:
                shape = self.routed(index, shape, [self.input_shape, *shapes], _same_shape)
                shape = tuple(layer.output_shape(shape))
            except ConfigError as err:
                raise LayerInputError(str(err), index=index) from None
            shapes.append(shape)
        return tuple(shapes)

    def routed(self, index: int, x, earlier: list, add):
        """What layer ``index`` takes given the previous output ``x`` and ``earlier[k]``, the
        output of layer ``k − 1`` (``earlier[0]``: the model's input): ``x`` itself, or for a
        ``Branch`` the output it names, or for an ``Add`` ``add(x, that output)``."""
        layer = self.layers[index]
        if isinstance(layer, Branch):
            return earlier[layer.source + 1]
        if isinstance(layer, Add):
            return add(x, earlier[layer.source + 1])
        return x

    @property
    def weight_bound(self) -> int:
        """At least as many values as the model's parameters and statistics hold, in plain
        Python (checking a size computes nothing): a ``Dense`` or ``Conv2D`` layer's kernel
        (receptive field × inputs × outputs) and bias, a normalization layer four per channel
        (γ, β, two moving statistics), ``SkipInit`` one, other layers none."""
        total, shape = 0, self.input_shape
        for layer, out in zip(self.layers, self.output_shapes, strict=True):
            if isinstance(layer, WEIGHTED):
                field = math.prod(getattr(layer, "kernel_size", ()))
                total += (field * shape[-1] + layer.use_bias) * out[-1]
            elif isinstance(layer, SkipInit):
                total += 1
            elif not isinstance(layer, WithoutParameters):
                total += 4 * out[-1]
            shape = out
        return total

    def init(self, key: Array) -> tuple[tuple[dict, ...], tuple[dict, ...]]:
        """``(params, bn_state)``; each layer gets its own key split from ``key``."""
        params, bn_state = [], []
        shapes = [self.input_shape]
        for index, (layer, layer_key) in enumerate(
                zip(self.layers, jax.random.split(key, len(self.layers)), strict=True)):
            shape = self.routed(index, shapes[-1], shapes, _same_shape)
            p, s, shape = layer.init(layer_key, shape)
            params.append(p)
            bn_state.append(s)
            shapes.append(shape)
        return tuple(params), tuple(bn_state)

    def apply(
        self,
        params: tuple[dict, ...],
        bn_state: tuple[dict, ...],
        x: Array,
        *,
        train: bool,
        mask: Array | None = None,
        key: Array | None = None,
    ) -> tuple[Array, tuple[dict, ...]]:
        """Forward pass: ``x: (batch, *input_shape)`` → ``(logits: (batch, classes),
        new_bn_state)``.

        ``mask: (batch,)`` marks the real rows of a padded batch (BN statistics use only
        those); ``key`` feeds Dropout in training.
        """
        logits, new_bn_state, _ = self.apply_with_intermediates(
            params, bn_state, x, train=train, mask=mask, key=key
        )
        return logits, new_bn_state

    def apply_with_intermediates(
        self,
        params: tuple[dict, ...],
        bn_state: tuple[dict, ...],
        x: Array,
        *,
        train: bool,
        mask: Array | None = None,
        key: Array | None = None,
        start: int = 0,
    ) -> tuple[Array, tuple[dict, ...], dict[str, Array]]:
        """Like ``apply``, and also every layer's output by layer name, plus each Dense and
        Conv2D layer's pre-activation as ``"<name>/pre_activation"`` (for histograms,
        Figure 1).

        With ``start`` the loop begins at layer ``start`` (``x`` is what layer ``start − 1``
        gave): the returned ``bn_state`` keeps the entries of the layers before it as given,
        and each layer still gets the Dropout key it gets in a whole pass.
        """
        keys = (jax.random.split(key, len(self.layers)) if key is not None
                else [None] * len(self.layers))
        new_bn_state = list(bn_state)
        outputs: dict[str, Array] = {}
        names = self.layer_names
        earlier: list = [None] * start + [x]  # earlier[k]: layer k − 1's output
        for i in range(start, len(self.layers)):
            layer = self.layers[i]
            if isinstance(layer, Branch | Add):
                if layer.source + 1 < start:
                    raise ConfigError(f"{names[i]} reads layer {layer.source}, before layer "
                                      f"{start} where this pass starts")
                x = self.routed(i, x, earlier, lambda a, b: a + b)
            elif isinstance(layer, WEIGHTED):
                z = layer.pre_activation(params[i], x)
                outputs[f"{names[i]}/pre_activation"] = z
                x = self.dense_output(i, z)
            else:
                x, new_bn_state[i] = layer.apply(params[i], bn_state[i], x, train=train,
                                                 mask=mask, key=keys[i])
            outputs[names[i]] = x
            earlier.append(x)
        return x, tuple(new_bn_state), outputs

    def dense_output(self, index: int, z: Array) -> Array:
        """What Dense or Conv2D layer ``index`` passes on from its pre-activation ``z``: its
        activation, except for a final softmax, which is left to the loss (``apply`` returns
        logits)."""
        layer = self.layers[index]
        if index == len(self.layers) - 1 and layer.activation == "softmax":
            return z
        return layer.activate(z)


def _same_shape(shape: tuple[int, ...], other: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of a sum: both shapes must be equal (no broadcasting between layers)."""
    if tuple(shape) != tuple(other):
        raise ConfigError(f"Add sums two values of different shapes, {tuple(shape)} and "
                          f"{tuple(other)}; give the residual block a shortcut that makes "
                          f"them equal (e.g. a 1×1 Conv2D with the branch's filters and "
                          f"strides)")
    return tuple(shape)
