"""The compiled epoch: equal to a Python loop of the same step, Keras's ragged last batch,
reproducible from the seed, and N seeds in one program equal to N single runs."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from safetensors import safe_open

from bnlab.errors import ConfigError
from bnlab.experiments.config import ExperimentConfig, VariantConfig
from bnlab.experiments.runner import VariantTrainer, train_variant
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.layers import Dense, Flatten
from bnlab.nn.model import Sequential
from bnlab.train.engine import (
    RunKeys,
    check_batching,
    init_train_state,
    make_evaluate,
    make_train_epoch,
    scale_pixels,
    steps_per_epoch,
)
from tests.synthetic import tiny_splits

TINY_LAYERS = (
    {"type": "flatten"},
    {"type": "batch_norm"},
    {"type": "dense", "units": 8, "activation": "relu"},
    {"type": "batch_norm"},
    {"type": "dense", "units": 3, "activation": "softmax"},
)


def tiny_model() -> Sequential:
    return Sequential((Flatten(), BatchNorm(), Dense(8, activation="relu"), BatchNorm(),
                       Dense(3, activation="softmax")), input_shape=(4, 4), name="tiny")


def tiny_config(**overrides) -> ExperimentConfig:
    config = ExperimentConfig(name="tiny", variants=(VariantConfig("tiny", layers=TINY_LAYERS),),
                              epochs=3, batch_size=32)
    return dataclasses.replace(config, **overrides)


def test_steps_per_epoch_matches_keras_1719_for_55000_rows_at_batch_32():
    assert steps_per_epoch(55_000, 32) == 1719
    assert 55_000 - 1718 * 32 == 24  # the ragged last batch


def test_scan_epoch_equals_python_loop_of_the_same_step_including_ragged_batch():
    # 70 rows at batch 32 → batches of 32, 32 and 6 rows. The Python loop slices the
    # ragged batch to its 6 real rows (Keras's behaviour, no mask at all); the compiled
    # epoch pads it and masks. float32 reassociation bounds the difference: 1e-5.
    splits = tiny_splits()
    model, optimizer = tiny_model(), optax.sgd(0.1)
    keys = RunKeys.from_seed(3)
    state = init_train_state(model, optimizer, keys.init)
    shuffle_key, dropout_key = keys.epoch(0)
    epoch = jax.jit(make_train_epoch(model, optimizer, 70, 32))
    compiled_state, metrics = epoch(state, splits.x_train, splits.y_train, shuffle_key,
                                    dropout_key)

    order = np.asarray(jax.random.permutation(shuffle_key, 70))
    params, bn_state, opt_state = state
    losses, weights, correct = [], [], 0
    for start in range(0, 70, 32):
        rows = order[start:start + 32]
        x = scale_pixels(jnp.asarray(splits.x_train[rows]))
        y = jnp.asarray(splits.y_train[rows])

        def loss_fn(p, x=x, y=y, bn_state=bn_state):
            logits, new_state = model.apply(p, bn_state, x, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (
                new_state, logits)

        (loss, (bn_state, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        losses.append(float(loss))
        weights.append(len(rows))
        correct += int(jnp.sum(jnp.argmax(logits, -1) == y))

    np.testing.assert_allclose(metrics.step_loss, losses, rtol=1e-5, atol=1e-6)
    assert float(metrics.loss) == pytest.approx(np.average(losses, weights=weights), rel=1e-5)
    assert float(metrics.accuracy) == pytest.approx(correct / 70, abs=1e-7)
    for got, want in zip(jax.tree_util.tree_leaves((compiled_state.params,
                                                    compiled_state.bn_state)),
                         jax.tree_util.tree_leaves((params, bn_state)), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_evaluate_is_mean_over_rows_in_inference_mode_whatever_the_chunking():
    splits = tiny_splits(n_val=37)
    model = tiny_model()
    params, bn_state = model.init(jax.random.key(0))
    logits, _ = model.apply(params, bn_state, scale_pixels(jnp.asarray(splits.x_val)),
                            train=False)
    want_loss = optax.softmax_cross_entropy_with_integer_labels(logits, splits.y_val).mean()
    want_acc = float(np.mean(np.argmax(logits, -1) == splits.y_val))
    for chunk in (5, 37, 100):
        loss, acc = make_evaluate(model, chunk_size=chunk)(params, bn_state, splits.x_val,
                                                           splits.y_val)
        assert float(loss) == pytest.approx(float(want_loss), rel=1e-6)
        assert float(acc) == pytest.approx(want_acc, abs=1e-7)


def test_same_seed_gives_identical_histories_and_other_seed_differs():
    splits = tiny_splits()
    variant = VariantConfig("tiny", layers=TINY_LAYERS)
    first = train_variant(variant, tiny_config(seed=5), splits)
    again = train_variant(variant, tiny_config(seed=5), splits)
    other = train_variant(variant, tiny_config(seed=6), splits)
    np.testing.assert_array_equal(first.history["loss"], again.history["loss"])
    assert not np.array_equal(first.history["loss"], other.history["loss"])


def test_n_seed_program_equals_n_single_runs_per_seed():
    # One program over seeds 7, 8, 9 (spread over the tests' two CPU devices, 2 + 2 with
    # one padding seed) against three separate single-seed programs.
    # Batched matrix products may sum in another order: 1e-5 tolerance (float32).
    splits = tiny_splits()
    variant = VariantConfig("tiny", layers=TINY_LAYERS)
    batched = train_variant(variant, tiny_config(seed=7, seeds=3), splits)
    for i, seed in enumerate((7, 8, 9)):
        single = train_variant(variant, tiny_config(seed=seed, seeds=1), splits)
        for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(batched.history[metric][i], single.history[metric][0],
                                       rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(batched.test_accuracy[i], single.test_accuracy[0],
                                   atol=1e-5)


def test_seeds_in_one_program_have_their_own_init_and_shuffle():
    trainer = VariantTrainer(VariantConfig("tiny", layers=TINY_LAYERS), tiny_config(seeds=2),
                             tiny_splits(), seeds=(1, 2))
    state = trainer.init_state()
    kernel = state.params[2]["kernel"]  # (seeds, 16, 8)
    assert kernel.shape == (2, 16, 8)
    assert not np.allclose(kernel[0], kernel[1])
    shuffle, _ = trainer.epoch_keys(0)
    assert not np.array_equal(jax.random.permutation(shuffle[0], 70),
                              jax.random.permutation(shuffle[1], 70))


def test_trainer_pads_the_seeds_once_and_reports_only_the_real_ones():
    if len(jax.devices()) < 2:
        pytest.skip("needs two JAX devices (tests/conftest.py asks for two CPU devices)")
    trainer = VariantTrainer(VariantConfig("tiny", layers=TINY_LAYERS), tiny_config(seeds=3),
                             tiny_splits(), seeds=(1, 2, 3))
    state = trainer.init_state()  # 3 seeds on 2 devices run as 2 + 2: seed 3 twice
    kernel = np.asarray(state.params[2]["kernel"])
    assert kernel.shape[0] == 4 and np.array_equal(kernel[3], kernel[2])
    trainer.compile(state)
    state, loss, accuracy = trainer.train_epoch(state, 0)
    assert loss.shape == accuracy.shape == (3,)
    val_loss, _ = trainer.evaluate(state, *trainer.placed_for_evaluation(
        tiny_splits().x_val, tiny_splits().y_val))
    assert val_loss.shape == (3,)
    saved = trainer.saved(state)  # what a checkpoint holds: the three real seeds
    assert saved.params[2]["kernel"].shape[0] == 3
    restored = trainer.restored(saved)  # the padding seed trained exactly as seed 3
    for got, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(state),
                         strict=True):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-6, atol=1e-7)


def test_a_resumed_padded_run_saves_the_real_seeds_and_equals_a_straight_run(tmp_path):
    # 3 seeds on the tests' two CPU devices: the trainer's state holds 4 (seed 5 twice).
    splits, variant = tiny_splits(), VariantConfig("tiny", layers=TINY_LAYERS)
    stem = tmp_path / "checkpoint"
    train_variant(variant, tiny_config(seed=3, seeds=3, epochs=2), splits, checkpoint=stem)
    with safe_open(str(stem.with_suffix(".safetensors")), framework="numpy") as saved:
        assert {saved.get_tensor(name).shape[0] for name in saved.keys()} == {3}  # noqa: SIM118
    resumed = train_variant(variant, tiny_config(seed=3, seeds=3, epochs=3), splits,
                            checkpoint=stem, resume=True)
    straight = train_variant(variant, tiny_config(seed=3, seeds=3, epochs=3), splits)
    for metric, values in straight.history.items():
        np.testing.assert_allclose(resumed.history[metric], values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(resumed.test_accuracy, straight.test_accuracy, rtol=0, atol=1e-6)


def test_one_row_batch_with_batchnorm_is_rejected_before_training():
    with pytest.raises(ConfigError, match="one row"):
        check_batching(65, 32, tiny_model())
    check_batching(66, 32, tiny_model())  # 2 rows left: fine


def test_diverging_run_raises_one_line_error_naming_the_fix():
    from bnlab.errors import DivergenceError
    from bnlab.experiments.config import OptimizerConfig

    plain = ({"type": "flatten"}, {"type": "dense", "units": 3, "activation": "softmax"})
    config = tiny_config(variants=(VariantConfig("plain", layers=plain),),
                         optimizer=OptimizerConfig("sgd", 1e38))
    with pytest.raises(DivergenceError, match="learning_rate") as err:
        train_variant(config.variants[0], config, tiny_splits())
    assert "\n" not in str(err.value)
