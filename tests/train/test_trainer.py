"""The seed-batch trainer: built objects in; every seed trains as if alone; padding seeds
never show; data that cannot fit the model is one clear line."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from bnlab.errors import ConfigError
from bnlab.train.history import History
from bnlab.train.loop import train_epochs
from bnlab.train.trainer import SeedBatchTrainer
from tests.synthetic import tiny_model, tiny_splits


def trainer_for(seeds, **kwargs) -> SeedBatchTrainer:
    splits = tiny_splits()
    evaluation = {"val": (splits.x_val, splits.y_val), "test": (splits.x_test, splits.y_test)}
    return SeedBatchTrainer(tiny_model(), optax.sgd(0.1), batch_size=32, x_train=splits.x_train,
                            y_train=splits.y_train, seeds=seeds, evaluation=evaluation,
                            **kwargs)


def trained(seeds, epochs: int = 3) -> tuple[History, SeedBatchTrainer, object]:
    trainer = trainer_for(seeds)
    state = trainer.init_state()
    trainer.compile(state)
    history = History(trainer.seeds)
    for record in train_epochs(trainer, state, epochs=epochs):
        history.append(record)
        state = record.state
    return history, trainer, state


@pytest.mark.slow
def test_same_seed_gives_identical_histories_and_other_seed_differs():
    first, again, other = trained((5,))[0], trained((5,))[0], trained((6,))[0]
    np.testing.assert_array_equal(first.per_seed["loss"], again.per_seed["loss"])
    assert not np.array_equal(first.per_seed["loss"], other.per_seed["loss"])


@pytest.mark.slow
def test_n_seed_program_equals_n_single_runs_per_seed():
    # One program over seeds 7, 8, 9 (spread over the tests' two CPU devices, 2 + 2 with
    # one padding seed) against three separate single-seed programs.
    # Batched matrix products may sum in another order: 1e-5 tolerance (float32).
    batched, trainer, state = trained((7, 8, 9))
    test_accuracy = trainer.evaluate(state, "test")[1]
    for i, seed in enumerate((7, 8, 9)):
        single, single_trainer, single_state = trained((seed,))
        for metric, values in single.per_seed.items():
            np.testing.assert_allclose(batched.per_seed[metric][i], values[0], rtol=1e-5,
                                       atol=1e-5)
        np.testing.assert_allclose(test_accuracy[i],
                                   single_trainer.evaluate(single_state, "test")[1][0],
                                   atol=1e-5)


def test_seeds_in_one_program_have_their_own_init_and_shuffle():
    trainer = trainer_for((1, 2))
    state = trainer.init_state()
    kernel = state.params[2]["kernel"]  # (seeds, 16, 8)
    assert kernel.shape == (2, 16, 8)
    assert not np.allclose(kernel[0], kernel[1])
    shuffle, _ = trainer.epoch_keys(0)
    assert not np.array_equal(jax.random.permutation(shuffle[0], 70),
                              jax.random.permutation(shuffle[1], 70))


@pytest.mark.slow
def test_trainer_pads_the_seeds_once_and_reports_only_the_real_ones():
    if len(jax.devices()) < 2:
        pytest.skip("needs two JAX devices (tests/conftest.py asks for two CPU devices)")
    trainer = trainer_for((1, 2, 3))
    state = trainer.init_state()  # 3 seeds on 2 devices run as 2 + 2: seed 3 twice
    kernel = np.asarray(state.params[2]["kernel"])
    assert kernel.shape[0] == 4 and np.array_equal(kernel[3], kernel[2])
    trainer.compile(state)
    state, loss, accuracy, diverged, records = trainer.train_epoch(state, 0)
    assert loss.shape == accuracy.shape == diverged.shape == (3,) and (diverged == -1).all()
    assert records == {}  # no probe plan, nothing recorded
    val_loss, _ = trainer.evaluate(state, "val")
    assert val_loss.shape == (3,)
    saved = trainer.saved(state)  # what a checkpoint holds: the three real seeds
    assert saved.params[2]["kernel"].shape[0] == 3
    restored = trainer.restored(saved)  # the padding seed trained exactly as seed 3
    for got, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(state),
                         strict=True):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_evaluation_of_other_arrays_equals_the_placed_set():
    _, trainer, state = trained((1, 2), epochs=1)
    splits = tiny_splits()
    placed = trainer.evaluate(state, "val")
    given = trainer.evaluate_arrays(state, splits.x_val, splits.y_val)
    for a, b in zip(placed, given, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(ConfigError, match="no evaluation data named 'train'; the trainer has "
                                          "val, test"):
        trainer.evaluate(state, "train")


def test_compiler_options_are_a_parameter_and_reach_xla():
    trainer = trainer_for((1,), compiler_options={"xla_cpu_use_thunk_runtime": "bogus"})
    with pytest.raises(Exception, match="xla_cpu_use_thunk_runtime"):
        trainer.compile(trainer.init_state())
    assert trainer_for((1,), compiler_options={}).compiler_options == {}


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: {"x_train": s.x_train.reshape(70, 16)}, r"images of shape \(16,\) do not fit "
                                                       r"the model's input shape \(4, 4\)"),
    (lambda s: {"y_train": s.y_train[:5]}, "70 images but labels of shape"),
    (lambda s: {"y_train": s.y_train.astype(np.float32)}, "labels must be integers"),
    (lambda s: {"x_train": s.x_train.astype(np.int64)}, r"images must be uint8 pixels \(scaled "
                                                        r"by 1/255\) or floats .*got int64"),
    (lambda s: {"y_train": s.y_train + 3}, r"labels must be in 0\.\.2 \(the model has 3 "
                                           r"outputs\), got 3\.\.5"),
])
def test_data_that_cannot_fit_the_model_is_one_line(change, message):
    splits = tiny_splits()
    data = {"x_train": splits.x_train, "y_train": splits.y_train, **change(splits)}
    with pytest.raises(ConfigError, match=message):
        SeedBatchTrainer(tiny_model(), optax.sgd(0.1), batch_size=32, seeds=(1,), **data)
