"""Batch Renormalization and ghost BatchNorm (``nn.norms``) against independent NumPy
transcriptions of the papers (``reference_norms``), their closed forms and BatchNorm.

Tolerance 1e-5: float32 against a float64 reference, as in ``test_batchnorm.py``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnlab.config.layers import build_layer
from bnlab.errors import ConfigError
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.norms import BatchRenorm, GhostBatchNorm
from tests.nn import reference_norms as ref

TOL = 1e-5
FEATURES = 6


def batches(seed: int, k: int, m: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(1.0, 0.5, FEATURES) + rng.uniform(0.5, 3.0, FEATURES)
             * rng.standard_normal((m, FEATURES))).astype(np.float32) for _ in range(k)]


def affine(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"gamma": jnp.asarray(rng.uniform(0.5, 2.0, FEATURES), jnp.float32),
            "beta": jnp.asarray(rng.normal(0.0, 1.0, FEATURES), jnp.float32)}


def close(actual, expected, tol=TOL):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------
# Batch Renormalization


@pytest.mark.parametrize("schedule", ["paper", "fixed"])
def test_renorm_matches_the_numpy_transcription_over_steps_of_its_schedule(schedule):
    # A short schedule (warm-up 2 steps, r_max reached at 6, d_max at 4) so that 8 steps
    # cover the warm-up, the relaxation and the final limits; tight limits so r, d clip.
    renorm = BatchRenorm(momentum=0.5, rmax=1.5, dmax=0.5, schedule=schedule, warmup_steps=2,
                         rmax_steps=6, dmax_steps=4)
    params = affine(1)
    _, state, _ = renorm.init(None, (FEATURES,))
    step = jax.jit(functools.partial(renorm.apply, train=True))
    gamma, beta = (np.asarray(params[n], np.float64) for n in ("gamma", "beta"))
    moving_mean, moving_var = np.zeros(FEATURES), np.ones(FEATURES)
    clipped = 0
    for k, x in enumerate(batches(2, 8, 16)):
        if schedule == "paper":
            r_max, d_max = ref.renorm_limits(k, 1.5, 0.5, 2, 6, 4)
        else:
            r_max, d_max = 1.5, 0.5
        y_ref, r, d, mu, var = ref.renorm_train(x, gamma, beta, moving_mean, moving_var,
                                                renorm.epsilon, r_max, d_max)
        clipped += int(np.any(np.isclose(np.abs(d), d_max)) or np.any(r == r_max))
        y, state = step(params, state, jnp.asarray(x))
        close(y, y_ref)
        moving_mean = 0.5 * moving_mean + 0.5 * mu
        moving_var = 0.5 * moving_var + 0.5 * var
        close(state["moving_mean"], moving_mean)
        close(state["moving_variance"], moving_var)
        assert int(state["steps"]) == k + 1
    assert clipped >= 3  # the limits were active, not just r = 1, d = 0 by luck


def test_renorm_limits_follow_the_papers_default_schedule():
    renorm = BatchRenorm()
    for step, want in [(0, (1.0, 0.0)), (5000, (1.0, 0.0)), (15000, (1.0 + 2 * 10 / 35, 2.5)),
                       (25000, (1.0 + 2 * 20 / 35, 5.0)), (40000, (3.0, 5.0)),
                       (90000, (3.0, 5.0))]:
        got = renorm.limits(jnp.int32(step))
        np.testing.assert_allclose([float(v) for v in got], want, rtol=1e-6)


def test_renorm_with_r_max_1_and_d_max_0_is_batchnorm():
    renorm = BatchRenorm(schedule="fixed", rmax=1.0, dmax=0.0)
    params, (x,) = affine(3), batches(4, 1, 16)
    _, state, _ = renorm.init(None, (FEATURES,))
    state = {**state, "moving_mean": jnp.full(FEATURES, 5.0)}  # far away: d would be large
    y, new = renorm.apply(params, state, jnp.asarray(x), train=True)
    plain = {k: v for k, v in state.items() if k != "steps"}
    want, want_state = BatchNorm().apply(params, plain, jnp.asarray(x), train=True)
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new["moving_mean"], want_state["moving_mean"], rtol=1e-6)


def test_renorm_gradient_treats_r_and_d_as_constants(float64):
    # y = γ·((x − μ_B)/σ_B · r + d) + β with r, d held: the input gradient is r times
    # BatchNorm's (a finite-difference check would wrongly differentiate r and d).
    renorm = BatchRenorm(schedule="fixed", rmax=3.0, dmax=5.0, epsilon=1e-3)
    x = jnp.asarray(batches(5, 1, 16)[0], jnp.float64)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), affine(6))
    _, state, _ = renorm.init(None, (FEATURES,))
    state = {**state, "moving_variance": jnp.full(FEATURES, 0.25, jnp.float64),
             "moving_mean": jnp.full(FEATURES, 0.5, jnp.float64)}
    weights = jnp.asarray(np.random.default_rng(7).normal(size=(16, FEATURES)))

    def loss(layer, layer_state, x):
        return jnp.sum(weights * layer.apply(params, layer_state, x, train=True)[0])

    var = np.asarray(x).var(0)
    r = np.clip(np.sqrt(var + 1e-3) / np.sqrt(0.25 + 1e-3), 1 / 3, 3)
    plain_state = {k: v for k, v in state.items() if k != "steps"}
    got = jax.grad(functools.partial(loss, renorm, state))(x)
    want = jax.grad(functools.partial(loss, BatchNorm(epsilon=1e-3), plain_state))(x) * r[None, :]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert not np.allclose(r, 1.0)  # r really scales the gradient here


def test_renorm_inference_is_batchnorms():
    renorm, params = BatchRenorm(), affine(8)
    _, state, _ = renorm.init(None, (FEATURES,))
    state = {**state, "moving_mean": jnp.full(FEATURES, 0.5), "moving_variance":
             jnp.full(FEATURES, 4.0)}
    (x,) = batches(9, 1, 8)
    y, same = renorm.apply(params, state, jnp.asarray(x), train=False)
    want, _ = BatchNorm().apply(params, state, jnp.asarray(x), train=False)
    np.testing.assert_array_equal(y, want)
    assert same is state


@pytest.mark.parametrize("options, message", [
    ({"rmax": 0.5}, "rmax ≥ 1"), ({"dmax": -1.0}, "dmax ≥ 0"),
    ({"schedule": "linear"}, "schedule must be"),
    ({"warmup_steps": 50000}, "warmup_steps ≤ rmax_steps"),
    ({"warmup_steps": 1.5}, "whole numbers"),
])
def test_renorm_rejects_impossible_options(options, message):
    with pytest.raises(ConfigError, match=message):
        BatchRenorm(**options)


# ---------------------------------------------------------------------------------------
# Ghost BatchNorm


@pytest.mark.parametrize("stored", ["biased", "unbiased"])
def test_ghost_batchnorm_normalizes_each_ghost_alone_and_averages_their_statistics(stored):
    ghost = GhostBatchNorm(virtual_batch_size=8, momentum=0.9, stored_variance=stored)
    params, (x,) = affine(10), batches(11, 1, 32)
    _, state, _ = ghost.init(None, (FEATURES,))
    y, new = ghost.apply(params, state, jnp.asarray(x), train=True)
    gamma, beta = (np.asarray(params[n], np.float64) for n in ("gamma", "beta"))
    y_ref, mean, var = ref.ghost_train(x, gamma, beta, ghost.epsilon, 8)
    close(y, y_ref)
    var = var * 8 / 7 if stored == "unbiased" else var
    close(new["moving_mean"], 0.1 * mean)
    close(new["moving_variance"], 0.9 + 0.1 * var)


def test_ghost_batchnorm_of_a_batch_no_larger_than_a_ghost_is_batchnorm():
    params, (x,) = affine(12), batches(13, 1, 8)
    ghost, plain = GhostBatchNorm(virtual_batch_size=16), BatchNorm()
    _, state, _ = plain.init(None, (FEATURES,))
    for train in (True, False):
        got = ghost.apply(params, state, jnp.asarray(x), train=train)
        want = plain.apply(params, state, jnp.asarray(x), train=train)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want),
                        strict=True):
            np.testing.assert_array_equal(a, b)


def test_ghost_inference_of_a_row_does_not_depend_on_its_batch():
    ghost, params, (x,) = GhostBatchNorm(virtual_batch_size=4), affine(14), batches(15, 1, 12)
    _, state, _ = ghost.init(None, (FEATURES,))
    state = {**state, "moving_mean": jnp.full(FEATURES, 0.5)}
    whole, _ = ghost.apply(params, state, jnp.asarray(x), train=False)
    alone = np.concatenate([ghost.apply(params, state, jnp.asarray(x[i:i + 1]), train=False)[0]
                            for i in range(12)])
    np.testing.assert_array_equal(whole, alone)


def test_ghost_masked_padding_counts_in_no_ghost():
    # 12 real rows padded to 16 in ghosts of 4: the last ghost is padding only and adds
    # nothing to the moving statistics; the others are normalized as without padding.
    ghost, params, (x,) = GhostBatchNorm(virtual_batch_size=4, momentum=0.0), affine(16), \
        batches(17, 1, 12)
    _, state, _ = ghost.init(None, (FEATURES,))
    padded = jnp.concatenate([jnp.asarray(x), jnp.full((4, FEATURES), 1e6, jnp.float32)])
    mask = jnp.arange(16) < 12
    y, new = ghost.apply(params, state, padded, train=True, mask=mask)
    want, want_state = ghost.apply(params, state, jnp.asarray(x), train=True)
    np.testing.assert_allclose(y[:12], want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new["moving_variance"], want_state["moving_variance"], rtol=1e-6)


def test_ghost_rejects_batches_that_do_not_split_and_ghosts_of_one_row():
    ghost, params, (x,) = GhostBatchNorm(virtual_batch_size=8), affine(18), batches(19, 1, 12)
    _, state, _ = ghost.init(None, (FEATURES,))
    with pytest.raises(ConfigError, match="multiple of virtual_batch_size"):
        ghost.apply(params, state, jnp.asarray(x), train=True)
    with pytest.raises(ConfigError, match="whole number ≥ 2"):
        GhostBatchNorm(virtual_batch_size=1)
    layer = build_layer({"type": "ghost_batch_norm", "virtual_batch_size": 4})
    assert isinstance(layer, GhostBatchNorm) and layer.virtual_batch_size == 4
    assert isinstance(build_layer({"type": "batch_renorm", "schedule": "fixed"}), BatchRenorm)
