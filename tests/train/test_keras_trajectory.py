"""bnlab's training step against Keras's, step by step from identical weights on identical
batches at SGD 1.0 (docs/reference.md, "bnlab and Keras at high learning rates"): Keras on
JAX computes the cross-entropy from probabilities clipped to [1e-7, 1 − 1e-7], so a row whose
p_y is clipped gives no gradient; bnlab (the notebook's TensorFlow Keras too) takes the logits.
With Keras's clipped loss bnlab follows Keras on JAX; with its own it parts from it at the first
clipped row. ``benchmarks/keras_fidelity.py`` measures the same over a whole epoch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bnlab.config.files import load_experiment
from bnlab.export.keras_format import read_keras, write_keras
from bnlab.nn.fused import apply_training

STEPS = 6
CLIP = 1e-7  # keras.backend.epsilon()


def keras_jax_cross_entropy(logits, y):
    """Keras 3's ``sparse_categorical_crossentropy`` on its JAX backend, given
    ``softmax(logits)`` (keras/src/backend/jax/nn.py): p / Σp clipped, −log p_y."""
    p = jax.nn.softmax(logits, axis=-1)
    p = jnp.clip(p / jnp.sum(p, axis=-1, keepdims=True), CLIP, 1.0 - CLIP)
    return -jnp.take_along_axis(jnp.log(p), y[:, None], axis=-1)[:, 0]


def bnlab_steps(model, params, bn_state, x, y, cross_entropy):
    optimizer = optax.sgd(1.0)

    def loss(params, bn_state, xb, yb):
        logits, new_state = apply_training(model, params, bn_state, xb)
        p_y = jnp.take_along_axis(jax.nn.softmax(logits), yb[:, None], axis=-1)[:, 0]
        return cross_entropy(logits, yb).mean(), (new_state, jnp.sum(p_y < CLIP))

    opt_state, clipped = optimizer.init(params), 0
    for xb, yb in zip(x, y, strict=True):
        (_, (bn_state, tiny)), grads = jax.value_and_grad(loss, has_aux=True)(
            params, bn_state, xb, yb)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params, clipped = optax.apply_updates(params, updates), clipped + int(tiny)
    return params, clipped


def distance(a, b) -> float:
    flat = [np.concatenate([np.ravel(np.asarray(leaf, np.float64))
                            for leaf in jax.tree_util.tree_leaves(tree)]) for tree in (a, b)]
    return float(np.linalg.norm(flat[0] - flat[1]) / np.linalg.norm(flat[1]))


# Keras's own training step converts one of its variables with NumPy 2's deprecated
# ``__array__`` call (keras/src/backend/common/variables.py); nothing of bnlab's.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
def test_keras_on_jax_trains_as_bnlab_with_its_clipped_cross_entropy(keras, fashion_mnist,
                                                                      tmp_path):
    (point,) = [p for p in load_experiment("seed").points if p.name == "bn_after"]
    model = point.build((28, 28))
    params, bn_state = model.init(jax.random.key(42))
    rows = np.random.default_rng(42).permutation(len(fashion_mnist.y_train))[:STEPS * 32]
    x = (fashion_mnist.x_train[rows].astype(np.float32) / np.float32(255)).reshape(
        STEPS, 32, 28, 28)
    y = fashion_mnist.y_train[rows].astype(np.int32).reshape(STEPS, 32)
    write_keras(tmp_path / "start.keras", model, params, bn_state)

    theirs = keras.saving.load_model(tmp_path / "start.keras", compile=False, safe_mode=True)
    theirs.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0),
                   loss="sparse_categorical_crossentropy")
    for xb, yb in zip(x, y, strict=True):
        theirs.train_on_batch(xb, yb)
    theirs.save(tmp_path / "end.keras")
    keras_params = read_keras(tmp_path / "end.keras").params

    clipped_params, clipped_rows = bnlab_steps(model, params, bn_state, x, y,
                                               keras_jax_cross_entropy)
    own_params, _ = bnlab_steps(model, params, bn_state, x, y,
                                optax.softmax_cross_entropy_with_integer_labels)
    assert clipped_rows > 0, "no row was clipped: these steps cannot tell the losses apart"
    assert distance(keras_params, clipped_params) < 1e-5  # float rounding
    assert distance(keras_params, own_params) > 1e-3  # the clipped rows' gradients
