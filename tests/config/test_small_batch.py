"""Batches of 2 rows: what BatchNorm computes on them, and the warning that says so."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from bnlab.config.experiment import ExperimentConfig, VariantConfig
from bnlab.config.files import load_experiment
from bnlab.config.small_batch import small_batch_warnings
from bnlab.nn.batchnorm import BatchNorm

SEED = load_experiment("seed")  # baseline (no BN), bn_after, bn_before: BN with ε = 1e-3


def with_batch(batch_size: int, config: ExperimentConfig = SEED) -> ExperimentConfig:
    return dataclasses.replace(config, batch_size=batch_size)


def two_row_bn(x: np.ndarray, epsilon: float) -> np.ndarray:
    """Training-mode BatchNorm (γ = 1, β = 0) of a ``(2, features)`` batch."""
    layer = BatchNorm(epsilon=epsilon)
    params, state, _ = layer.init(None, (x.shape[1],))
    y, _ = layer.apply(params, state, jnp.asarray(x, jnp.float32), train=True)
    return np.asarray(y, np.float64)


@pytest.mark.parametrize("epsilon", [1e-3, 1e-5])
def test_bn_of_two_rows_is_plus_minus_half_difference_over_its_root(epsilon):
    """The warning's formula, against bnlab's BatchNorm: rtol 1e-5 covers float32 rounding
    of a mean, a variance and an rsqrt (a few ulps of 6e-8 each)."""
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 3.0, size=(2, 64))
    half = (x[0] - x[1]) / 2
    expected = half / np.sqrt(half**2 + epsilon)
    y = two_row_bn(x, epsilon)
    np.testing.assert_allclose(y[0], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y[1], -expected, rtol=1e-5, atol=1e-7)


def test_bn_of_two_rows_keeps_only_the_sign_of_their_difference():
    """For |a − b| ≥ 2 (|a − b|/2 ≥ 1) each output is ±1 within 1 − 1/√(1 + ε) < 5e-4 at
    ε = 1e-3: two batches with the same signs give the same outputs, whatever the values."""
    rng = np.random.default_rng(1)
    signs = rng.choice([-1.0, 1.0], size=32)
    small = np.stack([signs * 1.0, -signs * 1.0])  # a − b = ±2
    large = np.stack([signs * 40.0 + 7.0, 7.0 - signs * rng.uniform(5.0, 90.0, 32)])
    for batch in (small, large):
        y = two_row_bn(batch, 1e-3)
        np.testing.assert_allclose(y, np.stack([signs, -signs]), atol=5e-4)


def test_batches_of_32_over_55000_rows_give_no_warning():
    assert small_batch_warnings(SEED, 55_000) == []  # the last batch has 24 rows


def test_batch_size_2_warns_for_each_variant_with_batch_norm_only():
    warnings = small_batch_warnings(with_batch(2), 55_000)
    assert len(warnings) == 2
    assert warnings[0].startswith("variant 'bn_after': every training batch has 2 rows; ")
    assert warnings[1].startswith("variant 'bn_before': ")
    assert "±((a−b)/2)/√(((a−b)/2)² + ε) ≈ ±1 (ε = 0.001)" in warnings[0]
    # 55,000 = 18,333·3 + 1 would leave a batch of 1; 4 divides it
    assert "passes on only the sign of a − b; batch_size 4 avoids it" in warnings[0]
    assert all("\n" not in w for w in warnings)


@pytest.mark.parametrize(("n_train", "batch_size"), [
    (55_000, 2), (3_202, 32), (66, 32), (1_000, 998), (34, 32), (10, 4),
])
def test_the_suggested_batch_size_leaves_every_batch_at_least_3_rows(n_train, batch_size):
    (warning, _) = small_batch_warnings(with_batch(batch_size), n_train)
    suggested = int(warning.rsplit("batch_size ", 1)[1].split()[0])
    assert suggested >= 3 and n_train % suggested not in (1, 2)
    assert suggested != batch_size


def test_a_ragged_last_batch_of_2_rows_is_named_as_the_last_batch_of_every_epoch():
    warnings = small_batch_warnings(SEED, 32 * 100 + 2)
    assert len(warnings) == 2
    assert ("the last batch of every epoch has 2 rows (3,202 training rows, batch_size 32)"
            in warnings[0])
    # the nearest: 33 leaves 1 row (3,202 = 97·33 + 1), 31 leaves 9 (3,202 = 103·31 + 9)
    assert warnings[0].endswith("batch_size 31 avoids it")


def test_the_warning_names_each_variants_own_epsilon_and_needs_batch_norm():
    config = dataclasses.replace(with_batch(2), variants=(
        VariantConfig("mine", layers=({"type": "flatten"},
                                      {"type": "batch_norm", "epsilon": 1e-5},
                                      {"type": "dense", "units": 10, "activation": "softmax"})),
        VariantConfig("plain", model="baseline"),
    ))
    (warning,) = small_batch_warnings(config, 55_000)
    assert warning.startswith("variant 'mine': ") and "(ε = 1e-05)" in warning


def test_with_only_2_rows_in_all_the_warning_asks_for_more_rows():
    (warning, _) = small_batch_warnings(with_batch(2), 2)
    assert warning.endswith("; use more training rows")


def test_a_batch_norm_over_images_is_not_warned_about_and_a_mixed_model_names_its_layers():
    """BN over (N, H, W) averages 2·28·28 values per channel at batch 2: no warning for a
    conv net whose BatchNorms all see images; cnn_bn_after's last BatchNorm sees 128
    features, and the warning names it alone."""
    conv_only = VariantConfig("conv", layers=(
        {"type": "reshape", "target_shape": [28, 28, 1]},
        {"type": "conv2d", "filters": 4, "kernel_size": 3}, {"type": "batch_norm"},
        {"type": "global_average_pool2d"},
        {"type": "dense", "units": 10, "activation": "softmax"}))
    config = dataclasses.replace(with_batch(2), variants=(
        conv_only, VariantConfig("cnn_bn_after", model="cnn_bn_after")))
    (warning,) = small_batch_warnings(config, 55_000)
    assert warning.startswith("variant 'cnn_bn_after': every training batch has 2 rows; "
                              "BatchNorm over features (batch_normalization_2; those over "
                              "images average 2·H·W values) of 2 rows a, b gives")
