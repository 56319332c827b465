"""The fused input-BatchNorm + Dense training path (``nn.fused``): the values and gradients
of the layers one after the other, without the first layer's input-gradient product.

Tolerances: float64 for the pair alone (exact algebra, 1e-10); float32 for whole models,
where the fused backward sums γ's gradient in another order (1e-5, against changes ≥ 1e-2
from any wrong term).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.fused import apply_training, input_batchnorm_dense, scale_shift_dense
from bnlab.nn.layers import Dense, Dropout, Flatten, LeakyReLU
from bnlab.nn.model import Sequential
from bnlab.nn.zoo import get_model


def layer_by_layer(model, params, state, x, mask):
    """Training forward pass through each layer's own ``apply`` (no fused pair); logits."""
    new_state = []
    for layer, p, s in zip(model.layers[:-1], params, state, strict=False):
        x, s = layer.apply(p, s, x, train=True, mask=mask)
        new_state.append(s)
    return model.layers[-1].pre_activation(params[-1], x), (*new_state, state[-1])


@pytest.mark.parametrize("name", ["bn_after", "bn_before"])
@pytest.mark.slow
def test_fused_input_batchnorm_gives_the_layer_by_layer_loss_gradients_and_state(name):
    model = get_model(name)
    assert input_batchnorm_dense(model) == 1  # Flatten, then the input BatchNorm
    params, state = model.init(jax.random.key(3))
    x = jax.random.uniform(jax.random.key(4), (12, 28, 28))
    mask = jnp.arange(12) < 10  # a ragged batch: two padded rows
    labels = jnp.arange(12) % 10

    def loss(forward, params):
        logits, new_state = forward(params)
        per_row = -jax.nn.log_softmax(logits)[jnp.arange(12), labels]
        return jnp.sum(jnp.where(mask, per_row, 0.0)), new_state

    def fused(params):
        return apply_training(model, params, state, x, mask=mask)

    def plain(params):
        return layer_by_layer(model, params, state, x, mask)

    def sequential(params):  # Sequential.apply: the plain loop, no fused pair
        return model.apply(params, state, x, train=True, mask=mask)

    (want, plain_state), plain_grads = jax.value_and_grad(
        lambda p: loss(plain, p), has_aux=True)(params)
    for forward in (fused, sequential):
        (value, got_state), grads = jax.value_and_grad(
            lambda p, forward=forward: loss(forward, p), has_aux=True)(params)
        np.testing.assert_allclose(value, want, rtol=1e-6)
        for got, expected in zip(jax.tree_util.tree_leaves((grads, got_state)),
                                 jax.tree_util.tree_leaves((plain_grads, plain_state)),
                                 strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_no_fused_pair_without_an_input_batchnorm_before_a_dense_layer():
    assert input_batchnorm_dense(get_model("baseline")) is None
    hidden_only = Sequential((Flatten(), Dense(8), BatchNorm(), Dense(3)), input_shape=(4,))
    assert input_batchnorm_dense(hidden_only) is None
    bn_then_activation = Sequential((BatchNorm(), LeakyReLU(), Dense(3)), input_shape=(4,))
    assert input_batchnorm_dense(bn_then_activation) is None


def test_bn_models_training_step_has_no_input_gradient_product_for_the_first_layer():
    # The point of the fused pair: XLA drops dZ·Wᵀ, the (32, 784) product, from the step;
    # the same step through each layer's own apply keeps it (so the check can fail).
    model = get_model("bn_after")
    params, state = model.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (32, 28, 28))

    def product_shapes(forward):
        def grads(params, x):
            return jax.grad(lambda p: jnp.sum(forward(p, x)))(params)

        hlo = jax.jit(grads).lower(params, x).compile().as_text()
        return re.findall(r"= (f32\[[\d,]+\])\S* dot\(", hlo)

    fused = product_shapes(lambda p, x: apply_training(model, p, state, x)[0])
    plain = product_shapes(lambda p, x: layer_by_layer(model, p, state, x, None)[0])
    assert "f32[32,784]" in plain or "f32[784,32]" in plain
    assert fused and "f32[32,784]" not in fused and "f32[784,32]" not in fused


# --- BatchNorm's scale-and-shift fused with the next Dense (scale_shift_dense) ----------------


def scale_shift_dense_inputs(seed: int, rows: int = 6, features: int = 5, units: int = 4):
    rng = np.random.default_rng(seed)
    shapes = ((rows, features), (features,), (features,), (features, units), (units,))
    return tuple(jnp.asarray(rng.normal(0.5, 1.0, shape)) for shape in shapes)


def test_scale_shift_dense_gradients_pass_check_grads_in_float64(float64):
    # The hand-written backward (every cotangent, x̂'s included) against finite differences.
    args = scale_shift_dense_inputs(seed=31)
    check_grads(scale_shift_dense, args, order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_scale_shift_dense_equals_the_two_layers_values_and_autodiff_gradients(float64):
    x_hat, gamma, beta, kernel, bias = scale_shift_dense_inputs(seed=32)

    def two_layers(x_hat, gamma, beta, kernel, bias):
        return (x_hat * gamma[None, :] + beta[None, :]) @ kernel + bias[None, :]

    dz = jnp.asarray(np.random.default_rng(33).standard_normal((6, 4)))
    ours, our_vjp = jax.vjp(scale_shift_dense, x_hat, gamma, beta, kernel, bias)
    plain, plain_vjp = jax.vjp(two_layers, x_hat, gamma, beta, kernel, bias)
    np.testing.assert_allclose(ours, plain, rtol=1e-12, atol=1e-12)
    for got, want in zip(our_vjp(dz), plain_vjp(dz), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_fused_path_keeps_each_layers_dropout_key_and_a_final_dense_gives_logits():
    model = Sequential((Flatten(), BatchNorm(), Dense(6, activation="relu"), Dropout(0.5),
                        Dense(3, activation="softmax")), input_shape=(2, 2))
    assert input_batchnorm_dense(model) == 1
    params, state = model.init(jax.random.key(5))
    x = jax.random.uniform(jax.random.key(6), (8, 2, 2))
    key = jax.random.key(7)
    fused, fused_state = apply_training(model, params, state, x, key=key)
    plain, plain_state = model.apply(params, state, x, train=True, key=key)
    np.testing.assert_allclose(fused, plain, rtol=1e-6, atol=1e-6)
    for got, want in zip(jax.tree_util.tree_leaves(fused_state),
                         jax.tree_util.tree_leaves(plain_state), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    only_pair = Sequential((Flatten(), BatchNorm(), Dense(3, activation="softmax")),
                           input_shape=(2, 2))  # the fused Dense is the output: logits
    params, state = only_pair.init(jax.random.key(8))
    np.testing.assert_allclose(apply_training(only_pair, params, state, x)[0],
                               only_pair.apply(params, state, x, train=True)[0], rtol=1e-6,
                               atol=1e-6)
