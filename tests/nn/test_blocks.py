"""Residual blocks (``nn.blocks``): the flat layers a block expands into, its sum computed by
hand from its layers, SkipInit's identity at initialization, gradients by finite
differences, and a residual network against the same network built with Keras's functional
API (names aside: Keras counts the same parameters and computes the same outputs, in
training and in inference)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from bnlab.config.layers import build_layer
from bnlab.errors import ConfigError, LayerInputError
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.blocks import Add, Branch, Residual, SkipInit
from bnlab.nn.conv import Conv2D
from bnlab.nn.layers import Activation, Dense, Reshape
from bnlab.nn.model import Sequential
from bnlab.nn.pooling import GlobalAveragePooling2D
from bnlab.nn.summary import summarize

TOL = 1e-5


def images(seed: int = 0, shape=(3, 8, 8)) -> jnp.ndarray:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def projection_net() -> Sequential:
    """A stem, a block with a strided projection shortcut, an identity block, a head."""
    return Sequential((
        Reshape((8, 8, 1)), Conv2D(4, 3, padding="same", use_bias=False), BatchNorm(),
        Activation("relu"),
        Residual(branch=(Conv2D(6, 3, strides=2, padding="same", use_bias=False), BatchNorm(),
                         Activation("relu"), Conv2D(6, 3, padding="same", use_bias=False),
                         BatchNorm()),
                 shortcut=(Conv2D(6, 1, strides=2, use_bias=False), BatchNorm())),
        Residual(branch=(Conv2D(6, 3, padding="same"), Activation("relu"))),
        GlobalAveragePooling2D(), Dense(10, activation="softmax")), input_shape=(8, 8))


def test_a_block_expands_into_flat_layers_that_read_the_right_outputs():
    model = projection_net()
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Reshape", "Conv2D", "BatchNorm", "Activation",
                     "Conv2D", "BatchNorm", "Activation", "Conv2D", "BatchNorm",  # branch 4–8
                     "Branch", "Conv2D", "BatchNorm", "Add", "Activation",  # shortcut 9–13
                     "Conv2D", "Activation", "Add", "Activation",  # identity block 14–17
                     "GlobalAveragePooling2D", "Dense"]
    assert model.layers[9] == Branch(3) and model.layers[12] == Add(8)
    assert model.layers[16] == Add(13)
    assert model.output_shapes[9] == (8, 8, 4) and model.output_shapes[12] == (4, 4, 6)
    rows = summarize(model).layers
    assert rows[9].type_label == "Branch, from activation"
    assert rows[12].type_label == "Add, + batch_normalization_2"


@functools.partial(jax.jit, static_argnums=(0, 4))
def run_layers(layers, params, state, x, train):
    """Apply plain layers in order (no graph): the by-hand computation of a block."""
    for layer, p, s in zip(layers, params, state, strict=True):
        x, _ = layer.apply(p, s, x, train=train)
    return x


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.slow
def test_the_network_computes_relu_of_branch_plus_shortcut(train):
    model = projection_net()
    params, state = jax.jit(model.init)(jax.random.key(0))
    x = images()
    y, new_state, outputs = jax.jit(functools.partial(model.apply_with_intermediates,
                                                      train=train))(params, state, x)
    layers = model.layers
    stem = outputs["activation"]
    branch = run_layers(layers[4:9], params[4:9], state[4:9], stem, train)
    shortcut = run_layers(layers[10:12], params[10:12], state[10:12], stem, train)
    block = jax.nn.relu(branch + shortcut)
    np.testing.assert_allclose(outputs["activation_2"], block, rtol=TOL, atol=TOL)
    second = jax.nn.relu(block + run_layers(layers[14:16], params[14:16], state[14:16], block,
                                            train))
    np.testing.assert_allclose(outputs["activation_4"], second, rtol=TOL, atol=TOL)
    assert y.shape == (3, 10)
    # Every BatchNorm of the blocks updated its own statistics in training, none in inference.
    for index in (5, 8, 11):
        changed = not np.array_equal(new_state[index]["moving_mean"],
                                     state[index]["moving_mean"])
        assert changed == train


def test_skip_init_starts_each_block_as_its_shortcut_and_learns_alpha():
    block = Residual(branch=(Conv2D(4, 3, padding="same"), Activation("relu")),
                     activation="linear", skip_init=True)
    model = Sequential((Reshape((8, 8, 1)), Conv2D(4, 1), block), input_shape=(8, 8))
    assert isinstance(model.layers[4], SkipInit)
    params, state = jax.jit(model.init)(jax.random.key(1))
    assert float(params[4]["alpha"]) == 0.0
    x = images(seed=1)
    y, _, outputs = jax.jit(functools.partial(model.apply_with_intermediates, train=True))(
        params, state, x)
    np.testing.assert_array_equal(y, outputs["conv2d"])  # the identity at initialization
    grad = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, state, x, train=True)[0])))(params)
    np.testing.assert_allclose(grad[4]["alpha"], jnp.sum(outputs["activation"]), rtol=1e-5)
    assert summarize(model).layers[4].params == 1


@pytest.mark.slow
def test_residual_gradients_match_finite_differences(float64):
    model = Sequential((Reshape((5, 5, 2)),
                        Residual(branch=(Conv2D(2, 3, padding="same"), BatchNorm(),
                                         Activation("tanh")), skip_init=True),
                        GlobalAveragePooling2D(), Dense(3)), input_shape=(5, 5, 2))
    params, state = model.init(jax.random.key(2))
    params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64) + 0.3, params)  # α ≠ 0
    x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 5, 5, 2)))

    def logits(params, x):
        return model.apply(params, state, x, train=True)[0]

    check_grads(logits, (params, x), order=1, modes=["rev"])


def keras_projection_net(keras):
    """``projection_net`` in Keras's functional API, and its weighted layers in the order of
    ours (the flat list's)."""
    layers = keras.layers
    weighted = []

    def made(layer):
        weighted.append(layer)
        return layer

    inputs = keras.Input((8, 8))
    x = layers.Reshape((8, 8, 1))(inputs)
    x = made(layers.Conv2D(4, 3, padding="same", use_bias=False))(x)
    x = layers.Activation("relu")(made(layers.BatchNormalization())(x))
    y = made(layers.Conv2D(6, 3, strides=2, padding="same", use_bias=False))(x)
    y = layers.Activation("relu")(made(layers.BatchNormalization())(y))
    y = made(layers.Conv2D(6, 3, padding="same", use_bias=False))(y)
    y = made(layers.BatchNormalization())(y)
    s = made(layers.Conv2D(6, 1, strides=2, use_bias=False))(x)
    s = made(layers.BatchNormalization())(s)
    x = layers.Activation("relu")(layers.Add()([y, s]))
    y = layers.Activation("relu")(made(layers.Conv2D(6, 3, padding="same"))(x))
    x = layers.Activation("relu")(layers.Add()([x, y]))
    x = layers.GlobalAveragePooling2D()(x)
    outputs = made(layers.Dense(10, activation="softmax"))(x)
    return keras.Model(inputs, outputs), weighted


@pytest.mark.slow
def test_a_residual_network_equals_keras_functional_in_training_and_inference(keras):
    keras.backend.clear_session()
    theirs, theirs_weighted = keras_projection_net(keras)
    model = projection_net()
    assert summarize(model).total == theirs.count_params()
    params, state = jax.jit(model.init)(jax.random.key(4))
    params, state = list(params), list(state)
    ours_weighted = [i for i, layer in enumerate(model.layers)
                     if isinstance(layer, Conv2D | BatchNorm | Dense)]
    rng = np.random.default_rng(5)
    for i, theirs_layer in zip(ours_weighted, theirs_weighted, strict=True):
        names = [w.path.rsplit("/", 1)[-1] for w in theirs_layer.weights]
        weights = [rng.normal(0.0, 0.3, w.shape).astype(np.float32)
                   for w in theirs_layer.weights]
        weights = [np.abs(w) + 0.5 if name in ("gamma", "moving_variance") else w
                   for w, name in zip(weights, names, strict=True)]
        theirs_layer.set_weights(weights)
        values = dict(zip(names, map(jnp.asarray, weights), strict=True))
        params[i] = {k: values[k] for k in params[i]}
        state[i] = {k: values[k] for k in state[i]}
    x = images(seed=6)
    for train in (False, True):  # inference first: Keras's training call moves its statistics
        y, _ = jax.jit(functools.partial(model.apply, train=train))(tuple(params), tuple(state),
                                                                     x)
        want = np.asarray(theirs(np.asarray(x), training=train))
        np.testing.assert_allclose(jax.nn.softmax(y), want, rtol=1e-5, atol=1e-6)


def test_blocks_from_a_file_and_their_errors():
    spec = {"type": "residual", "branch": [{"type": "conv2d", "filters": 4, "kernel_size": 3,
                                            "padding": "same"}, {"type": "batch_norm"}],
            "shortcut": [{"type": "conv2d", "filters": 4, "kernel_size": 1}],
            "skip_init": True}
    assert build_layer(spec) == Residual(branch=(Conv2D(4, 3, padding="same"), BatchNorm()),
                                         shortcut=(Conv2D(4, 1),), skip_init=True)
    with pytest.raises(ConfigError, match=r"branch\[1\]: batch_norm layer has no option"):
        build_layer({"type": "residual", "branch": [spec["branch"][0],
                                                    {"type": "batch_norm", "size": 3}]})
    with pytest.raises(ConfigError, match="branch must be an array of layer tables"):
        build_layer({"type": "residual", "branch": "conv2d"})
    with pytest.raises(ConfigError, match="at least one layer in its branch"):
        build_layer({"type": "residual", "branch": []})
    mismatch = Sequential((Reshape((8, 8, 1)), Residual(branch=(Conv2D(4, 3, padding="same"),))),
                          input_shape=(8, 8))
    with pytest.raises(LayerInputError, match=r"different shapes, \(8, 8, 4\) and \(8, 8, 1\); "
                                              r"give the residual block a shortcut") as err:
        _ = mismatch.output_shapes
    assert err.value.index == 2
    with pytest.raises(ConfigError, match="reads layer 3, which is not an earlier layer"):
        Sequential((Reshape((8, 8, 1)), Add(3)), input_shape=(8, 8))


@pytest.mark.parametrize("norm", ["bn", "gn", "skipinit"])
@pytest.mark.slow
def test_the_resnet_presets_models_count_what_keras_counts(keras, norm):
    """The zoo's residual networks (nn/zoo.py) against the same network in Keras's
    functional API: the same parameters (SkipInit's α, one per block, has no Keras layer:
    it is counted apart)."""
    from bnlab.nn.zoo import get_model

    keras.backend.clear_session()
    layers = keras.layers

    def normalized(x, filters, strides=1, kernel=3):
        x = layers.Conv2D(filters, kernel, strides=strides, padding="same",
                          use_bias=norm == "skipinit")(x)
        if norm == "bn":
            return layers.BatchNormalization()(x)
        return layers.GroupNormalization(groups=4)(x) if norm == "gn" else x

    inputs = keras.Input((28, 28))
    x = layers.Activation("relu")(normalized(layers.Reshape((28, 28, 1))(inputs), 16))
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(2):
            strides = 2 if stage > 0 and block == 0 else 1
            y = normalized(layers.Activation("relu")(normalized(x, filters, strides)), filters)
            shortcut = normalized(x, filters, strides, kernel=1) if strides > 1 else x
            x = layers.Activation("relu")(layers.Add()([y, shortcut]))
    outputs = layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    theirs = keras.Model(inputs, outputs)
    summary = summarize(get_model(f"resnet_{norm}"))
    alphas = 6 if norm == "skipinit" else 0
    assert summary.total == theirs.count_params() + alphas
    assert summary.non_trainable == sum(int(np.prod(w.shape))
                                        for w in theirs.non_trainable_weights)
