"""Noisy BatchNorm (``nn.norms``): BatchNorm's statistics and inference, plus a per-unit
random affine map in training whose draws have the configured moments.

Tolerances: the noise moments are checked over 4,000 independent draws per unit × 50
units: a sample mean's standard error is σ/√200,000 ≈ 0.002σ, so 0.02σ is ten of them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnlab.config.layers import build_layer
from bnlab.errors import ConfigError
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.norms import NoisyBatchNorm


def setup(features=50, rows=16):
    x = jax.random.normal(jax.random.key(0), (rows, features)) * 3.0 + 1.0
    noisy = NoisyBatchNorm(scale_low=0.5, scale_high=2.0, shift_mean=0.7, shift_sd=1.5)
    params, state, _ = noisy.init(jax.random.key(1), (features,))
    params = {"gamma": jnp.linspace(0.5, 1.5, features), "beta": jnp.linspace(-1, 1, features)}
    return x, noisy, params, state


def test_inference_and_moving_statistics_are_batchnorms_own():
    x, noisy, params, state = setup()
    plain = BatchNorm(momentum=noisy.momentum, epsilon=noisy.epsilon)
    for train in (False, True):
        got, got_state = noisy.apply(params, state, x, train=train, key=jax.random.key(2))
        want, want_state = plain.apply(params, state, x, train=train)
        if not train:
            np.testing.assert_array_equal(got, want)  # no noise at inference
        for a, b in zip(jax.tree_util.tree_leaves(got_state),
                        jax.tree_util.tree_leaves(want_state), strict=True):
            np.testing.assert_array_equal(a, b)


def test_training_output_is_a_per_unit_scale_and_shift_of_batchnorm_redrawn_each_step():
    x, noisy, params, state = setup()
    normalized, _ = BatchNorm().apply(params, state, x, train=True)
    outputs = [noisy.apply(params, state, x, train=True, key=jax.random.key(k))[0]
               for k in (3, 4)]
    for key, y in zip((3, 4), outputs, strict=True):
        scale, shift = noisy.noise(jax.random.key(key), 50)
        np.testing.assert_allclose(y, normalized * scale[None, :] + shift[None, :], rtol=1e-6,
                                   atol=1e-6)
        # One scale and one shift per unit, the same for every row: rows keep their order.
        ratio = (y[1] - y[0]) / (normalized[1] - normalized[0])
        np.testing.assert_allclose(ratio, scale, rtol=1e-4)
    assert not np.allclose(outputs[0], outputs[1])  # another step, other noise


def test_noise_has_the_configured_moments():
    _, noisy, _, _ = setup()
    draws = jax.vmap(lambda k: jnp.stack(noisy.noise(k, 50)))(
        jax.random.split(jax.random.key(5), 4000))  # (4000, 2, 50)
    scale, shift = np.asarray(draws[:, 0]).ravel(), np.asarray(draws[:, 1]).ravel()
    low, high = 0.5, 2.0
    uniform_sd = (high - low) / np.sqrt(12)
    assert scale.min() >= low and scale.max() <= high
    assert abs(scale.mean() - (low + high) / 2) < 0.02 * uniform_sd
    assert abs(scale.std() - uniform_sd) < 0.02 * uniform_sd
    assert abs(shift.mean() - 0.7) < 0.02 * 1.5 and abs(shift.std() - 1.5) < 0.02 * 1.5


def test_noisy_batchnorm_needs_a_key_in_training_and_sane_distributions():
    x, noisy, params, state = setup()
    with pytest.raises(ConfigError, match="PRNG key"):
        noisy.apply(params, state, x, train=True)
    for bad in ({"scale_low": 0.0}, {"scale_low": 3.0, "scale_high": 2.0},
                {"shift_sd": -1.0}, {"shift_mean": float("inf")}):
        with pytest.raises(ConfigError, match="NoisyBatchNorm"):
            NoisyBatchNorm(**bad)
    layer = build_layer({"type": "noisy_batch_norm", "scale_high": 3, "momentum": 0.9})
    assert isinstance(layer, NoisyBatchNorm) and layer.scale_high == 3 and layer.momentum == 0.9
