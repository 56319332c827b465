"""The compiled epoch: equal to a Python loop of the same step, Keras's ragged last batch,
evaluation in inference mode, and the keys of several seeds."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bnlab.errors import ConfigError
from bnlab.train.batches import check_batching, scale_pixels, steps_per_epoch
from bnlab.train.engine import (
    RunKeys,
    fixed,
    init_train_state,
    init_train_states,
    make_evaluate,
    make_train_epoch,
)
from tests.synthetic import tiny_model, tiny_splits


def test_steps_per_epoch_matches_keras_1719_for_55000_rows_at_batch_32():
    assert steps_per_epoch(55_000, 32) == 1719
    assert 55_000 - 1718 * 32 == 24  # the ragged last batch


@pytest.mark.slow
def test_scan_epoch_equals_python_loop_of_the_same_step_including_ragged_batch():
    # 70 rows at batch 32 → batches of 32, 32 and 6 rows. The Python loop slices the
    # ragged batch to its 6 real rows (Keras's behaviour, no mask at all); the compiled
    # epoch pads it and masks. float32 reassociation bounds the difference: 1e-5.
    splits = tiny_splits()
    model, optimizer = tiny_model(), optax.sgd(0.1)
    keys = RunKeys.from_seed(3)
    state = init_train_state(model, optimizer, keys.init)
    shuffle_key, dropout_key = keys.epoch(0)
    epoch = jax.jit(make_train_epoch(fixed(model, optimizer), 70, 32))
    compiled_state, metrics = epoch(state, {}, True, splits.x_train, splits.y_train,
                                    shuffle_key, dropout_key)

    @jax.jit
    def reference_step(params, bn_state, opt_state, x, y):  # one step of the loop, compiled
        def loss_fn(p):
            logits, new_state = model.apply(p, bn_state, x, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (
                new_state, logits)

        (loss, (bn_state, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), bn_state, opt_state, loss,
                jnp.sum(jnp.argmax(logits, -1) == y))

    order = np.asarray(jax.random.permutation(shuffle_key, 70))
    params, bn_state, opt_state = state
    losses, weights, correct = [], [], 0
    for start in range(0, 70, 32):
        rows = order[start:start + 32]
        x = scale_pixels(jnp.asarray(splits.x_train[rows]))
        y = jnp.asarray(splits.y_train[rows])
        params, bn_state, opt_state, loss, right = reference_step(params, bn_state, opt_state,
                                                                  x, y)
        losses.append(float(loss))
        weights.append(len(rows))
        correct += int(right)

    np.testing.assert_allclose(metrics.step_loss, losses, rtol=1e-5, atol=1e-6)
    assert float(metrics.loss) == pytest.approx(np.average(losses, weights=weights), rel=1e-5)
    assert float(metrics.accuracy) == pytest.approx(correct / 70, abs=1e-7)
    for got, want in zip(jax.tree_util.tree_leaves((compiled_state.params,
                                                    compiled_state.bn_state)),
                         jax.tree_util.tree_leaves((params, bn_state)), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_evaluate_is_mean_over_rows_in_inference_mode_whatever_the_chunking():
    splits = tiny_splits(n_val=37)
    model = tiny_model()
    params, bn_state = model.init(jax.random.key(0))
    logits, _ = model.apply(params, bn_state, scale_pixels(jnp.asarray(splits.x_val)),
                            train=False)
    want_loss = optax.softmax_cross_entropy_with_integer_labels(logits, splits.y_val).mean()
    want_acc = float(np.mean(np.argmax(logits, -1) == splits.y_val))
    for chunk in (5, 37, 100):
        evaluate = make_evaluate(fixed(model, None), chunk_size=chunk)
        loss, acc = evaluate(params, bn_state, {}, splits.x_val, splits.y_val)
        assert float(loss) == pytest.approx(float(want_loss), rel=1e-6)
        assert float(acc) == pytest.approx(want_acc, abs=1e-7)


def test_one_row_batch_with_batchnorm_is_rejected_before_training():
    with pytest.raises(ConfigError, match="one row"):
        check_batching(65, 32, tiny_model())
    check_batching(66, 32, tiny_model())  # 2 rows left: fine


def test_scale_pixels_divides_uint8_by_255_and_keeps_floats():
    # XLA divides by multiplying with 1/255: every pixel value lands within one float32 ulp
    # of the notebook's float64 division cast to float32.
    pixels = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_max_ulp(np.asarray(scale_pixels(jnp.asarray(pixels))),
                                    (pixels / 255.0).astype(np.float32), maxulp=1)
    floats = np.array([[0.5, -1.0]], np.float64)
    scaled = scale_pixels(jnp.asarray(floats, jnp.float32))
    assert scaled.dtype == jnp.float32
    np.testing.assert_array_equal(scaled, floats.astype(np.float32))


def test_keys_of_several_seeds_are_each_seeds_own_keys():
    stacked = RunKeys.for_seeds([3, 4, 9])
    shuffle, dropout = stacked.epoch(2)
    for i, seed in enumerate((3, 4, 9)):
        one = RunKeys.from_seed(seed)
        assert jax.random.key_data(stacked.init[i]).tolist() == \
            jax.random.key_data(one.init).tolist()
        for got, want in zip((shuffle[i], dropout[i]), one.epoch(2), strict=True):
            assert jax.random.key_data(got).tolist() == jax.random.key_data(want).tolist()
    model, optimizer = tiny_model(), optax.sgd(0.1)
    states = init_train_states(fixed(model, optimizer), stacked)
    single = init_train_state(model, optimizer, RunKeys.from_seed(4).init)
    np.testing.assert_array_equal(states.params[2]["kernel"][1], single.params[2]["kernel"])

