"""Freezing is not inference: ``freeze`` / ``freeze_affine`` (what training may change) and
``train`` (which statistics normalize) combine freely, and every combination does what it
says. Values are compared exactly where the same float32 operations run, else at 1e-6."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bnlab.config.layers import build_layer
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.layers import Dense, Flatten
from bnlab.nn.model import Sequential
from bnlab.nn.summary import summarize
from bnlab.train.engine import fixed, init_train_state, make_train_epoch

FEATURES = 5


def layer_and_state(**options):
    bn = BatchNorm(**options)
    _, state, _ = bn.init(None, (FEATURES,))
    affine = {"gamma": jnp.linspace(0.5, 1.5, FEATURES), "beta": jnp.linspace(-1.0, 1.0,
                                                                               FEATURES)}
    moving = {"moving_mean": jnp.full(FEATURES, 0.3), "moving_variance": jnp.full(FEATURES, 2.0)}
    if options.get("freeze") or options.get("freeze_affine"):
        return bn, {}, {**state, **affine, **moving}
    return bn, affine, {**state, **moving}


X = jax.random.normal(jax.random.key(0), (16, FEATURES)) * 2.0 + 1.0


@pytest.mark.parametrize("train", [True, False], ids=["train", "inference"])
@pytest.mark.parametrize("freeze", [False, True], ids=["trainable", "frozen"])
def test_the_four_combinations_of_freeze_and_mode(freeze, train):
    bn, params, state = layer_and_state(freeze=freeze)
    plain, plain_params, plain_state = layer_and_state()
    y, new_state = bn.apply(params, state, X, train=train)
    want, want_state = plain.apply(plain_params, plain_state, X, train=train)
    # The statistics used depend on the mode only: the outputs are plain BatchNorm's.
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
    moved = not np.allclose(new_state["moving_mean"], state["moving_mean"])
    assert moved == (train and not freeze)  # only unfrozen training updates the statistics
    if freeze:
        assert params == {} and {"gamma", "beta"} <= set(state)  # γ, β in the fixed tree
    else:
        np.testing.assert_array_equal(new_state["moving_mean"], want_state["moving_mean"])


def test_frozen_affine_still_updates_the_moving_statistics_in_training():
    bn, params, state = layer_and_state(freeze_affine=True)
    plain, plain_params, plain_state = layer_and_state()
    y, new_state = bn.apply(params, state, X, train=True)
    want, want_state = plain.apply(plain_params, plain_state, X, train=True)
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new_state["moving_variance"], want_state["moving_variance"],
                               rtol=1e-6)
    np.testing.assert_array_equal(new_state["gamma"], state["gamma"])


@pytest.mark.parametrize("option", ["freeze", "freeze_affine"])
@pytest.mark.slow
def test_an_epoch_of_sgd_leaves_frozen_gamma_beta_as_they_were(option):
    model = Sequential((Flatten(), BatchNorm(**{option: True}), Dense(10, activation="softmax")),
                       input_shape=(4, 4))
    images = jax.random.randint(jax.random.key(1), (64, 4, 4), 0, 256).astype(jnp.uint8)
    labels = jax.random.randint(jax.random.key(2), (64,), 0, 10)
    optimizer = optax.sgd(0.1)
    state = init_train_state(model, optimizer, jax.random.key(3))
    epoch = jax.jit(make_train_epoch(fixed(model, optimizer), 64, 16))
    keys = jax.random.split(jax.random.key(4))
    new, metrics = epoch(state, {}, jnp.bool_(True), images, labels, *keys)
    assert np.isfinite(float(metrics.loss))
    for name in ("gamma", "beta"):
        np.testing.assert_array_equal(new.bn_state[1][name], state.bn_state[1][name])
    assert not np.array_equal(new.params[2]["kernel"], state.params[2]["kernel"])  # it trained
    moving_changed = not np.array_equal(new.bn_state[1]["moving_mean"],
                                        state.bn_state[1]["moving_mean"])
    assert moving_changed == (option == "freeze_affine")


def test_summary_marks_frozen_layers_and_counts_their_parameters_as_non_trainable():
    def model(**options):
        return Sequential((Flatten(), BatchNorm(**options), Dense(10)), input_shape=(4, 4))

    plain, frozen = summarize(model()), summarize(model(freeze=True))
    assert frozen.total == plain.total
    assert frozen.trainable == plain.trainable - 2 * 16
    assert frozen.non_trainable == plain.non_trainable + 2 * 16
    assert frozen.layers[1].type_label == "BatchNormalization, frozen"
    assert "BatchNormalization, frozen" in str(frozen)
    assert "frozen" in frozen._repr_html_()
    assert summarize(model(freeze_affine=True)).layers[1].type_label == (
        "BatchNormalization, γ, β frozen")
    assert plain.layers[1].type_label == "BatchNormalization"


def test_freeze_is_an_option_of_experiment_files():
    layer = build_layer({"type": "batch_norm", "freeze": True})
    assert isinstance(layer, BatchNorm) and layer.freeze
