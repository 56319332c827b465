"""Conv2D, pooling and Reshape (``nn.conv``, ``nn.pooling``) against NumPy float64
transcriptions (``reference_conv``), finite differences, PyTorch and Keras 3.

Tolerance 1e-5, as in ``test_batchnorm.py``: float32 against float64 references on values of
order 1 that are sums of at most 5·3·4 = 60 products, each rounded at 6e-8 relative, so honest
differences are ≲ 1e-6; a wrong padding split, stride or transposed kernel moves outputs by
order 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from bnlab.config.layers import build_layer
from bnlab.errors import ConfigError, LayerInputError
from bnlab.nn.conv import Conv2D
from bnlab.nn.layers import Dense, Flatten, Reshape
from bnlab.nn.model import Sequential
from bnlab.nn.pooling import AveragePooling2D, GlobalAveragePooling2D, MaxPool2D
from bnlab.nn.summary import summarize
from tests.nn import reference_conv as ref

TOL = 1e-5
# (kernel_size, strides, padding): odd and even windows, strides that do not divide the
# image (7 × 6), so that "same" pads unevenly and "valid" drops edge rows.
CONVOLUTIONS = [(3, 1, "valid"), (3, 1, "same"), (3, 2, "same"), ((5, 3), (2, 1), "valid"),
                (1, 2, "valid"), (4, 2, "same"), ((2, 3), (3, 2), "same")]


def images(seed: int = 0, shape=(3, 7, 6, 4)) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, shape).astype(np.float32)


def conv_params(layer: Conv2D, channels: int, seed: int = 1) -> dict:
    """Non-zero kernel and bias (a zero bias would hide a bias added on the wrong axis)."""
    rng = np.random.default_rng(seed)
    params = {"kernel": rng.normal(0.0, 0.3, (*layer.kernel_size, channels, layer.filters))
              .astype(np.float32)}
    if layer.use_bias:
        params["bias"] = rng.normal(0.0, 1.0, layer.filters).astype(np.float32)
    return params


def ids(case) -> str:
    kernel, strides, padding = case
    return f"k{kernel}-s{strides}-{padding}".replace(" ", "")


@pytest.mark.parametrize("case", CONVOLUTIONS, ids=ids)
def test_conv_matches_the_numpy_transcription_and_its_output_shape(case):
    kernel, strides, padding = case
    layer = Conv2D(5, kernel, strides=strides, padding=padding)
    x = images()
    params = conv_params(layer, 4)
    y, state = layer.apply(params, {}, jnp.asarray(x), train=True)
    want = ref.conv2d(x, params["kernel"], params["bias"], layer.strides, padding)
    assert y.shape[1:] == layer.output_shape(x.shape[1:]) == want.shape[1:]
    np.testing.assert_allclose(np.asarray(y, np.float64), want, rtol=TOL, atol=TOL)
    assert state == {}


def test_conv_activation_and_no_bias():
    layer = Conv2D(3, 3, padding="same", activation="relu", use_bias=False)
    x = images(seed=2)
    params = conv_params(layer, 4)
    assert set(params) == {"kernel"}
    y, _ = layer.apply(params, {}, jnp.asarray(x), train=False)
    want = np.maximum(ref.conv2d(x, params["kernel"], None, (1, 1), "same"), 0.0)
    np.testing.assert_allclose(np.asarray(y, np.float64), want, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("case", [(3, 2, "same"), ((2, 3), 1, "valid"), (4, 3, "valid")],
                         ids=ids)
def test_conv_gradients_match_finite_differences(float64, case):
    """Including strides that leave the last rows unread (4 × 4 windows, stride 3, on 5 × 4):
    those inputs get no gradient, and the kernel gradient's correlation is cut to 4 × 4."""
    kernel, strides, padding = case
    layer = Conv2D(2, kernel, strides=strides, padding=padding)
    x = jnp.asarray(images(seed=3, shape=(2, 5, 4, 3)), jnp.float64)
    params = {k: jnp.asarray(v, jnp.float64) for k, v in conv_params(layer, 3).items()}

    def output(x, kernel, bias):
        return layer.apply({"kernel": kernel, "bias": bias}, {}, x, train=True)[0]

    check_grads(output, (x, params["kernel"], params["bias"]), order=1, modes=["rev"])


def torch_same_padding(torch, x, layer: Conv2D):
    """``x`` (NCHW) padded by TensorFlow's rule: PyTorch has no strided "same"."""
    if layer.padding == "valid":
        return x
    (top, bottom), (left, right) = (
        ref.same_padding(x.shape[2 + k], layer.kernel_size[k], layer.strides[k]) for k in (0, 1))
    return torch.nn.functional.pad(x, (left, right, top, bottom))


@pytest.mark.parametrize("case", [(3, 1, "same"), (3, 2, "same"), ((5, 3), (2, 1), "valid"),
                                  (3, 2, "valid")], ids=ids)
def test_conv_equals_pytorch_conv2d_forward_and_backward(torch, case):
    """PyTorch's NCHW / OIHW layout, converted: the outputs and the gradients of a weighted
    sum of them with respect to the input, kernel and bias (bnlab's own gradient rules,
    ``nn.conv.convolve``; k3-s2-valid leaves the last column of the 7 × 6 images unread)."""
    kernel, strides, padding = case
    layer = Conv2D(5, kernel, strides=strides, padding=padding)
    x = images(seed=4)
    params = conv_params(layer, 4)
    upstream = np.random.default_rng(5).normal(
        size=(x.shape[0], *layer.output_shape(x.shape[1:]))).astype(np.float32)

    def loss(x, params):
        y, _ = layer.apply(params, {}, x, train=True)
        return jnp.sum(y * upstream)

    ours = jax.grad(loss, argnums=(0, 1))(jnp.asarray(x), {k: jnp.asarray(v)
                                                           for k, v in params.items()})
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    weight = torch.tensor(params["kernel"].transpose(3, 2, 0, 1), requires_grad=True)
    bias = torch.tensor(params["bias"], requires_grad=True)
    ty = torch.nn.functional.conv2d(torch_same_padding(torch, tx, layer), weight, bias,
                                    stride=layer.strides)
    (ty * torch.from_numpy(upstream.transpose(0, 3, 1, 2))).sum().backward()
    y, _ = layer.apply(params, {}, jnp.asarray(x), train=True)
    np.testing.assert_allclose(y, ty.detach().numpy().transpose(0, 2, 3, 1), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(ours[0], tx.grad.numpy().transpose(0, 2, 3, 1), rtol=TOL,
                               atol=TOL)
    np.testing.assert_allclose(ours[1]["kernel"], weight.grad.numpy().transpose(2, 3, 1, 0),
                               rtol=TOL, atol=1e-4)  # sums over 3 × 4 × 3 positions
    np.testing.assert_allclose(ours[1]["bias"], bias.grad.numpy(), rtol=TOL, atol=1e-4)


@pytest.mark.parametrize("case", [(3, 2, "same"), (4, 2, "same"), ((5, 3), (2, 1), "valid")],
                         ids=ids)
def test_conv_equals_keras_conv2d_and_counts_its_parameters(keras, case):
    kernel, strides, padding = case
    layer = Conv2D(5, kernel, strides=strides, padding=padding)
    theirs = keras.layers.Conv2D(5, kernel, strides=strides, padding=padding)
    x = images(seed=6)
    theirs.build(x.shape)
    params = conv_params(layer, 4)
    theirs.set_weights([params["kernel"], params["bias"]])
    y, _ = layer.apply(params, {}, jnp.asarray(x), train=True)
    np.testing.assert_allclose(y, np.asarray(theirs(x)), rtol=TOL, atol=TOL)
    assert theirs.count_params() == params["kernel"].size + params["bias"].size


def test_conv_kernels_are_drawn_with_keras_fans(keras):
    """Glorot-uniform bounds √(6 / (fan_in + fan_out)) with fan_in = kh·kw·in and fan_out =
    kh·kw·out, as Keras draws them: the same bound and spread as Keras's own draw."""
    layer = Conv2D(64, (3, 5))
    params, _, _ = layer.init(jax.random.key(0), (9, 9, 32))
    kernel = np.asarray(params["kernel"])
    theirs = np.asarray(keras.initializers.GlorotUniform(seed=0)(kernel.shape))
    limit = np.sqrt(6.0 / (15 * 32 + 15 * 64))
    assert np.abs(kernel).max() <= limit and np.abs(theirs).max() <= limit
    # 30,720 uniform draws: their sd is limit/√3 within 1.5 % (about 4 standard errors)
    np.testing.assert_allclose([kernel.std(), theirs.std()], limit / np.sqrt(3), rtol=0.015)


# tiled windows (strides = pool size; 7 × 6 inputs: "valid" cuts a row, "same" pads one) take
# the reshape path, the others lax.reduce_window
POOLS = [(MaxPool2D, 2, None, "valid"), (MaxPool2D, 2, None, "same"),
         (MaxPool2D, (3, 2), None, "same"), (MaxPool2D, 3, 2, "same"),
         (MaxPool2D, (2, 3), 1, "valid"),
         (AveragePooling2D, 2, None, "valid"), (AveragePooling2D, 2, 2, "same"),
         (AveragePooling2D, 3, 2, "same"), (AveragePooling2D, (3, 2), (2, 2), "same")]


def pool_id(case) -> str:
    kind, pool, strides, padding = case
    return f"{kind.__name__}-p{pool}-s{strides}-{padding}".replace(" ", "")


@pytest.mark.parametrize("case", POOLS, ids=pool_id)
def test_pooling_matches_the_numpy_transcription(case):
    kind, pool, strides, padding = case
    layer = kind(pool, strides, padding)
    x = images(seed=7)
    y, state = layer.apply({}, {}, jnp.asarray(x), train=True)
    want = ref.pool2d(x, layer.pool_size, layer.strides, padding,
                      "max" if kind is MaxPool2D else "mean")
    assert y.shape[1:] == layer.output_shape(x.shape[1:]) == want.shape[1:]
    np.testing.assert_allclose(np.asarray(y, np.float64), want, rtol=TOL, atol=TOL)
    assert state == {}


@pytest.mark.parametrize("case", POOLS, ids=pool_id)
def test_pooling_equals_keras(keras, case):
    kind, pool, strides, padding = case
    layer = kind(pool, strides, padding)
    theirs = (keras.layers.MaxPooling2D if kind is MaxPool2D else keras.layers.AveragePooling2D)(
        pool, strides, padding)
    x = images(seed=8)
    y, _ = layer.apply({}, {}, jnp.asarray(x), train=True)
    np.testing.assert_allclose(y, np.asarray(theirs(x)), rtol=TOL, atol=TOL)


def test_pooling_gradients_equal_pytorch(torch):
    """Max pooling sends the gradient to each window's maximum; average pooling spreads it."""
    x = images(seed=9)
    upstream = np.random.default_rng(10).normal(size=(3, 3, 3, 4)).astype(np.float32)
    for layer, theirs in [(MaxPool2D(2), torch.nn.MaxPool2d(2)),
                          (AveragePooling2D(2), torch.nn.AvgPool2d(2))]:
        grad = jax.grad(lambda x, layer=layer: jnp.sum(
            layer.apply({}, {}, x, train=True)[0] * upstream))(jnp.asarray(x))
        tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
        (theirs(tx) * torch.from_numpy(upstream.transpose(0, 3, 1, 2))).sum().backward()
        np.testing.assert_allclose(grad, tx.grad.numpy().transpose(0, 2, 3, 1), rtol=TOL,
                                   atol=TOL)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_tiled_max_pooling_shares_a_tied_gradient(torch, padding):
    """Pixels drawn from {0, 1, 2} tie in most windows. Untied windows send the gradient to
    their maximum as PyTorch does; a tie's gradient is shared equally by the tiled path (JAX's
    rule) and goes to the first maximal pixel on the general path (``select_and_scatter``) and
    in PyTorch: per window the same total either way."""
    x = np.random.default_rng(12).integers(0, 3, (3, 7, 6, 4)).astype(np.float32)
    layer = MaxPool2D(2, padding=padding)
    upstream = np.random.default_rng(13).normal(
        size=(3, *layer.output_shape(x.shape[1:]))).astype(np.float32)
    tiled, general = (np.asarray(jax.grad(lambda x, f=f: jnp.sum(f(x) * upstream))(
        jnp.asarray(x))) for f in (lambda x: layer.apply({}, {}, x, train=True)[0],
                                   lambda x: layer.reduce_windows(x, -jnp.inf, jax.lax.max)))
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    ceil = padding == "same"  # 7 rows → 4 windows, the last one hanging over by one row
    (torch.nn.MaxPool2d(2, ceil_mode=ceil)(tx)
     * torch.from_numpy(upstream.transpose(0, 3, 1, 2))).sum().backward()
    np.testing.assert_array_equal(general, tx.grad.numpy().transpose(0, 2, 3, 1))

    def per_window(grad):
        return np.asarray(layer.tiles(jnp.asarray(grad), 0.0).sum(axis=(2, 4)))

    counts = np.asarray(layer.tiles(jnp.asarray(x), -np.inf) == layer.apply(
        {}, {}, jnp.asarray(x), train=True)[0][:, :, None, :, None, :]).sum(axis=(2, 4))
    assert (counts > 1).mean() > 0.5  # most windows tie
    np.testing.assert_allclose(per_window(tiled), upstream, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(per_window(general), upstream, rtol=1e-6, atol=1e-6)
    untied = np.zeros(x.shape, bool)  # the pixels of untied windows
    spread = np.repeat(np.repeat(counts == 1, 2, axis=1), 2, axis=2)[:, :7]
    untied[:, :spread.shape[1]] = spread
    np.testing.assert_array_equal(tiled[untied], general[untied])


def test_relu_then_max_pooling_trains_alike_under_either_tie_rule():
    """Conv → ReLU → BN → MaxPool (the cnn preset's block): ReLU zeros make whole windows tie
    (at BN(0)), yet every parameter gradient equals the one through ``select_and_scatter``
    (first position), because the ReLU drops the gradient of its zeros either way."""
    from bnlab.nn.batchnorm import BatchNorm

    conv, bn, pool = Conv2D(4, 3, padding="same", activation="relu"), BatchNorm(), MaxPool2D(2)
    x = jnp.asarray(images(seed=14, shape=(4, 8, 8, 2)))
    params = {"conv": conv_params(conv, 2), "bn": bn.init(jax.random.key(0), (8, 8, 4))[0]}
    params["conv"]["bias"] = params["conv"]["bias"] - 1.0  # most pre-activations negative
    state = bn.init(jax.random.key(0), (8, 8, 4))[1]
    upstream = jnp.asarray(np.random.default_rng(15).normal(size=(4, 4, 4, 4)), jnp.float32)

    def loss(params, pooled):
        z = bn.apply(params["bn"], state, conv.apply(params["conv"], {}, x, train=True)[0],
                     train=True)[0]
        return jnp.sum(pooled(z) * upstream)

    tiled = jax.grad(loss)(params, lambda z: pool.apply({}, {}, z, train=True)[0])
    general = jax.grad(loss)(params, lambda z: pool.reduce_windows(z, -jnp.inf, jax.lax.max))
    z = conv.apply(params["conv"], {}, x, train=True)[0]
    assert float(jnp.mean(pool.tiles(z, -1.0).max(axis=(2, 4)) == 0.0)) > 0.2  # tied windows
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 tiled, general)


def test_global_average_pooling_and_reshape():
    x = images(seed=11)
    y, _ = GlobalAveragePooling2D().apply({}, {}, jnp.asarray(x), train=True)
    np.testing.assert_allclose(y, x.astype(np.float64).mean(axis=(1, 2)), rtol=TOL, atol=TOL)
    flat = jnp.asarray(x.reshape(3, -1))
    back, _ = Reshape((7, 6, 4)).apply({}, {}, flat, train=True)
    np.testing.assert_array_equal(back, x)


def test_shapes_that_cannot_be_taken_are_one_line_naming_the_fix():
    with pytest.raises(ConfigError, match=r"Conv2D expects images .*Reshape layer"):
        Conv2D(4, 3).output_shape((784,))
    with pytest.raises(ConfigError, match=r"5×5 window does not fit in a 4×4 input"):
        Conv2D(4, 5).output_shape((4, 4, 1))
    with pytest.raises(ConfigError, match=r"cannot make 784 values .* into \(28, 28, 2\)"):
        Reshape((28, 28, 2)).output_shape((28, 28))
    with pytest.raises(LayerInputError, match=r"MaxPool2D expects images") as err:
        _ = Sequential((Flatten(), MaxPool2D())).output_shapes
    assert err.value.index == 1
    for bad, message in [({"filters": 0, "kernel_size": 3}, "filters must be a positive"),
                         ({"filters": 4, "kernel_size": [3, 0]}, "kernel_size must be"),
                         ({"filters": 4, "kernel_size": 3, "padding": "full"}, "one of"),
                         ({"filters": 4, "kernel_size": 3, "strides": [1, 2, 3]}, "array of 2")]:
        with pytest.raises(ConfigError, match=message):
            build_layer({"type": "conv2d", **bad})


def test_layers_from_a_file_are_the_layers_from_python():
    assert build_layer({"type": "conv2d", "filters": 8, "kernel_size": [3, 5], "strides": 2,
                        "padding": "same", "use_bias": False}) == Conv2D(
        8, (3, 5), strides=(2, 2), padding="same", use_bias=False)
    assert build_layer({"type": "max_pool2d", "pool_size": 3}) == MaxPool2D(3, 3)
    assert build_layer({"type": "average_pool2d"}) == AveragePooling2D(2, 2)
    assert build_layer({"type": "reshape", "target_shape": [28, 28, 1]}) == Reshape((28, 28, 1))
    assert build_layer({"type": "global_average_pool2d"}) == GlobalAveragePooling2D()


def small_cnn(keras=None):
    """A 2-conv network (the cnn preset's shape, small) in bnlab and, given ``keras``, in
    Keras with the same layers."""
    from bnlab.nn.batchnorm import BatchNorm
    from bnlab.nn.layers import Activation
    from bnlab.nn.norms import GroupNorm

    ours = Sequential((Reshape((28, 28, 1)), Conv2D(8, 3, padding="same", use_bias=False),
                       BatchNorm(), Activation("relu"), MaxPool2D(),
                       Conv2D(16, 3), GroupNorm(groups=4), Activation("relu"),
                       AveragePooling2D(), Flatten(), Dense(10, activation="softmax")))
    if keras is None:
        return ours
    layers = keras.layers
    theirs = keras.Sequential([
        keras.Input((28, 28)), layers.Reshape((28, 28, 1)),
        layers.Conv2D(8, 3, padding="same", use_bias=False), layers.BatchNormalization(),
        layers.Activation("relu"), layers.MaxPooling2D(), layers.Conv2D(16, 3),
        layers.GroupNormalization(groups=4), layers.Activation("relu"),
        layers.AveragePooling2D(2), layers.Flatten(), layers.Dense(10, activation="softmax")])
    return ours, theirs


@pytest.mark.slow
def test_a_cnn_summary_has_keras_names_shapes_and_parameter_counts(keras):
    keras.backend.clear_session()
    ours, theirs = small_cnn(keras)
    summary = summarize(ours)
    assert [row.name for row in summary.layers] == [layer.name for layer in theirs.layers]
    assert [row.output_shape for row in summary.layers] == [
        tuple(layer.output.shape) for layer in theirs.layers]
    assert [row.params for row in summary.layers] == [
        layer.count_params() for layer in theirs.layers]
    assert (summary.total, summary.non_trainable) == (
        theirs.count_params(), sum(int(np.prod(w.shape)) for w in theirs.non_trainable_weights))
    assert ours.weight_bound >= summary.total


@pytest.mark.parametrize("name", ["cnn", "cnn_bn_after", "cnn_bn_before"])
def test_the_cnn_presets_models_have_the_keras_counts_of_the_same_layers(keras, name):
    """The zoo's conv nets (nn/zoo.py) as Keras Sequential models: the same names, output
    shapes and parameters per layer."""
    from bnlab.nn.zoo import get_model

    keras.backend.clear_session()
    layers = keras.layers
    def block(layer, with_relu):
        if name == "cnn_bn_before":
            return [layer(use_bias=False), layers.BatchNormalization(), layers.Activation("relu")]
        return [with_relu(), *([layers.BatchNormalization()] if name == "cnn_bn_after" else [])]

    stack = [keras.Input((28, 28)), layers.Reshape((28, 28, 1))]
    for filters in (32, 64):
        stack += [*block(lambda filters=filters, **o: layers.Conv2D(filters, 3, padding="same",
                                                                    **o),
                         lambda filters=filters: layers.Conv2D(filters, 3, padding="same",
                                                               activation="relu")),
                  layers.MaxPooling2D()]
    stack += [layers.Flatten(), *block(lambda **o: layers.Dense(128, **o),
                                       lambda: layers.Dense(128, activation="relu"))]
    theirs = keras.Sequential([*stack, layers.Dense(10, activation="softmax")])
    summary = summarize(get_model(name))
    assert [(row.name, row.output_shape, row.params) for row in summary.layers] == [
        (layer.name, tuple(layer.output.shape), layer.count_params()) for layer in theirs.layers]


@pytest.mark.parametrize("case", CONVOLUTIONS, ids=ids)
def test_convolve_gradients_equal_jaxs_own_transposition(case):
    """``nn.conv.convolve`` writes its gradients out (fast inside ``lax.scan``); they are the
    gradients JAX derives for ``lax.conv_general_dilated`` itself."""
    from bnlab.nn.conv import LAYOUT, convolve, padding_pair

    kernel_size, strides, padding = case
    layer = Conv2D(5, kernel_size, strides=strides, padding=padding)
    x = jnp.asarray(images(seed=12))
    kernel = jnp.asarray(conv_params(layer, 4)["kernel"])
    pads = tuple(padding_pair(size, window, step, padding) for size, window, step
                 in zip(x.shape[1:3], layer.kernel_size, layer.strides, strict=True))
    ours, ours_vjp = jax.vjp(lambda x, k: convolve(x, k, layer.strides, pads), x, kernel)
    theirs, theirs_vjp = jax.vjp(lambda x, k: jax.lax.conv_general_dilated(
        x, k, layer.strides, pads, dimension_numbers=LAYOUT, precision="highest"), x, kernel)
    np.testing.assert_array_equal(ours, theirs)
    upstream = jnp.asarray(np.random.default_rng(13).normal(size=ours.shape), jnp.float32)
    for got, want in zip(ours_vjp(upstream), theirs_vjp(upstream), strict=True):
        np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL)
