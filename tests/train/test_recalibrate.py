"""Recomputed population statistics (``train.recalibrate``, fvcore's PreciseBN) against a
NumPy transcription: every BN layer's moving statistics become the plain averages of its
batch statistics over N batches run through the final weights in training mode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bnlab.errors import ConfigError
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.layers import Dense, Dropout, Flatten
from bnlab.nn.model import Sequential
from bnlab.train.loop import train_epochs
from bnlab.train.recalibrate import precise_statistics
from bnlab.train.trainer import SeedBatchTrainer
from tests.synthetic import tiny_splits


def numpy_population_statistics(params, x_batches, unbiased=(False, False)):
    """Flatten → BN → Dense(relu) → BN → …: each BN's batch mean and variance per batch in
    training mode (float64), averaged over the batches."""
    per_layer = [[], []]
    for x in x_batches:
        h = np.asarray(x, np.float64).reshape(len(x), -1)
        for k, (bn_index, dense_index) in enumerate(((1, 2), (3, None))):
            mean, var = h.mean(0), h.var(0)
            stored = var * len(h) / (len(h) - 1) if unbiased[k] else var
            per_layer[k].append((mean, stored))
            h = (h - mean) / np.sqrt(var + 1e-3) * np.asarray(params[bn_index]["gamma"]) + \
                np.asarray(params[bn_index]["beta"])
            if dense_index is not None:
                kernel = np.asarray(params[dense_index]["kernel"], np.float64)
                h = np.maximum(h @ kernel + np.asarray(params[dense_index]["bias"]), 0.0)
    return [(np.mean([m for m, _ in layer], 0), np.mean([v for _, v in layer], 0))
            for layer in per_layer]


@pytest.mark.slow
def test_precise_statistics_are_the_average_batch_statistics_of_every_layer():
    model = Sequential((Flatten(), BatchNorm(), Dense(6, activation="relu"),
                        BatchNorm(stored_variance="unbiased"), Dropout(0.5), Dense(3)),
                       input_shape=(2, 4))
    params, state = model.init(jax.random.key(0))
    params = jax.tree_util.tree_map(
        lambda p: p + 0.3 * jax.random.normal(jax.random.key(1), p.shape), params)
    batches = jax.random.normal(jax.random.key(2), (5, 16, 2, 4)) * 2.0 + 1.0
    new = precise_statistics(model, params, state, batches)
    want = numpy_population_statistics(params, np.asarray(batches), unbiased=(False, True))
    for index, (mean, var) in zip((1, 3), want, strict=True):
        np.testing.assert_allclose(new[index]["moving_mean"], mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(new[index]["moving_variance"], var, rtol=1e-5, atol=1e-5)
        assert set(new[index]) == set(state[index])  # no counter left behind


def test_a_frozen_layer_keeps_its_statistics():
    model = Sequential((Flatten(), BatchNorm(freeze=True), Dense(3)), input_shape=(2, 4))
    params, state = model.init(jax.random.key(0))
    new = precise_statistics(model, params, state, jnp.ones((2, 4, 2, 4)) * 3.0)
    for key in state[1]:
        np.testing.assert_array_equal(new[1][key], state[1][key])


def trained(momentum: float):
    splits = tiny_splits(n_train=256, n_val=64)
    model = Sequential((Flatten(), BatchNorm(momentum=momentum), Dense(16, activation="relu"),
                        BatchNorm(momentum=momentum), Dense(3, activation="softmax")),
                       input_shape=(4, 4))
    trainer = SeedBatchTrainer(model, optax.sgd(0.05), batch_size=32, x_train=splits.x_train,
                               y_train=splits.y_train, seeds=(1, 2),
                               evaluation={"val": (splits.x_val, splits.y_val)})
    state = trainer.init_state()
    trainer.compile(state, batch_statistics=("val",))
    (record,) = train_epochs(trainer, state, epochs=1)
    return trainer, record


@pytest.mark.slow
def test_recalibration_closes_the_gap_left_by_a_slow_moving_average():
    # Momentum 0.999 over 8 steps leaves the moving statistics near their initial 0 and 1:
    # inference is far from what the batch statistics give. Recalibrated over every
    # training batch, inference comes to within a few points of them.
    trainer, record = trained(momentum=0.999)
    before = record.metrics["val_loss"]
    batch = record.metrics["val_batchstats_loss"]
    state = trainer.recalibrate(record.state, batches=8)
    after, _ = trainer.evaluate(state, "val")
    assert (np.abs(before - batch) > 5 * np.abs(after - batch)).all(), (before, after, batch)
    for a, b in zip(jax.tree_util.tree_leaves(state.params),
                    jax.tree_util.tree_leaves(record.state.params), strict=True):
        np.testing.assert_array_equal(a, b)  # the weights are untouched
    again = trainer.recalibrate(record.state, batches=8)  # the same batches every time
    for a, b in zip(jax.tree_util.tree_leaves(again.bn_state),
                    jax.tree_util.tree_leaves(state.bn_state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_recalibration_batches_must_fit_the_training_set():
    trainer, record = trained(momentum=0.99)
    for bad in (0, 9, 2.5, True):
        with pytest.raises(ConfigError, match=r"whole number in 1\.\.8"):
            trainer.recalibrate(record.state, bad)
