"""BatchNorm folded into Dense layers (``nn.fold``): the folded model's inference outputs
equal the original's for the notebook's three models and for random layer stacks.

Tolerance: logits of magnitude ≲ 30 through three float32 products of ≤ 784 terms differ by
float32 rounding of the folded weights (≈ 6e-8 relative each) and of the sums: ≲ 1e-5
relative, so rtol = atol = 1e-5 holds with margin where an unfolded BN (a wrong s or t) is
off by O(1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.fold import fold_batchnorm
from bnlab.nn.layers import Activation, Dense, Dropout, Flatten, LeakyReLU
from bnlab.nn.model import Sequential
from bnlab.nn.norms import BatchRenorm, LayerNorm, NoisyBatchNorm
from bnlab.nn.summary import summarize
from bnlab.nn.zoo import get_model

TOL = 1e-5


def trained_like(model: Sequential, seed: int):
    """Parameters and moving statistics far from their initial values (γ ≠ 1, β ≠ 0,
    μ ≠ 0, σ² ≠ 1), so that a fold that ignored any of them would show."""
    params, state = model.init(jax.random.key(seed))
    rng = np.random.default_rng(seed)

    def moved(a):  # kernels by a third of their own spread; γ, β, biases by 0.3
        spread = 0.3 * float(np.std(a)) if a.ndim == 2 else 0.3
        return a + spread * rng.standard_normal(a.shape).astype(np.float32)

    params = jax.tree_util.tree_map(moved, params)
    state = tuple({k: (jnp.asarray(rng.uniform(0.2, 3.0, v.shape), jnp.float32)
                       if k == "moving_variance" else
                       v + jnp.asarray(rng.normal(0, 0.5, v.shape), jnp.float32)
                       if k == "moving_mean" else v) for k, v in s.items()} for s in state)
    return params, state


def images(seed: int, shape=(28, 28), rows=64):
    return jax.random.uniform(jax.random.key(seed), (rows, *shape))


@pytest.mark.parametrize("name", ["baseline", "bn_after", "bn_before"])
def test_the_notebooks_models_fold_to_a_plain_mlp_with_the_same_outputs(name):
    model = get_model(name)
    params, state = trained_like(model, 1)
    folded = fold_batchnorm(model, params, state)
    x = images(2)
    want, _ = model.apply(params, state, x, train=False)
    got, _ = folded.model.apply(folded.params, folded.bn_state, x, train=False)
    np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL)
    assert not any(isinstance(layer, BatchNorm) for layer in folded.model.layers)
    assert folded.kept == ()
    # A plain MLP: the baseline's 784-300-100-10 count, whatever the BN placement.
    assert summarize(folded.model).total == 266_610
    directions = {direction for _, _, direction in folded.folds}
    assert directions == {"baseline": set(), "bn_after": {"forward"},
                          "bn_before": {"forward", "backward"}}[name]


LAYER_CHOICES = (
    lambda r: Dense(int(r.integers(3, 9)), activation=str(r.choice(["linear", "relu", "tanh"])),
                    use_bias=bool(r.integers(2))),
    lambda r: BatchNorm(epsilon=float(r.choice([1e-3, 1e-5]))),
    lambda r: NoisyBatchNorm(),
    lambda r: BatchRenorm(),
    lambda r: Activation("relu"),
    lambda r: LeakyReLU(),
    lambda r: Dropout(0.3),
    lambda r: LayerNorm(),
)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.slow
def test_random_stacks_fold_to_the_same_outputs(seed):
    rng = np.random.default_rng(seed)
    body = [LAYER_CHOICES[int(rng.integers(len(LAYER_CHOICES)))](rng)
            for _ in range(int(rng.integers(2, 8)))]
    model = Sequential((Flatten(), *body, Dense(4)), input_shape=(2, 3))
    params, state = trained_like(model, seed)
    folded = fold_batchnorm(model, params, state)
    x = images(seed, shape=(2, 3), rows=16) * 4.0 - 2.0
    want, _ = model.apply(params, state, x, train=False)
    got, _ = folded.model.apply(folded.params, folded.bn_state, x, train=False)
    np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL)
    batchnorms = sum(isinstance(layer, BatchNorm) for layer in model.layers)
    left = [layer for layer in folded.model.layers if isinstance(layer, BatchNorm)]
    assert len(folded.folds) + len(left) == batchnorms
    assert not any(isinstance(layer, Dropout) for layer in folded.model.layers)


def test_a_bn_between_two_nonlinearities_is_kept_and_said_so():
    model = Sequential((Flatten(), Dense(5, activation="relu"), BatchNorm(), Activation("tanh"),
                        Dense(3)), input_shape=(2, 3))
    params, state = trained_like(model, 3)
    folded = fold_batchnorm(model, params, state)
    assert folded.kept == (("batch_normalization", "a non-linear layer on both sides: no Dense "
                                                   "to fold into"),)
    x = images(4, shape=(2, 3), rows=8)
    np.testing.assert_allclose(folded.model.apply(folded.params, folded.bn_state, x,
                                                  train=False)[0],
                               model.apply(params, state, x, train=False)[0], rtol=TOL,
                               atol=TOL)
