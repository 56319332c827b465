"""LayerNorm and GroupNorm (``nn.norms``) against an independent NumPy transcription, Keras 3's
``LayerNormalization`` / ``GroupNormalization`` and PyTorch's ``LayerNorm`` / ``GroupNorm``.

Tolerance 1e-5 (float32 against float64 references, as in ``test_batchnorm.py``).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from bnlab.config.layers import build_layer
from bnlab.errors import ConfigError
from bnlab.nn.layers import Flatten
from bnlab.nn.model import Sequential
from bnlab.nn.norms import GroupNorm, LayerNorm
from bnlab.nn.summary import summarize
from tests.nn import reference_norms as ref

TOL = 1e-5
FEATURES = 12


def data(seed: int = 0, rows: int = 7):
    rng = np.random.default_rng(seed)
    x = (rng.normal(2.0, 1.0, (rows, 1)) + rng.uniform(0.1, 3.0, (rows, FEATURES))
         * rng.standard_normal((rows, FEATURES))).astype(np.float32)
    gamma = rng.uniform(0.5, 2.0, FEATURES).astype(np.float32)
    beta = rng.normal(0.0, 1.0, FEATURES).astype(np.float32)
    return x, gamma, beta


@pytest.mark.parametrize("layer, groups", [(LayerNorm(), 1), (GroupNorm(groups=1), 1),
                                           (GroupNorm(groups=3), 3),
                                           (GroupNorm(groups=12, epsilon=1e-5), 12)],
                         ids=["layer", "group1", "group3", "group12"])
def test_matches_numpy_transcription_the_same_in_training_and_inference(layer, groups):
    x, gamma, beta = data()
    params = {"gamma": jnp.asarray(gamma), "beta": jnp.asarray(beta)}
    want = ref.group_norm(x, gamma.astype(np.float64), beta.astype(np.float64), layer.epsilon,
                          groups)
    for train in (True, False):
        y, state = layer.apply(params, {}, jnp.asarray(x), train=train)
        np.testing.assert_allclose(np.asarray(y, np.float64), want, rtol=TOL, atol=TOL)
        assert state == {}


def test_a_row_is_normalized_alone():
    x, gamma, beta = data()
    params = {"gamma": jnp.asarray(gamma), "beta": jnp.asarray(beta)}
    layer = GroupNorm(groups=4)
    whole, _ = layer.apply(params, {}, jnp.asarray(x), train=True)
    first, _ = layer.apply(params, {}, jnp.asarray(x[:1]), train=True)
    np.testing.assert_array_equal(whole[:1], first)


@pytest.mark.parametrize("groups", [None, 1, 4, 12])
def test_matches_keras(keras, groups):
    x, gamma, beta = data(seed=1)
    if groups is None:
        layer, theirs = LayerNorm(), keras.layers.LayerNormalization()
    else:
        layer, theirs = GroupNorm(groups=groups), keras.layers.GroupNormalization(groups=groups)
    theirs.build((None, FEATURES))
    assert theirs.epsilon == layer.epsilon  # the same defaults
    theirs.gamma.assign(gamma)
    theirs.beta.assign(beta)
    params = {"gamma": jnp.asarray(gamma), "beta": jnp.asarray(beta)}
    y, _ = layer.apply(params, {}, jnp.asarray(x), train=True)
    np.testing.assert_allclose(y, np.asarray(theirs(x, training=True)), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("groups", [None, 4])
def test_matches_pytorch(torch, groups):
    x, gamma, beta = data(seed=2)
    if groups is None:
        layer, theirs = LayerNorm(epsilon=1e-5), torch.nn.LayerNorm(FEATURES, eps=1e-5)
    else:
        layer, theirs = GroupNorm(groups=groups, epsilon=1e-5), torch.nn.GroupNorm(
            groups, FEATURES, eps=1e-5)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(gamma))
        theirs.bias.copy_(torch.from_numpy(beta))
    params = {"gamma": jnp.asarray(gamma), "beta": jnp.asarray(beta)}
    y, _ = layer.apply(params, {}, jnp.asarray(x), train=True)
    want = theirs(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(y, want, rtol=TOL, atol=TOL)


def test_groups_must_split_the_features_and_options_are_checked():
    with pytest.raises(ConfigError, match="5 groups do not split 12 features"):
        GroupNorm(groups=5).init(None, (FEATURES,))
    with pytest.raises(ConfigError, match="Flatten"):
        LayerNorm().init(None, (4, 3))
    with pytest.raises(ConfigError, match="epsilon"):
        LayerNorm(epsilon=0.0)
    assert isinstance(build_layer({"type": "layer_norm"}), LayerNorm)
    assert build_layer({"type": "group_norm", "groups": 4}).groups == 4


def test_summary_counts_gamma_beta_as_trainable_and_nothing_else():
    summary = summarize(Sequential((Flatten(), GroupNorm(groups=4)), input_shape=(3, 4)))
    assert (summary.trainable, summary.non_trainable) == (2 * FEATURES, 0)
    assert summary.layers[1].type_name == "GroupNormalization"
    assert [v.name for v in summary.normalization_variables()] == ["gamma", "beta"]
