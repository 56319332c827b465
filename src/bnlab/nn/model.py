"""``Sequential``: a stack of layers with explicit params and state.

``params`` and ``state`` are tuples with one dict per layer (empty for layers without
any), so trainable vs non-trainable is a matter of which tree a value lives in:

    params, state = model.init(key)
    logits, state = model.apply(params, state, x, train=True, mask=mask, key=key)

``apply`` returns **logits**: when the last layer is ``Dense(..., activation="softmax")``
the softmax is left to the loss (``optax.softmax_cross_entropy_with_integer_labels``),
which computes it stably; ``predict_proba`` applies it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from bnlab.errors import ConfigError, LayerInputError
from bnlab.nn.batchnorm import BatchNorm, scale_shift_dense
from bnlab.nn.layers import Activation, Dense, Dropout, Flatten, LeakyReLU

Array = jax.Array
Layer = Flatten | Dense | Activation | LeakyReLU | Dropout | BatchNorm

KERAS_TYPE_NAMES = {
    Flatten: ("Flatten", "flatten"),
    Dense: ("Dense", "dense"),
    Activation: ("Activation", "activation"),
    LeakyReLU: ("LeakyReLU", "leaky_re_lu"),
    Dropout: ("Dropout", "dropout"),
    BatchNorm: ("BatchNormalization", "batch_normalization"),
}


@dataclass(frozen=True)
class Sequential:
    """Layers applied in order to inputs ``x: (batch, *input_shape)``."""

    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...] = (28, 28)
    name: str = "sequential"

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
        """Each layer's output shape without the batch axis. Traced abstractly
        (``jax.eval_shape``): no initializer runs, so validating a config costs no compute.
        A layer that cannot take its input raises ``LayerInputError`` with its index."""
        shapes: list[tuple[int, ...]] = []
        shape = self.input_shape
        for index, layer in enumerate(self.layers):

            def init(key, layer=layer, shape=shape):
                params, state, out_shape = layer.init(key, shape)
                shapes.append(out_shape)  # a Python tuple: returned through the closure
                return params, state

            try:
                jax.eval_shape(init, jax.random.key(0))
            except ConfigError as err:
                raise LayerInputError(str(err), index=index) from None
            shape = shapes[-1]
        return tuple(shapes)

    def init(self, key: Array) -> tuple[tuple[dict, ...], tuple[dict, ...]]:
        """``(params, state)``; each layer gets its own key split from ``key``."""
        params, state = [], []
        shape = self.input_shape
        for layer, layer_key in zip(self.layers, jax.random.split(key, len(self.layers)),
                                    strict=True):
            p, s, shape = layer.init(layer_key, shape)
            params.append(p)
            state.append(s)
        return tuple(params), tuple(state)

    def apply(
        self,
        params: tuple[dict, ...],
        state: tuple[dict, ...],
        x: Array,
        *,
        train: bool,
        mask: Array | None = None,
        key: Array | None = None,
    ) -> tuple[Array, tuple[dict, ...]]:
        """Forward pass: ``x: (batch, *input_shape)`` → ``(logits: (batch, classes), state)``.

        ``mask: (batch,)`` marks the real rows of a padded batch (BN statistics use only
        those); ``key`` feeds Dropout in training.
        """
        logits, new_state, _ = self.apply_with_intermediates(
            params, state, x, train=train, mask=mask, key=key
        )
        return logits, new_state

    def apply_with_intermediates(
        self,
        params: tuple[dict, ...],
        state: tuple[dict, ...],
        x: Array,
        *,
        train: bool,
        mask: Array | None = None,
        key: Array | None = None,
    ) -> tuple[Array, tuple[dict, ...], dict[str, Array]]:
        """Like ``apply`` and also every layer's output by layer name, plus each Dense
        layer's pre-activation as ``"<name>/pre_activation"`` (for histograms, Figure 1)."""
        keys = (jax.random.split(key, len(self.layers)) if key is not None
                else [None] * len(self.layers))
        new_state = []
        outputs: dict[str, Array] = {}
        names, last = self.layer_names, len(self.layers) - 1
        fused = self.input_batchnorm_before_dense() if train else None
        normalized: tuple[Array, Array, Array] | None = None  # (x̂, γ, β) of that BatchNorm
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Dense):
                if normalized is not None and i - 1 == fused:  # its scale, shift and product
                    kernel = params[i]["kernel"]
                    bias = (params[i]["bias"] if layer.use_bias
                            else jnp.zeros(kernel.shape[-1:], kernel.dtype))
                    z = scale_shift_dense(*normalized, kernel, bias)
                else:
                    z = layer.pre_activation(params[i], x)
                outputs[f"{names[i]}/pre_activation"] = z
                x = z if i == last and layer.activation == "softmax" else layer.activate(z)
                s = state[i]
            elif i == fused:
                x_hat, s = layer.normalize(state[i], x, mask=mask)
                normalized = (x_hat, *layer.affine(params[i], x_hat))
                x = x_hat * normalized[1] + normalized[2]  # its output, for intermediates
            else:
                x, s = layer.apply(params[i], state[i], x, train=train, mask=mask, key=keys[i])
            outputs[names[i]] = x
            new_state.append(s)
        return x, tuple(new_state), outputs

    def input_batchnorm_before_dense(self) -> int | None:
        """Index of a BatchNorm that normalizes the model's input (only Flatten before it)
        and feeds a Dense layer, else ``None``. In training such a pair runs as one
        ``batchnorm.scale_shift_dense``: the data needs no gradient, so γ and β get theirs
        without the input-gradient product of that Dense layer (same values, ≈ 10% less
        time per bn_after / bn_before epoch on CPU; see that function)."""
        for i, layer in enumerate(self.layers[:-1]):
            if isinstance(layer, BatchNorm):
                return i if isinstance(self.layers[i + 1], Dense) else None
            if not isinstance(layer, Flatten):
                return None
        return None

    def predict_proba(self, params: tuple[dict, ...], state: tuple[dict, ...], x: Array) -> Array:
        """Inference-mode class probabilities ``(batch, classes)``."""
        logits, _ = self.apply(params, state, x, train=False)
        return jax.nn.softmax(logits)


def layer_variables(model: Sequential) -> list[tuple[str, str, tuple[int, ...], bool]]:
    """``(layer_name, variable_name, shape, trainable)`` for every variable, in Keras's order
    (gamma, beta, moving_mean, moving_variance). A real ``init``: ``eval_shape`` would
    return dicts with sorted keys."""
    params, state = model.init(jax.random.key(0))
    rows = []
    for name, p, s in zip(model.layer_names, params, state, strict=True):
        rows += [(name, var, tuple(arr.shape), True) for var, arr in p.items()]
        rows += [(name, var, tuple(arr.shape), False) for var, arr in s.items()]
    return rows


def param_counts(model: Sequential) -> dict[str, int]:
    """Keras-style counts: ``total``, ``trainable``, ``non_trainable`` (BN moving stats)."""
    params, state = jax.eval_shape(model.init, jax.random.key(0))
    trainable = sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(params))
    non_trainable = sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(state))
    return {"total": trainable + non_trainable, "trainable": trainable,
            "non_trainable": non_trainable}
