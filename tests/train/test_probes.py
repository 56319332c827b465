"""What an epoch records (``train.probes``): activation statistics and Santurkar et al.'s
measures, checked against NumPy, closed forms and finite differences, and recorded inside the
compiled epoch exactly where a plain loop of the same steps would take them.

Tolerances: float64 for the measures' math (closed forms and by-hand gradients, 1e-10;
finite differences of step 1e-6, 1e-7); float32 where a compiled epoch is compared with a
Python loop of the same steps (1e-5 relative, as ``test_engine.py``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bnlab.errors import ConfigError
from bnlab.nn.layers import Dense
from bnlab.nn.model import Sequential
from bnlab.nn.zoo import get_model
from bnlab.train.batches import scale_pixels
from bnlab.train.engine import RunKeys, fixed, init_train_state, make_train_epoch
from bnlab.train.probes import (
    ProbePlan,
    activation_inputs,
    activation_statistics,
    beta_smoothness,
    internal_covariate_shift,
    kernel_layers,
    landscape,
    record_activations,
    tree_norm,
)
from tests.synthetic import tiny_model, tiny_splits


def test_activation_statistics_are_numpys_percentiles_extremes_mean_and_sd():
    values = np.random.default_rng(0).normal(2.0, 3.0, (37, 11)).astype(np.float32)
    layer, per_unit = activation_statistics(jnp.asarray(values), units=4)
    flat = values.astype(np.float64).ravel()
    want = [*np.percentile(flat, [15, 50, 85]), flat.min(), flat.max(), flat.mean(), flat.std()]
    np.testing.assert_allclose(layer, want, rtol=1e-5)
    np.testing.assert_allclose(per_unit, np.percentile(values[:, :4].astype(np.float64),
                                                       [15, 50, 85], axis=0).T, rtol=1e-5)
    _, all_units = activation_statistics(jnp.asarray(values), units=50)  # cut to 11
    assert all_units.shape == (11, 3)


@pytest.mark.parametrize(("name", "want"), [
    ("baseline", [("leaky_re_lu/input", "dense"), ("leaky_re_lu_1/input", "dense_1")]),
    ("bn_after", [("dense/pre_activation", "dense/pre_activation"),
                  ("dense_1/pre_activation", "dense_1/pre_activation")]),
    ("bn_before", [("activation/input", "batch_normalization_1"),
                   ("activation_1/input", "batch_normalization_2")]),
])
def test_activation_inputs_are_the_inputs_of_every_hidden_nonlinearity(name, want):
    # The notebook's models: what feeds each LeakyReLU / ReLU (in bn_before, the BatchNorm's
    # output, as in the paper's Figure 1 with BN); the output layer's softmax is left out.
    assert list(activation_inputs(get_model(name))) == want


@pytest.mark.slow
def test_a_conv_layers_units_are_its_channels_over_every_pixel_and_its_kernel_is_measured():
    """Figure 1's per-unit bands of a conv layer: each channel's percentiles over every pixel
    of every probe image; Santurkar et al.'s ICS covers its kernel."""
    model = get_model("cnn_bn_after")
    inputs = activation_inputs(model)
    assert inputs[:2] == (("conv2d/pre_activation", "conv2d/pre_activation"),
                          ("conv2d_1/pre_activation", "conv2d_1/pre_activation"))
    assert kernel_layers(model) == (1, 4, 8, 10)  # both convolutions and both Dense layers
    params, bn_state = jax.jit(model.init)(jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(1).random((6, 28, 28)), jnp.float32)
    records = jax.jit(functools.partial(record_activations, model, units=5))(params, bn_state,
                                                                              x)
    _, _, outputs = model.apply_with_intermediates(params, bn_state, x, train=True)
    values = np.asarray(outputs["conv2d/pre_activation"], np.float64)  # (6, 28, 28, 32)
    _, per_unit = records["conv2d/pre_activation"]
    want = np.percentile(values.reshape(-1, 32)[:, :5], [15, 50, 85], axis=0).T
    np.testing.assert_allclose(per_unit, want, rtol=1e-5, atol=1e-6)


def test_probe_plan_refuses_what_it_cannot_record():
    for bad in ({"every": -1}, {"rows": 1}, {"step_scales": ()}, {"step_scales": (0.0,)},
                {"units": 2.5}, {"measures_every": True}):
        with pytest.raises(ConfigError, match="probe"):
            ProbePlan(**bad)
    assert ProbePlan(every=7).probe_steps(15) == 3  # steps 0, 7, 14
    assert ProbePlan(measures_every=5).measure_steps(15) == 3  # steps 0, 5, 10


def two_layer_linear_loss(x, y):
    def loss(params):
        residual = x @ params[0]["kernel"] @ params[1]["kernel"] - y
        return 0.5 * jnp.mean(jnp.sum(residual**2, axis=1))
    return loss


def test_internal_covariate_shift_of_a_two_layer_linear_network_equals_numpy_by_hand():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(9, 5)), rng.normal(size=(9, 3))
    w1, w2, lr = rng.normal(size=(5, 4)), rng.normal(size=(4, 3)), 0.1

    def gradients(w1, w2):  # L = ½·mean‖x W1 W2 − y‖²
        residual = x @ w1 @ w2 - y
        return x.T @ residual @ w2.T / len(x), (x @ w1).T @ residual / len(x)

    g1, g2 = gradients(w1, w2)
    shifted_g2 = gradients(w1 - lr * g1, w2)[1]  # layer 2's gradient after layer 1's update
    with jax.enable_x64(True):
        params = ({"kernel": jnp.asarray(w1)}, {"kernel": jnp.asarray(w2)})
        updated = ({"kernel": jnp.asarray(w1 - lr * g1)}, {"kernel": jnp.asarray(w2 - lr * g2)})
        shift, cosine = internal_covariate_shift(two_layer_linear_loss(x, y), params, updated,
                                                 layers=(0, 1))
        shift, cosine = np.asarray(shift), np.asarray(cosine)
    # Nothing is below the first layer: no shift. The second's is the change by hand.
    np.testing.assert_allclose(shift, [0.0, np.linalg.norm(g2 - shifted_g2)], atol=1e-12,
                               rtol=1e-10)
    want_cosine = np.sum(g2 * shifted_g2) / np.linalg.norm(g2) / np.linalg.norm(shifted_g2)
    np.testing.assert_allclose(cosine, [1.0, want_cosine], rtol=1e-10)
    assert shift[1] > 1e-3  # a real shift, not a vacuous zero


def test_beta_smoothness_of_a_quadratic_is_its_curvature_along_the_gradient():
    # L(θ) = ½ θᵀAθ − bᵀθ: ∇L(θ) − ∇L(θ − ηg) = ηAg for every η, so β = ‖Ag‖/‖g‖, which is
    # the eigenvalue λ when g is an eigenvector (the curvature gᵀAg/gᵀg along g), and the loss
    # along g is L(θ) − η‖g‖² + ½η²·gᵀAg.
    rng = np.random.default_rng(2)
    basis, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    eigenvalues = np.array([0.5, 1.0, 2.0, 3.0, 5.0, 8.0])
    a = basis @ np.diag(eigenvalues) @ basis.T
    b = rng.normal(size=6)
    sizes = np.array([0.01, 0.1, 0.3])
    with jax.enable_x64(True):
        def loss(params):
            theta = params[0]["kernel"]
            return 0.5 * theta @ jnp.asarray(a) @ theta - jnp.asarray(b) @ theta

        for theta in (rng.normal(size=6), np.linalg.solve(a, b) + 0.7 * basis[:, 4]):
            params = ({"kernel": jnp.asarray(theta)},)
            g = a @ theta - b
            gradient = jax.grad(loss)(params)
            losses, changes = landscape(loss, params, gradient, jnp.asarray(sizes))
            beta = beta_smoothness(changes, tree_norm(gradient), jnp.asarray(sizes))
            np.testing.assert_allclose(changes, sizes * np.linalg.norm(a @ g), rtol=1e-10)
            np.testing.assert_allclose(beta, np.linalg.norm(a @ g) / np.linalg.norm(g),
                                       rtol=1e-10)
            value = 0.5 * theta @ a @ theta - b @ theta
            np.testing.assert_allclose(losses, value - sizes * (g @ g)
                                       + 0.5 * sizes**2 * (g @ a @ g), rtol=1e-10)
        # The second θ's gradient is 0.7·λ₄·v₄: an eigenvector, β = λ₄ = 5.
        np.testing.assert_allclose(beta, eigenvalues[4], rtol=1e-10)


@pytest.mark.slow
def test_gradient_predictiveness_equals_central_finite_differences():
    rng = np.random.default_rng(3)
    x, labels = rng.normal(size=(7, 3)), rng.integers(0, 2, 7)
    w1, w2 = rng.normal(size=(3, 4)), rng.normal(size=(4, 2))

    def numpy_loss(w1, w2):
        logits = np.tanh(x @ w1) @ w2
        logits = logits - logits.max(axis=1, keepdims=True)
        return np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(7), labels])

    def numeric_gradient(w1, w2, h=1e-6):
        flat = np.concatenate([w1.ravel(), w2.ravel()])
        grad = np.empty_like(flat)
        for i in range(flat.size):
            up, down = flat.copy(), flat.copy()
            up[i] += h
            down[i] -= h
            grad[i] = (numpy_loss(up[:12].reshape(3, 4), up[12:].reshape(4, 2))
                       - numpy_loss(down[:12].reshape(3, 4), down[12:].reshape(4, 2))) / (2 * h)
        return grad

    g = numeric_gradient(w1, w2)
    sizes = np.array([0.05, 0.5])
    want = [np.linalg.norm(g - numeric_gradient(w1 - s * g[:12].reshape(3, 4),
                                                w2 - s * g[12:].reshape(4, 2)))
            for s in sizes]
    with jax.enable_x64(True):
        def loss(params):
            logits = jnp.tanh(jnp.asarray(x) @ params[0]["kernel"]) @ params[1]["kernel"]
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        params = ({"kernel": jnp.asarray(w1)}, {"kernel": jnp.asarray(w2)})
        _, changes = landscape(loss, params, jax.grad(loss)(params), jnp.asarray(sizes))
    np.testing.assert_allclose(changes, want, rtol=1e-7)


@pytest.mark.slow
def test_a_probed_epoch_trains_the_same_numbers_and_records_each_probed_steps_state():
    # 70 rows at batch 8: 9 steps; statistics at steps 0, 2, 4, 6, 8 and measures at 0, 3,
    # 6, each on the state before that step, as a Python loop of the same steps takes them.
    splits = tiny_splits()
    model, optimizer = tiny_model(), optax.sgd(0.1)
    plan = ProbePlan(every=2, rows=12, units=3, measures_every=3, step_scales=(1.0, 3.0))
    keys = RunKeys.from_seed(5)
    state = init_train_state(model, optimizer, keys.init)
    shuffle_key, dropout_key = keys.epoch(0)
    args = ({}, True, splits.x_train, splits.y_train, shuffle_key, dropout_key)
    probed, metrics = jax.jit(make_train_epoch(fixed(model, optimizer), 70, 8, probe=plan,
                                               probe_images=splits.x_val[:12]))(state, *args)
    plain, plain_metrics = jax.jit(make_train_epoch(fixed(model, optimizer), 70, 8))(state, *args)
    for got, want in zip(jax.tree_util.tree_leaves(probed), jax.tree_util.tree_leaves(plain),
                         strict=True):
        np.testing.assert_array_equal(got, want)  # probes change nothing
    np.testing.assert_array_equal(metrics.step_loss, plain_metrics.step_loss)

    order = np.asarray(jax.random.permutation(shuffle_key, 70))
    probe_x = scale_pixels(jnp.asarray(splits.x_val[:12]))

    # One step of the loop, jitted (the same computation; op by op it takes seconds).
    @functools.partial(jax.jit, static_argnums=(5, 6))
    def reference_step(params, bn_state, opt_state, x, y, statistics, measured):
        def loss(p):
            logits, _ = model.apply(p, bn_state, x, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss)(params)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        recorded = {}
        if statistics:
            recorded["activations"] = record_activations(model, params, bn_state, probe_x,
                                                         units=3)
        if measured:
            shift, cosine = internal_covariate_shift(loss, params,
                                                     optax.apply_updates(params, updates),
                                                     kernel_layers(model))
            along, change = landscape(loss, params, grads, 0.1 * jnp.asarray([1.0, 3.0]))
            recorded["measures"] = {"ics": shift, "ics_cosine": cosine, "loss_along": along,
                                    "grad_change": change, "grad_norm": tree_norm(grads),
                                    "step_sizes": 0.1 * jnp.asarray([1.0, 3.0])}
        _, new_bn_state = model.apply(params, bn_state, x, train=True)
        return optax.apply_updates(params, updates), new_bn_state, new_opt_state, recorded

    params, bn_state, opt_state = state
    activations, measures = [], []
    for step, start in enumerate(range(0, 70, 8)):
        rows = order[start:start + 8]
        x, y = scale_pixels(jnp.asarray(splits.x_train[rows])), jnp.asarray(splits.y_train[rows])
        params, bn_state, opt_state, recorded = reference_step(
            params, bn_state, opt_state, x, y, step % 2 == 0, step % 3 == 0)
        activations += [recorded["activations"]] if "activations" in recorded else []
        measures += [recorded["measures"]] if "measures" in recorded else []

    recorded = metrics.probes
    assert set(recorded["activations"]) == {"dense/pre_activation"}
    layer, units = recorded["activations"]["dense/pre_activation"]
    assert layer.shape == (5, 7) and units.shape == (5, 3, 3)
    np.testing.assert_allclose(layer, [a["dense/pre_activation"][0] for a in activations],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(units, [a["dense/pre_activation"][1] for a in activations],
                               rtol=1e-5, atol=1e-6)
    for name in ("ics", "ics_cosine", "loss_along", "grad_change", "grad_norm", "step_sizes"):
        np.testing.assert_allclose(recorded["measures"][name], [m[name] for m in measures],
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    assert recorded["measures"]["ics"].shape == (3, 2)  # two Dense layers
    # Below the first Dense layer is the input BatchNorm, whose γ and β moved too.
    assert float(recorded["measures"]["ics"][0, 0]) > 0.0


def test_statistics_need_probe_images_and_a_dense_model_records_no_input():
    model = Sequential((Dense(3, activation="softmax"),), input_shape=(4,))
    assert activation_inputs(model) == ()
    with pytest.raises(ConfigError, match="probe_images"):
        make_train_epoch(fixed(tiny_model(), optax.sgd(0.1)), 70, 8, probe=ProbePlan(every=2))
