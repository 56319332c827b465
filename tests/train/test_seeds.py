"""Seeds side by side (``train.seeds``): every layout gives each seed the numbers of one vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bnlab.train.engine import RunKeys, fixed, init_train_states, make_train_epoch
from bnlab.train.seeds import over_seeds, seeds_to_run, spread
from tests.synthetic import tiny_model, tiny_splits

IN_AXES = (0, None, None, None, None, 0, 0)  # state, scalars, active, images, labels, keys


def epoch_and_args(seeds: int):
    splits = tiny_splits()
    model, optimizer = tiny_model(), optax.sgd(0.05)
    epoch = make_train_epoch(fixed(model, optimizer), len(splits.y_train), 32)
    keys = RunKeys.for_seeds(range(seeds))
    state = init_train_states(fixed(model, optimizer), keys)
    shuffle, dropout = keys.epoch(0)
    return epoch, (state, {}, True, jnp.asarray(splits.x_train), jnp.asarray(splits.y_train),
                   shuffle, dropout)


def assert_same_per_seed(got, want) -> None:
    # 1e-5: float32 products of different batch layouts may round differently.
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_seed_groups_on_one_device_give_each_seed_the_numbers_of_one_vmap():
    # Five seeds as lax.map over groups of 2 (2 + 2 + a remainder of 1) on one device.
    epoch, args = epoch_and_args(5)
    grouped = jax.jit(over_seeds(epoch, IN_AXES, 5, group=2, devices=jax.devices()[:1]))(*args)
    vmapped = jax.jit(jax.vmap(epoch, in_axes=IN_AXES))(*args)
    assert grouped[1].loss.shape == (5,)
    assert_same_per_seed(grouped, vmapped)
    assert len(set(np.asarray(grouped[1].loss).round(6))) == 5  # five different seeds


@pytest.mark.parametrize("seeds", [2, 5])
def test_seeds_spread_over_two_devices_give_each_seed_the_numbers_of_one_vmap(seeds):
    # 5 seeds on 2 devices: 3 each, the last seed repeated once as padding and dropped.
    devices = jax.devices()[:2]
    if len(devices) < 2:
        pytest.skip("needs two JAX devices (tests/conftest.py asks for two CPU devices)")
    epoch, args = epoch_and_args(seeds)
    program = jax.jit(over_seeds(epoch, IN_AXES, seeds, devices=devices))
    spread = program(*args)
    vmapped = jax.jit(jax.vmap(epoch, in_axes=IN_AXES))(*args)
    assert spread[1].loss.shape == (seeds,)
    assert_same_per_seed(spread, vmapped)
    if seeds == 2:  # one seed on each device (5 seeds come back gathered, unpadded)
        kernel = spread[0].params[2]["kernel"]
        assert {s.device for s in kernel.addressable_shards} == set(devices)
        assert [s.data.shape[0] for s in kernel.addressable_shards] == [1, 1]
    again = program(spread[0], *args[1:])  # a spread state feeds the next epoch as it is
    assert np.all(np.isfinite(np.asarray(again[1].loss)))


def test_one_seed_is_a_plain_program_without_a_seed_mapping():
    epoch, args = epoch_and_args(1)
    jaxpr = str(jax.make_jaxpr(over_seeds(epoch, IN_AXES, 1))(*args))
    assert "shard_map" not in jaxpr
    single = jax.jit(epoch)(*[a if axis is None else jax.tree_util.tree_map(lambda x: x[0], a)
                              for a, axis in zip(args, IN_AXES, strict=True)])
    assert_same_per_seed(jax.jit(over_seeds(epoch, IN_AXES, 1))(*args),
                         jax.tree_util.tree_map(lambda x: x[None], single))


@pytest.mark.parametrize(("seeds", "devices", "expected"), [
    (1, 2, (1, 1)), (2, 2, (2, 1)), (5, 2, (2, 3)), (10, 2, (2, 5)), (5, 16, (5, 1)),
    (10, 8, (5, 2)), (5, 4, (3, 2)),
])
def test_seeds_spread_with_the_least_depth_then_the_least_padding(seeds, devices, expected):
    used, per_device = spread(seeds, devices)
    assert (used, per_device) == expected
    assert used <= devices and used * per_device >= seeds > (used - 1) * per_device


@pytest.mark.parametrize(("seeds", "devices", "expected"), [
    ((42, 43, 44, 45, 46), 2, (42, 43, 44, 45, 46, 46)), ((3, 1, 2), 2, (3, 1, 2, 2)),
    ((1, 2), 2, (1, 2)), ((7,), 2, (7,)), ((1, 2, 3), 8, (1, 2, 3)),
])
def test_seeds_to_run_repeat_the_last_seed_until_every_used_device_is_full(seeds, devices,
                                                                           expected):
    assert seeds_to_run(seeds, [jax.devices()[0]] * devices) == expected


def test_seeds_to_run_fill_the_devices_so_that_no_program_pads_again():
    for seeds in range(1, 13):
        for devices in range(1, 10):
            run = seeds_to_run(tuple(range(seeds)), [jax.devices()[0]] * devices)
            used, per_device = spread(len(run), devices)
            assert used * per_device == len(run)
            assert run[:seeds] == tuple(range(seeds)) and set(run[seeds:]) <= {seeds - 1}
