"""The notebook's three models, layer by layer, against Keras 3 (JAX backend).

The Keras models are built from the notebook's own Keras code (docs/reference.md), so the
parameter counts, layer names, initializer statistics and forward passes are compared
with numbers Keras produces, not only with constants copied from docs/reference.md.

Tolerances: forward passes run the same float32 products (784-term dot products at most)
through different but equivalent expressions; measured differences are ≲ 1e-6 in the
probabilities, so 1e-5 leaves a margin while any wrong layer, convention or weight
mapping moves them by ≥ 1e-2. Initializer statistics use ~235,000 draws; each tolerance
is stated next to its standard error.
"""

from __future__ import annotations

import math
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnlab.errors import ConfigError
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.layers import Dense, Dropout, Flatten, LeakyReLU
from bnlab.nn.model import Sequential
from bnlab.nn.summary import layer_variables, summarize
from bnlab.nn.zoo import MODELS, get_model

TOL = 1e-5  # see the module docstring
NOTEBOOK = ("baseline", "bn_after", "bn_before")  # the zoo's other models: tests/nn/test_conv.py

EXPECTED_COUNTS = {  # docs/reference.md#keras-parameter-counts, the notebook's summary
    "baseline": {"total": 266_610, "trainable": 266_610, "non_trainable": 0},
    "bn_after": {"total": 271_346, "trainable": 268_978, "non_trainable": 2_368},
    "bn_before": {"total": 270_946, "trainable": 268_578, "non_trainable": 2_368},
}


def build_keras_model(keras, name: str):
    """The notebook's Keras model ``name``, in a fresh session (so names start at ``dense``)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    stacks = {  # lambdas: only the requested model's layers are created (and named)
        "baseline": lambda: [
            layers.Flatten(),
            layers.Dense(300, kernel_initializer="he_normal"),
            layers.LeakyReLU(),
            layers.Dense(100, kernel_initializer="he_normal"),
            layers.LeakyReLU(),
            layers.Dense(10, activation="softmax"),
        ],
        "bn_after": lambda: [
            layers.Flatten(),
            layers.BatchNormalization(),
            layers.Dense(300, activation="relu"),
            layers.BatchNormalization(),
            layers.Dense(100, activation="relu"),
            layers.BatchNormalization(),
            layers.Dense(10, activation="softmax"),
        ],
        "bn_before": lambda: [
            layers.Flatten(),
            layers.BatchNormalization(),
            layers.Dense(300, use_bias=False),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.Dense(100, use_bias=False),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.Dense(10, activation="softmax"),
        ],
    }
    return keras.Sequential([keras.Input((28, 28)), *stacks[name]()])


@pytest.fixture(scope="module")
def keras_models(keras):
    """The three Keras models, for read-only comparisons."""
    return {name: build_keras_model(keras, name) for name in NOTEBOOK}


def keras_variables(keras_model) -> list[tuple[str, str, tuple[int, ...], bool]]:
    return [(layer.name, w.name, tuple(w.shape), w.trainable)
            for layer in keras_model.layers for w in layer.weights]


def n_weights(weights) -> int:
    return sum(math.prod(w.shape) for w in weights)


# ---------------------------------------------------------------------------------------
# Structure: counts, names, variables


@pytest.mark.parametrize("name", NOTEBOOK)
def test_param_counts_equal_the_notebooks_keras_summary(name):
    assert param_counts(get_model(name)) == EXPECTED_COUNTS[name]


def param_counts(model) -> dict[str, int]:
    summary = summarize(model)
    return {"total": summary.total, "trainable": summary.trainable,
            "non_trainable": summary.non_trainable}


@pytest.mark.parametrize("name", NOTEBOOK)
@pytest.mark.slow
def test_param_counts_equal_keras_count_params_in_total_and_per_layer(keras_models, name):
    model, keras_model = get_model(name), keras_models[name]
    counts = param_counts(model)
    assert counts["total"] == keras_model.count_params()
    assert counts["trainable"] == n_weights(keras_model.trainable_weights)
    assert counts["non_trainable"] == n_weights(keras_model.non_trainable_weights)

    per_layer = Counter()
    for layer_name, _, shape, _ in layer_variables(model):
        per_layer[layer_name] += math.prod(shape)
    assert [per_layer[n] for n in model.layer_names] == [
        layer.count_params() for layer in keras_model.layers
    ]


@pytest.mark.parametrize("name", NOTEBOOK)
def test_layer_names_equal_keras_auto_names(keras_models, name):
    assert get_model(name).layer_names == tuple(layer.name for layer in keras_models[name].layers)


@pytest.mark.parametrize("name", NOTEBOOK)
def test_layer_variables_equal_keras_weights_with_trainability(keras_models, name):
    # Layers in order; within a layer as a set (the exact order has its own test below).
    def by_layer(rows):
        return [(layer, sorted(r for r in rows if r[0] == layer))
                for layer in dict.fromkeys(r[0] for r in rows)]

    assert by_layer(layer_variables(get_model(name))) == by_layer(
        keras_variables(keras_models[name]))


def test_layer_variables_follow_keras_weight_order(keras_models):
    assert list(layer_variables(get_model("bn_after"))) == keras_variables(keras_models["bn_after"])


@pytest.mark.parametrize("name", ["bn_after", "bn_before"])
def test_each_batchnorm_has_trainable_gamma_beta_and_non_trainable_moving_stats(name):
    model = get_model(name)
    rows = layer_variables(model)
    bn_names = [n for n, layer in zip(model.layer_names, model.layers, strict=True)
                if isinstance(layer, BatchNorm)]
    assert len(bn_names) == 3
    for bn_name in bn_names:
        own = {(var, trainable) for layer, var, _, trainable in rows if layer == bn_name}
        assert own == {("gamma", True), ("beta", True), ("moving_mean", False),
                       ("moving_variance", False)}
    # The PyTorch view (running stats are buffers) counts only γ and β: 2 per feature.
    features = sum(shape[0] for layer, var, shape, _ in rows if var == "gamma")
    assert features == 784 + 300 + 100
    assert param_counts(model)["non_trainable"] == 2 * features


def test_unknown_model_name_raises_config_error_listing_known_models():
    with pytest.raises(ConfigError, match=", ".join(MODELS)):
        get_model("resnet")
    assert "cnn_bn_after" in MODELS and "resnet_skipinit" in MODELS


# ---------------------------------------------------------------------------------------
# Initializers and activations (Keras conventions)

FAN_IN, UNITS = 784, 300
N_DRAWS = FAN_IN * UNITS
HE_STD = math.sqrt(2.0 / FAN_IN)  # the target standard deviation after truncation
HE_STD_UNTRUNCATED = HE_STD / 0.87962566  # Keras/JAX scale the normal up before truncating
# P(|z| > 1 | |z| < 2) for a standard normal z: the share of truncated draws beyond 1σ.
SHARE_BEYOND_1SIGMA = (math.erf(2 / math.sqrt(2)) - math.erf(1 / math.sqrt(2))) / math.erf(
    2 / math.sqrt(2)
)


def he_statistics(w: np.ndarray) -> dict[str, float]:
    w = np.asarray(w, np.float64).ravel()
    return {
        "std": w.std(),
        "max_abs": np.abs(w).max(),
        "share_beyond_1sigma": np.mean(np.abs(w) > HE_STD_UNTRUNCATED),
    }


def check_truncated_he_normal(stats: dict[str, float]) -> None:
    # std: SE of a sample std of a 2σ-truncated normal ≈ 0.12 % at 235,200 draws; 1 % ≈ 8 SE.
    assert stats["std"] == pytest.approx(HE_STD, rel=0.01)
    # Nothing beyond ±2 untruncated σ (float32 rounding of the bound allowed)…
    assert stats["max_abs"] <= 2 * HE_STD_UNTRUNCATED * (1 + 1e-6)
    # …yet the tails reach it (~500 draws lie within 1 % of the bound).
    assert stats["max_abs"] >= 0.99 * 2 * HE_STD_UNTRUNCATED
    # 28.5 % beyond 1σ (a plain normal of the same std would give 25.6 %); SE ≈ 0.09 %.
    assert stats["share_beyond_1sigma"] == pytest.approx(SHARE_BEYOND_1SIGMA, abs=0.005)


def test_he_normal_is_truncated_at_two_untruncated_sigmas_with_std_sqrt_2_over_fan_in():
    params, _, _ = Dense(UNITS, kernel_init="he_normal").init(jax.random.key(0), (FAN_IN,))
    check_truncated_he_normal(he_statistics(params["kernel"]))


def test_he_normal_statistics_equal_keras_he_normal_statistics(keras):
    params, _, _ = Dense(UNITS, kernel_init="he_normal").init(jax.random.key(1), (FAN_IN,))
    ours = he_statistics(params["kernel"])
    theirs = he_statistics(keras.initializers.HeNormal(seed=1)(shape=(FAN_IN, UNITS)))
    check_truncated_he_normal(theirs)  # Keras's draw passes the same checks
    assert ours["std"] == pytest.approx(theirs["std"], rel=0.015)  # two samples: √2 × 1 %
    assert ours["share_beyond_1sigma"] == pytest.approx(theirs["share_beyond_1sigma"],
                                                        abs=0.007)


def test_dense_default_kernel_is_glorot_uniform_like_keras(keras):
    limit = math.sqrt(6.0 / (FAN_IN + UNITS))
    params, _, _ = Dense(UNITS).init(jax.random.key(2), (FAN_IN,))
    np.testing.assert_array_equal(params["bias"], 0.0)
    theirs = keras.layers.Dense(UNITS)
    theirs.build((None, FAN_IN))
    for kernel in (params["kernel"], theirs.kernel):
        w = np.asarray(kernel, np.float64)
        assert np.abs(w).max() <= limit
        # Uniform(−a, a): std a/√3, SE of the sample std ≈ 0.1 %; 1 % tolerance.
        assert w.std() == pytest.approx(limit / math.sqrt(3.0), rel=0.01)


def test_leaky_relu_default_slope_is_keras_0_3(keras):
    x = jnp.linspace(-3.0, 3.0, 25, dtype=jnp.float32)
    y, _ = LeakyReLU().apply({}, {}, x, train=False)
    keras_layer = keras.layers.LeakyReLU()
    assert LeakyReLU().negative_slope == keras_layer.negative_slope == 0.3
    np.testing.assert_allclose(y, np.asarray(keras_layer(x)), rtol=1e-7, atol=0)
    np.testing.assert_allclose(y[x < 0], 0.3 * x[x < 0], rtol=1e-7)


# ---------------------------------------------------------------------------------------
# Full forward passes with Keras's weights


def randomize_batchnorms(keras_model, rng: np.random.Generator) -> None:
    """Non-trivial γ, β and moving statistics, so that every BN variable matters."""
    for layer in keras_model.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
            layer.beta.assign(rng.normal(0.0, 0.2, n).astype(np.float32))
            layer.moving_mean.assign(rng.normal(0.0, 0.3, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.2, 2.0, n).astype(np.float32))


def weights_from_keras(model: Sequential, keras_model) -> tuple[tuple[dict, ...], tuple[dict, ...]]:
    """bnlab ``(params, state)`` holding the Keras model's current values, by variable name."""
    params, state = [], []
    for name, layer in zip(model.layer_names, keras_model.layers, strict=True):
        assert layer.name == name
        params.append({w.name: jnp.asarray(w) for w in layer.weights if w.trainable})
        state.append({w.name: jnp.asarray(w) for w in layer.weights if not w.trainable})
    return tuple(params), tuple(state)


def pixels(seed: int, n: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 28, 28)).astype(np.float32)


def assert_probabilities_close(ours, theirs) -> None:
    theirs = np.asarray(theirs, np.float64)
    np.testing.assert_allclose(np.asarray(ours, np.float64), theirs, rtol=TOL, atol=TOL)
    # A meaningful comparison: the probabilities are not saturated at 0/1.
    assert 0.05 < theirs.max(axis=1).mean() < 0.99


@pytest.mark.parametrize("name", NOTEBOOK)
def test_forward_pass_with_keras_weights_equals_keras_in_inference(keras, name):
    model, keras_model = get_model(name), build_keras_model(keras, name)
    randomize_batchnorms(keras_model, np.random.default_rng(30))
    params, state = weights_from_keras(model, keras_model)
    x = pixels(seed=31)

    expected = keras_model(x, training=False)
    logits, _ = model.apply(params, state, jnp.asarray(x), train=False)
    assert_probabilities_close(jax.nn.softmax(logits), expected)
    logits, new_state = model.apply(params, state, jnp.asarray(x), train=False)
    assert not np.allclose(np.sum(logits, axis=1), 1.0)  # apply gives logits…
    assert_probabilities_close(jax.nn.softmax(logits), expected)  # …softmax is left to the loss
    assert all(new is old for new, old in zip(new_state, state, strict=True))  # untouched


@pytest.mark.parametrize("name", NOTEBOOK)
def test_forward_pass_with_keras_weights_equals_keras_in_training(keras, name):
    model, keras_model = get_model(name), build_keras_model(keras, name)
    randomize_batchnorms(keras_model, np.random.default_rng(32))
    params, state = weights_from_keras(model, keras_model)
    x = pixels(seed=33)

    logits, new_state = model.apply(params, state, jnp.asarray(x), train=True)
    expected = keras_model(x, training=True)  # updates Keras's moving statistics
    assert_probabilities_close(jax.nn.softmax(logits), expected)
    _, keras_state = weights_from_keras(model, keras_model)
    for ours, theirs in zip(new_state, keras_state, strict=True):
        assert ours.keys() == theirs.keys()
        for var in ours:
            np.testing.assert_allclose(ours[var], theirs[var], rtol=TOL, atol=TOL)


# ---------------------------------------------------------------------------------------
# Dropout


def test_dropout_is_the_identity_at_inference():
    x = jnp.asarray(np.random.default_rng(34).standard_normal((8, 5)), jnp.float32)
    y, _ = Dropout(0.5).apply({}, {}, x, train=False, key=jax.random.key(0))
    np.testing.assert_array_equal(y, x)


def test_dropout_in_training_keeps_the_expectation():
    rate, n = 0.3, 200_000
    x = jnp.ones((n,), jnp.float32)
    y = np.asarray(Dropout(rate).apply({}, {}, x, train=True, key=jax.random.key(1))[0])
    kept = y != 0.0
    np.testing.assert_allclose(y[kept], 1.0 / (1.0 - rate), rtol=1e-6)  # inverted scaling
    # Each y is Bernoulli(0.7)/0.7: variance rate/(1−rate) = 0.43, SE of the mean
    # √(0.43/n) = 0.0015; 0.01 ≈ 7 SE. The dropped share has SE 0.001.
    assert y.mean() == pytest.approx(1.0, abs=0.01)
    assert 1.0 - kept.mean() == pytest.approx(rate, abs=0.007)


def test_dropout_masks_are_reproducible_from_the_key():
    x = jnp.ones((64,), jnp.float32)
    dropout = Dropout(0.5)
    a = dropout.apply({}, {}, x, train=True, key=jax.random.key(2))[0]
    b = dropout.apply({}, {}, x, train=True, key=jax.random.key(2))[0]
    c = dropout.apply({}, {}, x, train=True, key=jax.random.key(3))[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dropout_in_training_without_a_key_raises_config_error():
    with pytest.raises(ConfigError, match="PRNG key"):
        Dropout(0.5).apply({}, {}, jnp.ones((4, 3)), train=True)
    model = Sequential((Flatten(), Dense(4), Dropout(0.5), Dense(2)), input_shape=(3,))
    params, state = model.init(jax.random.key(0))
    with pytest.raises(ConfigError, match="PRNG key"):
        model.apply(params, state, jnp.ones((4, 3)), train=True)
    model.apply(params, state, jnp.ones((4, 3)), train=True, key=jax.random.key(1))


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_dropout_rate_outside_0_1_raises_config_error(rate):
    with pytest.raises(ConfigError, match="Dropout rate"):
        Dropout(rate)


def test_dense_products_ask_for_float32_so_gpu_results_match_cpu():
    """JAX's default lets a GPU round float32 products to TensorFloat-32; Dense's forward,
    weight-gradient and input-gradient products must all ask for full float32 instead."""
    dense = Dense(3)
    params, state, _ = dense.init(jax.random.key(0), (4,))

    def loss(params, x):
        return jnp.sum(dense.apply(params, state, x, train=True)[0] ** 2)

    text = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(
        params, jnp.ones((2, 4))).as_text()
    dots = [line for line in text.splitlines() if "dot_general" in line]
    assert len(dots) == 3
    assert all("precision = [HIGHEST, HIGHEST]" in line for line in dots)
