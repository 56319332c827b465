"""Sweep members in one program: scalar hyperparameters as data, freezing, staggered starts.

Each member of a ``SeedBatchTrainer`` with ``scalars`` and ``bind`` must get the numbers it
would get from a trainer of its own built with those values as constants; a member that
diverges or is inactive must keep its state; a member whose record is ahead must wait.
Tolerances: 1e-5 relative for float32 products whose batch layout differs (vmapped vs
plain), as in ``test_seeds.py``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bnlab.errors import ConfigError
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.layers import Dense, Dropout, Flatten
from bnlab.nn.model import Sequential
from bnlab.train.batches import scale_pixels
from bnlab.train.engine import TrainState
from bnlab.train.loop import train_epochs
from bnlab.train.trainer import SeedBatchTrainer
from tests.synthetic import tiny_splits

MODEL = Sequential((Flatten(), BatchNorm(), Dense(8, activation="relu"), Dropout(0.2),
                    BatchNorm(), Dense(3, activation="softmax")), input_shape=(4, 4))
SCALARS = {  # member: (learning rate, SGD momentum, second BN's momentum, its ε, dropout)
    "lr": [0.1, 0.02, 0.1, 0.3],
    "momentum": [0.0, 0.9, 0.5, 0.0],
    "bn_momentum": [0.99, 0.9, 0.5, 0.99],
    "bn_epsilon": [1e-3, 1e-5, 1e-1, 1e-3],
    "rate": [0.2, 0.0, 0.5, 0.1],
}
SEEDS = (1, 2, 1, 3)


def built(values) -> tuple[Sequential, optax.GradientTransformation]:
    """The model and optimizer of one member, from numbers or traced scalars alike."""
    layers = list(MODEL.layers)
    layers[3] = Dropout(values["rate"])
    layers[4] = BatchNorm(momentum=values["bn_momentum"], epsilon=values["bn_epsilon"])
    return (dataclasses.replace(MODEL, layers=tuple(layers)),
            optax.sgd(values["lr"], momentum=values["momentum"]))


def trainer_of(seeds, scalars=None, bind=None, model=MODEL, optimizer=None, x=None):
    splits = tiny_splits()
    trainer = SeedBatchTrainer(model, optimizer or optax.sgd(0.1), batch_size=8,
                               x_train=splits.x_train if x is None else x,
                               y_train=splits.y_train, seeds=seeds,
                               evaluation={"val": (splits.x_val, splits.y_val)},
                               scalars=scalars, bind=bind)
    state = trainer.init_state()
    trainer.compile(state)
    return trainer, state


def member(state: TrainState, i: int) -> list[np.ndarray]:
    return [np.asarray(leaf)[i] for leaf in jax.tree_util.tree_leaves(state)]


def test_members_with_scalars_as_data_equal_their_own_constant_programs():
    traces = []

    def bind(values):
        traces.append(1)
        return built(values)

    together, state = trainer_of(SEEDS, SCALARS, bind)
    records = list(train_epochs(together, state, epochs=2))
    traced = len(traces)
    for i, seed in enumerate(SEEDS):
        model, optimizer = built({k: v[i] for k, v in SCALARS.items()})
        alone, alone_state = trainer_of((seed,), model=model, optimizer=optimizer)
        solo = list(train_epochs(alone, alone_state, epochs=2))
        for record, single in zip(records, solo, strict=True):
            for metric, values in record.metrics.items():
                np.testing.assert_allclose(values[i], single.metrics[metric][0], rtol=1e-5)
        for got, want in zip(member(together.saved(records[-1].state), i),
                             member(alone.saved(solo[-1].state), 0), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The values are data: training more epochs traces nothing again.
    assert len(traces) == traced


def test_members_of_one_seed_share_the_initialization_and_the_data_order():
    trainer, state = trainer_of(SEEDS, SCALARS, built)
    for got, want in zip(member(state, 0), member(state, 2), strict=True):
        np.testing.assert_array_equal(got, want)  # seed 1 twice, other scalars
    shuffle, _ = trainer.epoch_keys(3)
    assert np.array_equal(jax.random.key_data(shuffle[0]), jax.random.key_data(shuffle[2]))
    assert not np.array_equal(jax.random.key_data(shuffle[0]), jax.random.key_data(shuffle[1]))


def test_a_diverged_member_stops_at_the_step_before_its_loss_went_non_finite():
    """Row 17 holds a NaN pixel: each member's loss is NaN from the step whose batch holds
    it, and its state must be the one after the steps before (a Python loop of the same
    steps, by hand), finite, while the other member trains the whole epoch."""
    splits = tiny_splits()
    x = splits.x_train.astype(np.float32) / 255
    x[17, 2, 1] = np.nan
    model = Sequential((Flatten(), Dense(5, activation="relu"), Dense(3, activation="softmax")),
                       input_shape=(4, 4))
    optimizer = optax.sgd(0.1)
    trainer, state = trainer_of((1, 2), model=model, optimizer=optimizer, x=x)
    initial = jax.tree_util.tree_map(lambda a: np.asarray(a).copy(), trainer.saved(state))
    (record, *_) = train_epochs(trainer, state, epochs=1)
    final = trainer.saved(record.state)
    shuffle, _ = trainer.epoch_keys(0)
    for i in range(2):
        order = np.asarray(jax.random.permutation(shuffle[i], 70))
        step = int(np.flatnonzero(order == 17)[0]) // 8  # 0-based step holding row 17
        assert record.diverged[i] == step + 1
        params = jax.tree_util.tree_map(lambda a, i=i: jnp.asarray(a[i]), initial.params)
        opt_state = optimizer.init(params)
        for k in range(step):  # the steps before: plain SGD on the same rows
            rows = order[k * 8:(k + 1) * 8]

            def loss_fn(p, rows=rows):
                logits, _ = model.apply(p, initial.bn_state, scale_pixels(jnp.asarray(x[rows])),
                                        train=True)
                return optax.softmax_cross_entropy_with_integer_labels(
                    logits, jnp.asarray(splits.y_train[rows])).mean()

            updates, opt_state = optimizer.update(jax.grad(loss_fn)(params), opt_state, params)
            params = optax.apply_updates(params, updates)
        for got, want in zip(jax.tree_util.tree_leaves(final.params),
                             jax.tree_util.tree_leaves(params), strict=True):
            assert np.isfinite(got[i]).all()
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)


def test_inactive_members_keep_their_state_and_the_others_train_as_alone():
    trainer, state = trainer_of(SEEDS, SCALARS, built)
    before = jax.tree_util.tree_map(lambda a: np.asarray(a).copy(), trainer.saved(state))
    all_on, _ = trainer_of(SEEDS, SCALARS, built)
    state_all = all_on.init_state()
    after_all, *_ = all_on.train_epoch(state_all, 0)
    after, *_ = trainer.train_epoch(state, 0, active=[True, False, True, False])
    after, after_all = trainer.saved(after), all_on.saved(after_all)
    for i in (1, 3):
        for got, want in zip(member(after, i), member(before, i), strict=True):
            np.testing.assert_array_equal(got, want)
    for i in (0, 2):
        for got, want in zip(member(after, i), member(after_all, i), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_member_ahead_waits_until_the_others_reach_its_epoch():
    """Member 1 resumes from its epoch-1 checkpoint, member 0 from epoch 0 (killed between
    their checkpoints): after two epochs both equal an uninterrupted run."""
    straight, state = trainer_of((1, 2))
    (*_, last) = train_epochs(straight, state, epochs=2)
    want = straight.saved(last.state)
    trainer, state = trainer_of((1, 2))
    (first,) = train_epochs(trainer, state, epochs=1)
    ahead = trainer.saved(first.state)
    mixed = jax.tree_util.tree_map(lambda fresh, later: np.stack([fresh[0], later[1]]),
                                   trainer.saved(trainer.init_state()), ahead)
    records = list(train_epochs(trainer, trainer.restored(mixed), epochs=2, starts=[0, 1]))
    assert [list(r.trained) for r in records] == [[True, False], [True, True]]
    assert np.isnan(records[0].metrics["loss"][1]) and np.isfinite(records[1].metrics["loss"]).all()
    got = trainer.saved(records[-1].state)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scalars, bind, message", [
    ({"lr": [0.1]}, built, "give one value per member"),
    ({"lr": [0.1, 0.2]}, None, "scalars need bind"),
])
def test_member_scalars_are_checked(scalars, bind, message):
    splits = tiny_splits()
    with pytest.raises(ConfigError, match=message):
        SeedBatchTrainer(MODEL, optax.sgd(0.1), batch_size=8, x_train=splits.x_train,
                         y_train=splits.y_train, seeds=(1, 2), scalars=scalars, bind=bind)
