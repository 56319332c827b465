"""bnlab's BatchNorm against the paper (NumPy reference), closed forms and Keras 3.

Tolerances. bnlab computes in float32; the references in float64 from the same float32
inputs. Float32 rounds at 6e-8 relative; the values compared here are at most ~10 in
magnitude and pass through ~10 rounded operations, so honest differences are ≲ 1e-6.
The stated 1e-5 leaves a 10× margin and is still far below every convention effect the
tests distinguish (ε = 1e-3 vs 1e-5 on a feature with σ² = 1e-4: ~5 %; the unbiased factor
m/(m−1) at m = 16: 6.7 %; one moving-average step of momentum 0.01 vs 0.1: ≥ 1e-2).
Gradients are checked in float64, where the only error is finite differencing.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from bnlab.errors import ConfigError
from bnlab.nn.batchnorm import BatchNorm, batch_moments, inference_affine
from tests.nn import reference_bn as ref

TOL = 1e-5  # float32 vs float64 reference; see the module docstring
FEATURES = 6
# Per-feature scales from 0.01 (σ² = 1e-4, where ε = 1e-3 vs 1e-5 is a visible ~5 %
# effect) to 3; offsets are proportional to the scale so that float32 rounding of x,
# measured in units of σ, stays ~1e-7.
SCALES = np.array([0.01, 0.1, 0.5, 1.0, 2.0, 3.0])

PRESETS = {
    "keras": BatchNorm.keras(),
    "pytorch": BatchNorm.pytorch(),
    "flax": BatchNorm.flax(),
    "unbiased": BatchNorm(stored_variance="unbiased"),  # the paper's m/(m−1), Keras momentum
}


def random_batches(seed: int, k: int, m: int, features: int = FEATURES) -> list[np.ndarray]:
    """``k`` float32 batches ``(m, features)``, each with its own per-feature offset/scale."""
    rng = np.random.default_rng(seed)
    scales = SCALES[:features]
    batches = []
    for _ in range(k):
        loc = scales * rng.normal(0.0, 2.0, features)
        spread = scales * rng.uniform(0.5, 1.5, features)
        batches.append((loc + spread * rng.standard_normal((m, features))).astype(np.float32))
    return batches


def random_affine(seed: int, features: int = FEATURES) -> tuple[np.ndarray, np.ndarray]:
    """Non-trivial float32 ``(γ, β)`` so that a swapped or ignored parameter shows."""
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.5, 2.0, features).astype(np.float32)
    beta = rng.normal(0.0, 1.0, features).astype(np.float32)
    return gamma, beta


def params_of(gamma, beta) -> dict:
    return {"gamma": jnp.asarray(gamma), "beta": jnp.asarray(beta)}


def train_step(bn: BatchNorm):
    """A jitted training-mode ``apply`` (one compilation per layer config and shape)."""
    return jax.jit(functools.partial(bn.apply, train=True))


def assert_close(actual, expected, tol: float = TOL) -> None:
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------
# Algorithm 1 itself


def test_training_output_has_zero_mean_and_unit_variance_up_to_epsilon():
    bn = BatchNorm.keras()
    (x,) = random_batches(seed=0, k=1, m=64)
    params, state, _ = bn.init(None, (FEATURES,))  # γ = 1, β = 0
    y, _ = bn.apply(params, state, jnp.asarray(x), train=True)
    y = np.asarray(y, np.float64)
    sigma2 = np.var(x.astype(np.float64), axis=0)

    # Mean: exactly 0 in exact arithmetic; |y| ≲ 3 and 64 float32 roundings give ≲ 1e-6.
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=TOL)
    # Variance: exactly σ²/(σ²+ε), so 1 − Var[y] = ε/(σ²+ε) ∈ (0, ε/σ²].
    y_var = y.var(axis=0)
    assert_close(y_var, sigma2 / (sigma2 + bn.epsilon))
    assert np.all(1.0 - y_var <= bn.epsilon / sigma2 + TOL)
    # The ε effect is really there: σ² ≈ 1e-4 with ε = 1e-3 gives Var[y] ≈ 0.09, not 1.
    assert y_var[0] < 0.5
    # …and negligible where σ² ≫ ε.
    np.testing.assert_allclose(y_var[3:], 1.0, atol=1e-3)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_five_training_steps_match_numpy_reference(preset):
    bn, conv = PRESETS[preset], ref.CONVENTIONS[preset]
    batches = random_batches(seed=1, k=5, m=16)
    gamma, beta = random_affine(seed=2)
    expected_y, expected_states = ref.run_training(batches, gamma, beta, conv)

    params, state = params_of(gamma, beta), bn.init(None, (FEATURES,))[1]
    step = train_step(bn)
    for x, y_ref, (mean_ref, var_ref) in zip(batches, expected_y, expected_states, strict=True):
        y, state = step(params, state, jnp.asarray(x))
        assert_close(y, y_ref)
        assert_close(state["moving_mean"], mean_ref)
        assert_close(state["moving_variance"], var_ref)

    (x_new,) = random_batches(seed=3, k=1, m=16)
    y_inf, same_state = bn.apply(params, state, jnp.asarray(x_new), train=False)
    mean_ref, var_ref = expected_states[-1]
    assert_close(y_inf, ref.inference_forward(x_new, gamma, beta, mean_ref, var_ref, conv.epsilon))
    assert same_state is state  # inference never touches the moving statistics


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("k", [5, 40])
def test_moving_statistics_equal_closed_form_after_k_steps_of_one_batch(preset, k):
    """Constant batch statistics (μ, σ²): moving_mean_k = (1 − d^k)·μ and
    moving_variance_k = d^k·1 + (1 − d^k)·σ²_stored, d the weight of the old value."""
    bn, conv = PRESETS[preset], ref.CONVENTIONS[preset]
    (x,) = random_batches(seed=4, k=1, m=16)
    params, state, _ = bn.init(None, (FEATURES,))
    step = train_step(bn)
    for _ in range(k):
        _, state = step(params, state, jnp.asarray(x))

    d = conv.momentum if conv.weight_on == "old" else 1.0 - conv.momentum
    assert d == pytest.approx(bn.decay)
    mu, var, m = ref.minibatch_stats(x)
    stored = var * m / (m - 1) if conv.unbiased else var
    # k float32 updates each add ≲ 1e-7 relative error: ≤ 4e-6 at k = 40, within TOL.
    assert_close(state["moving_mean"], (1.0 - d**k) * mu)
    assert_close(state["moving_variance"], d**k + (1.0 - d**k) * stored)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_moving_statistics_are_exponentially_weighted_batch_statistics(preset):
    """Different batches: moving_k = d^k·moving_0 + (1 − d)·Σ_j d^(k−j)·stat_j (j = 1..k)."""
    bn, conv = PRESETS[preset], ref.CONVENTIONS[preset]
    k = 5
    batches = random_batches(seed=5, k=k, m=12)
    params, state, _ = bn.init(None, (FEATURES,))
    step = train_step(bn)
    for x in batches:
        _, state = step(params, state, jnp.asarray(x))

    d = bn.decay
    stats = [ref.minibatch_stats(x) for x in batches]
    weights = [(1.0 - d) * d ** (k - j) for j in range(1, k + 1)]
    mean = sum(w * mu for w, (mu, _, _) in zip(weights, stats, strict=True))
    scale = (lambda m: m / (m - 1)) if conv.unbiased else (lambda m: 1.0)
    var = d**k + sum(w * v * scale(m) for w, (_, v, m) in zip(weights, stats, strict=True))
    assert_close(state["moving_mean"], mean)
    assert_close(state["moving_variance"], var)


# ---------------------------------------------------------------------------------------
# Keras 3 BatchNormalization on the JAX backend


def keras_layer(keras, bn: BatchNorm, gamma, beta):
    layer = keras.layers.BatchNormalization(
        momentum=bn.momentum, epsilon=bn.epsilon, center=bn.center, scale=bn.scale
    )
    layer.build((None, FEATURES))
    if bn.scale:
        layer.gamma.assign(gamma)
    if bn.center:
        layer.beta.assign(beta)
    return layer


KERAS_CONFIGS = {
    "defaults": BatchNorm.keras(),
    "momentum0.9_eps1e-5": BatchNorm(momentum=0.9, epsilon=1e-5),
    "no_center_no_scale": BatchNorm(center=False, scale=False),
}


@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("config", sorted(KERAS_CONFIGS))
def test_matches_keras_batchnormalization_over_5_training_steps_then_inference(
    keras, config, masked
):
    bn = KERAS_CONFIGS[config]
    gamma, beta = random_affine(seed=6)
    layer = keras_layer(keras, bn, gamma, beta)
    params, state, _ = bn.init(None, (FEATURES,))
    params = {name: jnp.asarray(value) for name, value in params_of(gamma, beta).items()
              if name in params}

    batches = random_batches(seed=7, k=5, m=16)
    rng = np.random.default_rng(8)
    for x in batches:
        # Keras divides masked sums by (count + 1e-7): a 1e-8 relative difference.
        mask = rng.permutation(np.arange(16) < 11) if masked else None
        y_keras = layer(x, training=True, mask=mask)
        y, state = bn.apply(params, state, jnp.asarray(x), train=True,
                            mask=None if mask is None else jnp.asarray(mask))
        assert_close(y, np.asarray(y_keras))
        assert_close(state["moving_mean"], np.asarray(layer.moving_mean))
        assert_close(state["moving_variance"], np.asarray(layer.moving_variance))

    (x_new,) = random_batches(seed=9, k=1, m=16)
    y_keras = layer(x_new, training=False)
    y, _ = bn.apply(params, state, jnp.asarray(x_new), train=False)
    assert_close(y, np.asarray(y_keras))


def test_keras_defaults_are_bnlab_defaults(keras):
    layer = keras.layers.BatchNormalization()
    layer.build((None, 3))
    bn = BatchNorm()
    params, state, _ = bn.init(None, (3,))
    assert (bn.momentum, bn.epsilon) == (layer.momentum, layer.epsilon) == (0.99, 1e-3)
    assert bn.momentum_on == "old" and bn.stored_variance == "biased"
    for name, value in {**params, **state}.items():
        np.testing.assert_array_equal(value, np.asarray(getattr(layer, name)))


# ---------------------------------------------------------------------------------------
# Inference mode


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_inference_before_training_is_gamma_x_over_sqrt_one_plus_eps_plus_beta(preset):
    bn = PRESETS[preset]
    (x,) = random_batches(seed=10, k=1, m=8)
    gamma, beta = random_affine(seed=11)
    state = bn.init(None, (FEATURES,))[1]
    y, _ = bn.apply(params_of(gamma, beta), state, jnp.asarray(x), train=False)
    # |y| ≲ 10 here: 2e-6 absolute is ~3 float32 ulps, tight enough to see ε = 1e-5
    # (a 5e-6 relative change) on the larger outputs.
    expected = gamma * x.astype(np.float64) / np.sqrt(1.0 + bn.epsilon) + beta
    np.testing.assert_allclose(np.asarray(y, np.float64), expected, rtol=2e-7, atol=2e-6)


@pytest.mark.parametrize(
    "bn",
    [BatchNorm(momentum=0.0), BatchNorm.pytorch(momentum=1.0, stored_variance="biased")],
    ids=["keras_momentum_0", "pytorch_momentum_1"],
)
def test_inference_equals_training_when_moving_stats_become_the_batch_stats(bn):
    assert bn.decay == 0.0  # the moving statistics are replaced by the batch statistics
    (x,) = random_batches(seed=12, k=1, m=16)
    gamma, beta = random_affine(seed=13)
    params, state = params_of(gamma, beta), bn.init(None, (FEATURES,))[1]
    y_train, state = bn.apply(params, state, jnp.asarray(x), train=True)
    y_inf, _ = bn.apply(params, state, jnp.asarray(x), train=False)
    assert_close(y_inf, np.asarray(y_train, np.float64))


def test_inference_differs_from_training_by_the_unbiased_factor_when_storing_unbiased():
    """The counterpart: storing m/(m−1)·σ²_B makes inference use a larger variance."""
    bn = BatchNorm(momentum=0.0, stored_variance="unbiased")
    (x,) = random_batches(seed=12, k=1, m=16)
    gamma, beta = random_affine(seed=13)
    params, state = params_of(gamma, beta), bn.init(None, (FEATURES,))[1]
    y_train, state = bn.apply(params, state, jnp.asarray(x), train=True)
    y_inf, _ = bn.apply(params, state, jnp.asarray(x), train=False)
    mu, var, m = ref.minibatch_stats(x)
    expected = ref.inference_forward(x, gamma, beta, mu, var * m / (m - 1), bn.epsilon)
    assert_close(y_inf, expected)
    assert np.max(np.abs(np.asarray(y_inf) - np.asarray(y_train))) > 100 * TOL


@pytest.mark.parametrize("center_scale", [(True, True), (False, False), (True, False)])
def test_inference_affine_gives_the_inference_apply_output(center_scale):
    center, scale = center_scale
    bn = BatchNorm(center=center, scale=scale)
    batches = random_batches(seed=14, k=3, m=16)
    gamma, beta = random_affine(seed=15)
    params, state, _ = bn.init(None, (FEATURES,))
    params = {name: value for name, value in params_of(gamma, beta).items() if name in params}
    for x in batches:  # non-trivial moving statistics
        _, state = bn.apply(params, state, jnp.asarray(x), train=True)

    s, t = inference_affine(params, state, bn.epsilon)
    (x,) = random_batches(seed=16, k=1, m=8)
    y, _ = bn.apply(params, state, jnp.asarray(x), train=False)
    assert_close(jnp.asarray(x) * s[None, :] + t[None, :], np.asarray(y, np.float64))
    g = gamma if scale else 1.0
    b = beta if center else 0.0
    mean, var = (np.asarray(state[n], np.float64) for n in ("moving_mean", "moving_variance"))
    assert_close(y, ref.inference_forward(x, g, b, mean, var, bn.epsilon))


# ---------------------------------------------------------------------------------------
# The ragged last batch


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_masked_statistics_equal_statistics_of_the_unpadded_batch(preset):
    bn = PRESETS[preset]
    (x_real,) = random_batches(seed=17, k=1, m=10)
    rng = np.random.default_rng(18)
    # 6 padding rows of large finite garbage, interleaved with the real rows.
    mask = rng.permutation(np.arange(16) < 10)
    x_pad = (1e3 * rng.standard_normal((16, FEATURES))).astype(np.float32)
    x_pad[mask] = x_real
    gamma, beta = random_affine(seed=19)
    params, state = params_of(gamma, beta), bn.init(None, (FEATURES,))[1]

    y_masked, state_masked = bn.apply(params, state, jnp.asarray(x_pad), train=True,
                                      mask=jnp.asarray(mask))
    y_real, state_real = bn.apply(params, state, jnp.asarray(x_real), train=True)
    assert_close(np.asarray(y_masked)[mask], np.asarray(y_real, np.float64))
    for name in ("moving_mean", "moving_variance"):
        assert_close(state_masked[name], np.asarray(state_real[name], np.float64))
    # …and both equal the reference over the 10 real rows (m = 10 in the unbiased factor).
    y_ref, mu, var, m = ref.train_forward(x_pad, gamma, beta, bn.epsilon, mask)
    assert m == 10
    assert_close(y_masked, y_ref)  # padded rows are normalized with the real rows' stats
    mean_ref, var_ref = ref.moving_update(*ref.init_state(FEATURES), mu, var, m,
                                          ref.CONVENTIONS[preset])
    assert_close(state_masked["moving_mean"], mean_ref)
    assert_close(state_masked["moving_variance"], var_ref)


def test_all_true_mask_equals_no_mask():
    bn = BatchNorm.pytorch()
    (x,) = random_batches(seed=20, k=1, m=8)
    params, state, _ = bn.init(None, (FEATURES,))
    y_mask, s_mask = bn.apply(params, state, jnp.asarray(x), train=True,
                              mask=jnp.ones((8,), bool))
    y, s = bn.apply(params, state, jnp.asarray(x), train=True)
    assert_close(y_mask, np.asarray(y, np.float64))
    assert_close(s_mask["moving_variance"], np.asarray(s["moving_variance"], np.float64))


def test_masked_batch_with_one_real_row_keeps_moving_statistics_finite():
    bn = BatchNorm.pytorch()
    (x,) = random_batches(seed=21, k=1, m=4)
    params, state, _ = bn.init(None, (FEATURES,))
    mask = jnp.asarray([True, False, False, False])
    _, new_state = bn.apply(params, state, jnp.asarray(x), train=True, mask=mask)
    assert np.all(np.isfinite(new_state["moving_variance"]))


def test_non_finite_padding_does_not_leak_into_the_statistics():
    bn = BatchNorm.keras()
    (x,) = random_batches(seed=22, k=1, m=8)
    x[-1] = np.inf
    params, state, _ = bn.init(None, (FEATURES,))
    mask = jnp.arange(8) < 7
    y, new_state = bn.apply(params, state, jnp.asarray(x), train=True, mask=mask)
    assert np.all(np.isfinite(np.asarray(y)[:7]))
    assert np.all(np.isfinite(new_state["moving_mean"]))


# ---------------------------------------------------------------------------------------
# Numerical safety and configuration errors


def test_variance_is_never_negative_for_large_offset_inputs():
    rng = np.random.default_rng(23)
    m = 32
    # 1e4 + 1e-3·noise in float32: the noise is ~1 ulp of 1e4, and E[x²] ≈ 1e8 has ulps of 8.
    x = jnp.asarray((1e4 + 1e-3 * rng.standard_normal((m, 64))).astype(np.float32))
    one_pass = jnp.mean(x * x, axis=0) - jnp.mean(x, axis=0) ** 2
    assert np.any(np.asarray(one_pass) < 0)  # this input really defeats E[x²] − E[x]²

    _, variance, _ = batch_moments(x)
    assert np.all(np.asarray(variance) >= 0.0)
    # A tiny ε makes the output depend on the variance alone: a two-pass variance keeps
    # Σ x̂² = m·σ²/(σ²+ε) ≤ m, so |x̂_i| ≤ √m; a clamped-to-0 variance would give ~1e3.
    bn = BatchNorm(epsilon=1e-12)
    params, state, _ = bn.init(None, (64,))
    y, new_state = bn.apply(params, state, x, train=True)
    y = np.asarray(y)
    assert np.all(np.isfinite(y))
    assert np.max(np.abs(y)) <= np.sqrt(m) * (1 + TOL)
    assert np.all(np.asarray(new_state["moving_variance"]) >= 0.0)


def test_batch_of_one_row_in_training_raises_config_error_saying_why():
    bn = BatchNorm.keras()
    params, state, _ = bn.init(None, (FEATURES,))
    x = jnp.ones((1, FEATURES))
    with pytest.raises(ConfigError, match=r"at least 2 rows.*variance is 0"):
        bn.apply(params, state, x, train=True)
    with pytest.raises(ConfigError, match="at least 2 rows"):
        jax.jit(functools.partial(bn.apply, train=True))(params, state, x)
    y, _ = bn.apply(params, state, x, train=False)  # one row is fine at inference
    assert y.shape == (1, FEATURES)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"momentum": -0.1}, "momentum must be in"),
        ({"momentum": 1.5}, "momentum must be in"),
        ({"momentum": float("nan")}, "momentum must be in"),
        ({"epsilon": 0.0}, "epsilon must be"),
        ({"epsilon": -1e-3}, "epsilon must be"),
        ({"epsilon": float("nan")}, "epsilon must be"),
        ({"epsilon": float("inf")}, "epsilon must be"),
        ({"momentum_on": "keras"}, r"momentum_on must be 'old' \(Keras/Flax\) or 'new'"),
        ({"stored_variance": "population"}, "stored_variance must be 'biased' or 'unbiased'"),
    ],
)
def test_invalid_batchnorm_options_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        BatchNorm(**kwargs)


def test_presets_reject_invalid_overrides_too():
    with pytest.raises(ConfigError, match="momentum must be in"):
        BatchNorm.pytorch(momentum=2.0)


def test_non_flat_input_raises_config_error_naming_flatten():
    with pytest.raises(ConfigError, match="Flatten"):
        BatchNorm().init(None, (28, 28))


# ---------------------------------------------------------------------------------------
# Gradients (float64)


def training_output(bn: BatchNorm, state):
    def f(x, gamma, beta):
        return bn.apply({"gamma": gamma, "beta": beta}, state, x, train=True)[0]
    return f


def float64_inputs(seed: int, m: int = 6, features: int = 3):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(1.0, 2.0, (m, features)))
    gamma = jnp.asarray(rng.uniform(0.5, 2.0, features))
    beta = jnp.asarray(rng.normal(0.0, 1.0, features))
    assert x.dtype == jnp.float64
    return x, gamma, beta


@pytest.mark.parametrize("preset", ["keras", "pytorch"])
@pytest.mark.slow
def test_training_gradients_pass_check_grads_to_second_order_in_float64(float64, preset):
    bn = PRESETS[preset]
    x, gamma, beta = float64_inputs(seed=24)
    state = {"moving_mean": jnp.zeros(3), "moving_variance": jnp.ones(3)}
    # Central differences with step 1e-4 on O(1) functions: truncation ~1e-8,
    # float64 cancellation ~1e-12; 1e-5 is a wide margin that still catches any wrong term.
    check_grads(training_output(bn, state), (x, gamma, beta), order=2, modes=("fwd", "rev"),
                atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", ["keras", "pytorch"])
def test_training_gradients_equal_the_papers_backprop_formulas(float64, preset):
    bn = PRESETS[preset]
    x, gamma, beta = float64_inputs(seed=25, m=8, features=4)
    state = {"moving_mean": jnp.zeros(4), "moving_variance": jnp.ones(4)}
    dy = np.random.default_rng(26).standard_normal((8, 4))
    _, vjp = jax.vjp(training_output(bn, state), x, gamma, beta)
    dx, dgamma, dbeta = vjp(jnp.asarray(dy))
    ref_dx, ref_dgamma, ref_dbeta = ref.train_backward(dy, np.asarray(x), np.asarray(gamma),
                                                       bn.epsilon)
    # Both sides are float64 evaluations of the same exact quantity: ~1e-15 relative
    # rounding amplified by the sums' cancellation stays far below 1e-10.
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dgamma, ref_dgamma, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dbeta, ref_dbeta, rtol=1e-10, atol=1e-10)
    # The normalization makes Σ_i ∂ℓ/∂x_i = 0 per feature (a shift of x changes nothing).
    np.testing.assert_allclose(np.sum(dx, axis=0), 0.0, atol=1e-10)


def test_padded_rows_get_no_gradient_and_real_rows_the_unpadded_gradient(float64):
    bn = BatchNorm.keras()
    x, gamma, beta = float64_inputs(seed=27, m=6, features=3)
    state = {"moving_mean": jnp.zeros(3), "moving_variance": jnp.ones(3)}
    dy = jnp.asarray(np.random.default_rng(28).standard_normal((6, 3)))
    x_pad = jnp.concatenate([x, 100.0 * jnp.ones((2, 3))])
    mask = jnp.arange(8) < 6

    def masked_loss(x_pad):  # like the engine's loss: padded rows are weighted 0
        y, _ = bn.apply({"gamma": gamma, "beta": beta}, state, x_pad, train=True, mask=mask)
        return jnp.sum(y[:6] * dy)

    def loss(x):
        return jnp.sum(training_output(bn, state)(x, gamma, beta) * dy)

    g_pad = jax.grad(masked_loss)(x_pad)
    np.testing.assert_allclose(g_pad[:6], jax.grad(loss)(x), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(g_pad[6:], 0.0)


def test_moving_statistics_carry_no_gradient():
    bn = BatchNorm.keras()
    (x,) = random_batches(seed=29, k=1, m=8)
    params, state, _ = bn.init(None, (FEATURES,))

    def moving_sum(x):
        _, new_state = bn.apply(params, state, x, train=True)
        return new_state["moving_mean"].sum() + new_state["moving_variance"].sum()

    np.testing.assert_array_equal(jax.grad(moving_sum)(jnp.asarray(x)), 0.0)


# ---------------------------------------------------------------------------------------
# Edge cases a direct caller can reach


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_batch_without_real_rows_leaves_moving_statistics_unchanged_and_output_finite(preset):
    bn = PRESETS[preset]
    params, _, _ = bn.init(None, (FEATURES,))
    state = {"moving_mean": jnp.linspace(-1.0, 1.0, FEATURES),
             "moving_variance": jnp.linspace(0.5, 2.0, FEATURES)}
    (x,) = random_batches(seed=21, k=1, m=8)
    cases = {"fully masked": (jnp.asarray(x), jnp.zeros(8, bool)),
             "empty": (jnp.zeros((0, FEATURES), jnp.float32), None),
             "empty, masked": (jnp.zeros((0, FEATURES), jnp.float32), jnp.zeros(0, bool))}
    for name, (rows, mask) in cases.items():
        y, new_state = bn.apply(params, state, rows, train=True, mask=mask)
        assert y.shape == rows.shape and np.isfinite(np.asarray(y)).all(), name
        for key in state:
            np.testing.assert_array_equal(new_state[key], state[key], err_msg=name)


def test_cumulative_average_is_the_plain_mean_of_the_batch_statistics():
    bn = BatchNorm.pytorch(momentum=None)
    assert bn.moving_average == "cumulative"
    gamma, beta = random_affine(seed=22)
    params, state, _ = bn.init(None, (FEATURES,))
    params = params_of(gamma, beta)
    batches = random_batches(seed=23, k=5, m=16)
    means, variances = [], []
    for x in batches:
        _, state = train_step(bn)(params, state, jnp.asarray(x))
        mu, var, m = ref.minibatch_stats(x)
        means.append(mu)
        variances.append(var * m / (m - 1))  # PyTorch stores the unbiased variance
    assert int(state["num_batches_tracked"]) == 5
    assert_close(state["moving_mean"], np.mean(means, axis=0))
    assert_close(state["moving_variance"], np.mean(variances, axis=0))


def test_cumulative_average_matches_pytorch_momentum_none(torch):
    bn = BatchNorm.pytorch(momentum=None)
    layer = torch.nn.BatchNorm1d(FEATURES, momentum=None).double()
    gamma, beta = random_affine(seed=24)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(gamma.astype(np.float64)))
        layer.bias.copy_(torch.from_numpy(beta.astype(np.float64)))
    params, state, _ = bn.init(None, (FEATURES,))
    params = params_of(gamma, beta)
    layer.train()
    for x in random_batches(seed=25, k=4, m=16):
        y_torch = layer(torch.from_numpy(x.astype(np.float64))).detach().numpy()
        y, state = train_step(bn)(params, state, jnp.asarray(x))
        assert_close(y, y_torch)
    assert int(state["num_batches_tracked"]) == int(layer.num_batches_tracked)
    assert_close(state["moving_mean"], layer.running_mean.numpy())
    assert_close(state["moving_variance"], layer.running_var.numpy())
    layer.eval()
    (x,) = random_batches(seed=26, k=1, m=16)
    y, _ = bn.apply(params, state, jnp.asarray(x), train=False)
    assert_close(y, layer(torch.from_numpy(x.astype(np.float64))).detach().numpy())


@pytest.mark.parametrize("value", [None, "0.9", True, [0.9]], ids=repr)
@pytest.mark.parametrize("option", ["momentum", "epsilon"])
def test_non_number_momentum_or_epsilon_is_a_config_error(option, value):
    with pytest.raises(ConfigError, match=f"BatchNorm {option} must be a number") as err:
        BatchNorm(**{option: value})
    if option == "momentum" and value is None:
        assert "moving_average='cumulative'" in str(err.value)


def test_numpy_numbers_are_numbers():
    bn = BatchNorm(momentum=np.float32(0.9), epsilon=np.float64(1e-5))
    with pytest.raises(ConfigError, match="momentum must be in"):
        BatchNorm(momentum=np.float32(1.5))
    assert bn.decay == pytest.approx(0.9)
