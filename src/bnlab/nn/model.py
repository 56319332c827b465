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

from bnlab.nn.batchnorm import BatchNorm
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
        """Each layer's output shape without the batch axis."""
        shapes = []
        shape = self.input_shape
        for layer in self.layers:
            _, _, shape = layer.init(jax.random.key(0), shape)
            shapes.append(shape)
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
        last = len(self.layers) - 1
        for i, (layer, name) in enumerate(zip(self.layers, self.layer_names, strict=True)):
            if isinstance(layer, Dense):
                z = layer.pre_activation(params[i], x)
                outputs[f"{name}/pre_activation"] = z
                if i == last and layer.activation == "softmax":
                    x, s = z, state[i]
                else:
                    x, s = layer.apply(params[i], state[i], x, train=train)
            else:
                x, s = layer.apply(params[i], state[i], x, train=train, mask=mask, key=keys[i])
            outputs[name] = x
            new_state.append(s)
        return x, tuple(new_state), outputs

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
