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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bnlab.errors import ConfigError, LayerInputError
from bnlab.lazy import Deferred
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.layers import Activation, Dense, Dropout, Flatten, LeakyReLU
from bnlab.nn.norms import BatchRenorm, GhostBatchNorm, GroupNorm, LayerNorm, NoisyBatchNorm

if TYPE_CHECKING:
    from jax import Array

jax = Deferred("jax")
Layer = (Flatten | Dense | Activation | LeakyReLU | Dropout | BatchNorm | NoisyBatchNorm
         | BatchRenorm | GhostBatchNorm | LayerNorm | GroupNorm)

KERAS_TYPE_NAMES = {  # layer type -> (Keras class name, Keras auto-name base)
    Flatten: ("Flatten", "flatten"),
    Dense: ("Dense", "dense"),
    Activation: ("Activation", "activation"),
    LeakyReLU: ("LeakyReLU", "leaky_re_lu"),
    Dropout: ("Dropout", "dropout"),
    BatchNorm: ("BatchNormalization", "batch_normalization"),
    NoisyBatchNorm: ("NoisyBatchNormalization", "noisy_batch_normalization"),  # bnlab's
    BatchRenorm: ("BatchRenormalization", "batch_renormalization"),  # Keras 2: an option of BN
    GhostBatchNorm: ("GhostBatchNormalization", "ghost_batch_normalization"),  # bnlab's
    LayerNorm: ("LayerNormalization", "layer_normalization"),
    GroupNorm: ("GroupNormalization", "group_normalization"),
}


@dataclass(frozen=True)
class Sequential:
    """Layers applied in order to inputs ``x: (batch, *input_shape)``."""

    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...] = (28, 28)
    name: str = "sequential"

    def __post_init__(self) -> None:
        layers = tuple(self.layers)  # a list is fine too
        unknown = [type(layer).__name__ for layer in layers if type(layer) not in
                   KERAS_TYPE_NAMES]
        if unknown:
            known = ", ".join(kind.__name__ for kind in KERAS_TYPE_NAMES)
            raise ConfigError(f"Sequential takes bnlab layers ({known}), got "
                              f"{', '.join(unknown)}")
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
                shape = tuple(layer.output_shape(shape))
            except ConfigError as err:
                raise LayerInputError(str(err), index=index) from None
            shapes.append(shape)
        return tuple(shapes)

    @property
    def weight_bound(self) -> int:
        """At least as many values as the model's parameters and statistics hold, in plain
        Python (checking a size computes nothing): a ``Dense`` layer's inputs × units and its
        bias, a normalization layer four per feature (γ, β, two moving statistics), other
        layers none."""
        total, shape = 0, self.input_shape
        for layer, out in zip(self.layers, self.output_shapes, strict=True):
            if isinstance(layer, Dense):
                total += (shape[-1] + layer.use_bias) * layer.units
            elif not isinstance(layer, Flatten | Activation | LeakyReLU | Dropout):
                total += 4 * out[-1]
            shape = out
        return total

    def init(self, key: Array) -> tuple[tuple[dict, ...], tuple[dict, ...]]:
        """``(params, bn_state)``; each layer gets its own key split from ``key``."""
        params, bn_state = [], []
        shape = self.input_shape
        for layer, layer_key in zip(self.layers, jax.random.split(key, len(self.layers)),
                                    strict=True):
            p, s, shape = layer.init(layer_key, shape)
            params.append(p)
            bn_state.append(s)
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
        """Like ``apply``, and also every layer's output by layer name, plus each Dense
        layer's pre-activation as ``"<name>/pre_activation"`` (for histograms, Figure 1).

        With ``start`` the loop begins at layer ``start`` (``x`` is what layer ``start − 1``
        gave): the returned ``bn_state`` keeps the entries of the layers before it as given,
        and each layer still gets the Dropout key it gets in a whole pass.
        """
        keys = (jax.random.split(key, len(self.layers)) if key is not None
                else [None] * len(self.layers))
        new_bn_state = list(bn_state)
        outputs: dict[str, Array] = {}
        names = self.layer_names
        for i in range(start, len(self.layers)):
            layer = self.layers[i]
            if isinstance(layer, Dense):
                z = layer.pre_activation(params[i], x)
                outputs[f"{names[i]}/pre_activation"] = z
                x = self.dense_output(i, z)
            else:
                x, new_bn_state[i] = layer.apply(params[i], bn_state[i], x, train=train,
                                                 mask=mask, key=keys[i])
            outputs[names[i]] = x
        return x, tuple(new_bn_state), outputs

    def dense_output(self, index: int, z: Array) -> Array:
        """What Dense layer ``index`` passes on from its pre-activation ``z``: its activation,
        except for a final softmax, which is left to the loss (``apply`` returns logits)."""
        layer = self.layers[index]
        if index == len(self.layers) - 1 and layer.activation == "softmax":
            return z
        return layer.activate(z)
