"""Normalization over images ``(batch, height, width, channels)``: the BatchNorm family per
channel over (N, H, W), LayerNorm and GroupNorm per image, against the row references of
``reference_bn`` / ``reference_norms`` applied to the images' pixel rows (BatchNorm over
(N, H, W) *is* BatchNorm over the N·H·W pixels, Ioffe & Szegedy §3.2), Wu & He's eq. 1
(``reference_conv.group_norm_images``), PyTorch's ``BatchNorm2d`` / ``GroupNorm`` on NCHW and
Keras's ``BatchNormalization`` / ``GroupNormalization`` on NHWC, over several training steps
and in inference.

Tolerance 1e-5 (float32 against float64, as in ``test_batchnorm.py``; the statistics here are
sums of up to 96 values, each rounding at 6e-8 relative).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from bnlab.errors import ConfigError
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.norms import BatchRenorm, GhostBatchNorm, GroupNorm, LayerNorm, NoisyBatchNorm
from tests.nn import reference_bn as ref
from tests.nn import reference_conv
from tests.nn import reference_norms as ref_norms

TOL = 1e-5
SHAPE = (4, 3, 2, 5)  # 4 images of 3 × 2 pixels, 5 channels: m = 24 values per channel
CHANNEL_SCALES = np.array([0.05, 0.3, 1.0, 2.0, 3.0])
PRESETS = {"keras": BatchNorm.keras(), "pytorch": BatchNorm.pytorch(),
           "flax": BatchNorm.flax(), "unbiased": BatchNorm(stored_variance="unbiased")}


def image_batches(seed: int, k: int, shape=SHAPE) -> list[np.ndarray]:
    """``k`` float32 image batches, each channel with its own offset and spread."""
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    scales = np.resize(CHANNEL_SCALES, channels)
    return [(scales * rng.normal(0.0, 2.0, channels) + scales * rng.uniform(0.5, 1.5, channels)
             * rng.standard_normal(shape)).astype(np.float32) for _ in range(k)]


def affine(seed: int, channels: int = SHAPE[-1]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 2.0, channels).astype(np.float32),
            rng.normal(0.0, 1.0, channels).astype(np.float32))


def params_of(gamma, beta) -> dict:
    return {"gamma": jnp.asarray(gamma), "beta": jnp.asarray(beta)}


def assert_close(actual, expected, tol: float = TOL) -> None:
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol, atol=tol)


def pixel_mask(mask: np.ndarray, shape=SHAPE) -> np.ndarray:
    """An image mask ``(n,)`` as a mask of the pixel rows (each image's H·W pixels)."""
    return np.repeat(mask, shape[1] * shape[2])


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_batchnorm_over_images_is_algorithm_1_over_the_pixels_step_by_step(preset):
    """Five training steps — the fourth a ragged batch whose last image is padding — then
    inference, against the reference on pixel rows with the framework's conventions."""
    bn, convention = PRESETS[preset], ref.CONVENTIONS[preset]
    batches = image_batches(seed=1, k=5)
    masks = [None, None, None, np.array([True, True, True, False]), None]
    gamma, beta = affine(seed=2)
    want_y, want_states = ref.run_training(
        [reference_conv.pixel_rows(x) for x in batches], gamma, beta, convention,
        masks=[None if m is None else pixel_mask(m) for m in masks])
    params, state, out = bn.init(None, SHAPE[1:])
    assert out == SHAPE[1:] and state["moving_mean"].shape == (SHAPE[-1],)
    params = params_of(gamma, beta)
    step = jax.jit(functools.partial(bn.apply, train=True))
    for x, mask, y_ref, (mean_ref, var_ref) in zip(batches, masks, want_y, want_states,
                                                    strict=True):
        y, state = step(params, state, jnp.asarray(x),
                        mask=None if mask is None else jnp.asarray(mask))
        real = slice(None) if mask is None else pixel_mask(mask)
        assert_close(reference_conv.pixel_rows(y)[real], y_ref[real])
        assert_close(state["moving_mean"], mean_ref)
        assert_close(state["moving_variance"], var_ref)
    (x_new,) = image_batches(seed=3, k=1)
    y, _ = bn.apply(params, state, jnp.asarray(x_new), train=False)
    assert_close(reference_conv.pixel_rows(y), ref.inference_forward(
        reference_conv.pixel_rows(x_new), gamma, beta, *want_states[-1], convention.epsilon))


def test_batchnorm_over_images_gradients_match_finite_differences_and_the_paper(float64):
    bn = BatchNorm.keras()
    (x,) = image_batches(seed=4, k=1, shape=(2, 2, 3, 3))
    gamma, beta = affine(seed=5, channels=3)
    x64, g64, b64 = (jnp.asarray(v, jnp.float64) for v in (x, gamma, beta))

    def output(x, gamma, beta):
        return bn.apply({"gamma": gamma, "beta": beta}, bn.init(None, (2, 3, 3))[1], x,
                        train=True)[0]

    check_grads(output, (x64, g64, b64), order=1, modes=["rev"])
    upstream = np.random.default_rng(6).normal(size=x.shape)
    grads = jax.grad(lambda *a: jnp.sum(output(*a) * upstream), argnums=(0, 1, 2))(
        x64, g64, b64)
    want = ref.train_backward(reference_conv.pixel_rows(upstream), reference_conv.pixel_rows(x),
                              gamma.astype(np.float64), bn.epsilon)
    assert_close(reference_conv.pixel_rows(np.asarray(grads[0])), want[0], tol=1e-10)
    assert_close(grads[1], want[1], tol=1e-10)
    assert_close(grads[2], want[2], tol=1e-10)


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum_0.1", "cumulative"])
def test_batchnorm_over_images_equals_pytorch_batchnorm2d(torch, momentum):
    """Four training steps (outputs, gradients with respect to the input, running statistics,
    ``num_batches_tracked``), then ``eval()``: PyTorch on the same images in NCHW."""
    bn = BatchNorm.pytorch(momentum=momentum)
    theirs = torch.nn.BatchNorm2d(SHAPE[-1], momentum=momentum)
    gamma, beta = affine(seed=7)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(gamma))
        theirs.bias.copy_(torch.from_numpy(beta))
    params, state, _ = bn.init(None, SHAPE[1:])
    params = params_of(gamma, beta)
    theirs.train()
    for k, x in enumerate(image_batches(seed=8, k=4)):
        upstream = np.random.default_rng(k).normal(size=x.shape).astype(np.float32)

        def loss(x, state, upstream=upstream):
            y, new_state = bn.apply(params, state, x, train=True)
            return jnp.sum(y * upstream), (y, new_state)

        (_, (y, state)), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(x), state)
        tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
        ty = theirs(tx)
        (ty * torch.from_numpy(upstream.transpose(0, 3, 1, 2))).sum().backward()
        assert_close(y, ty.detach().numpy().transpose(0, 2, 3, 1))
        assert_close(grad, tx.grad.numpy().transpose(0, 2, 3, 1))
    assert_close(state["moving_mean"], theirs.running_mean.numpy())
    assert_close(state["moving_variance"], theirs.running_var.numpy())
    if momentum is None:
        assert int(state["num_batches_tracked"]) == int(theirs.num_batches_tracked) == 4
    theirs.eval()
    (x,) = image_batches(seed=9, k=1)
    y, _ = bn.apply(params, state, jnp.asarray(x), train=False)
    assert_close(y, theirs(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
                 .transpose(0, 2, 3, 1))


def test_batchnorm_over_images_equals_keras_batchnormalization_on_nhwc(keras):
    bn = BatchNorm.keras()
    theirs = keras.layers.BatchNormalization()
    theirs.build((None, *SHAPE[1:]))
    gamma, beta = affine(seed=10)
    theirs.gamma.assign(gamma)
    theirs.beta.assign(beta)
    params, state, _ = bn.init(None, SHAPE[1:])
    params = params_of(gamma, beta)
    for x in image_batches(seed=11, k=4):
        y, state = bn.apply(params, state, jnp.asarray(x), train=True)
        assert_close(y, np.asarray(theirs(x, training=True)))
    assert_close(state["moving_mean"], np.asarray(theirs.moving_mean))
    assert_close(state["moving_variance"], np.asarray(theirs.moving_variance))
    (x,) = image_batches(seed=12, k=1)
    y, _ = bn.apply(params, state, jnp.asarray(x), train=False)
    assert_close(y, np.asarray(theirs(x, training=False)))


def test_frozen_batchnorm_over_images_keeps_its_statistics_and_one_pixel_is_refused():
    bn = BatchNorm(freeze=True)
    params, state, _ = bn.init(None, SHAPE[1:])
    (x,) = image_batches(seed=13, k=1)
    _, new_state = bn.apply(params, state, jnp.asarray(x), train=True)
    for name in state:
        np.testing.assert_array_equal(new_state[name], state[name])
    # One image of several pixels has a variance (PyTorch's BatchNorm2d takes it too);
    # one image of one pixel has none.
    one_image, _ = BatchNorm().apply(params, state, jnp.asarray(x[:1]), train=True)
    assert np.isfinite(np.asarray(one_image)).all()
    with pytest.raises(ConfigError, match=r"at least 2 values per channel"):
        BatchNorm().apply(params, state, jnp.ones((1, 1, 1, SHAPE[-1])), train=True)
    with pytest.raises(ConfigError, match=r"expects \(batch, features\) or \(batch, height, "):
        BatchNorm().init(None, (28, 28))


def test_ghost_batchnorm_over_images_normalizes_each_ghost_of_images_alone():
    """Ghosts of 2 images are ghosts of 2·H·W consecutive pixel rows."""
    bn = GhostBatchNorm(virtual_batch_size=2)
    (x,) = image_batches(seed=14, k=1)
    gamma, beta = affine(seed=15)
    _, state, _ = bn.init(None, SHAPE[1:])
    y, state = bn.apply(params_of(gamma, beta), state, jnp.asarray(x), train=True)
    want, mean, variance = ref_norms.ghost_train(reference_conv.pixel_rows(x), gamma, beta,
                                                 bn.epsilon, 2 * SHAPE[1] * SHAPE[2])
    assert_close(reference_conv.pixel_rows(y), want)
    assert_close(state["moving_mean"], (1 - bn.decay) * mean)
    assert_close(state["moving_variance"], bn.decay + (1 - bn.decay) * variance)


def test_batch_renorm_over_images_is_algorithm_1_of_ioffe_2017_over_the_pixels():
    bn = BatchRenorm(schedule="fixed", rmax=1.5, dmax=0.5)
    (x,) = image_batches(seed=16, k=1)
    gamma, beta = affine(seed=17)
    _, state, _ = bn.init(None, SHAPE[1:])
    moving_mean = np.linspace(-1.0, 1.0, SHAPE[-1]).astype(np.float32)
    moving_var = np.linspace(0.2, 3.0, SHAPE[-1]).astype(np.float32)
    state = {**state, "moving_mean": jnp.asarray(moving_mean),
             "moving_variance": jnp.asarray(moving_var)}
    y, _ = bn.apply(params_of(gamma, beta), state, jnp.asarray(x), train=True)
    want, r, d, _, _ = ref_norms.renorm_train(reference_conv.pixel_rows(x), gamma, beta,
                                              moving_mean, moving_var, bn.epsilon, 1.5, 0.5)
    assert (r != 1.0).any() and (d != 0.0).any()  # the correction is active
    assert_close(reference_conv.pixel_rows(y), want)


def test_noisy_batchnorm_over_images_draws_one_scale_and_shift_per_channel():
    bn = NoisyBatchNorm()
    (x,) = image_batches(seed=18, k=1)
    params, state, _ = bn.init(None, SHAPE[1:])
    key = jax.random.key(3)
    noisy, _ = bn.apply(params, state, jnp.asarray(x), train=True, key=key)
    plain, _ = BatchNorm().apply(params, state, jnp.asarray(x), train=True)
    scale, shift = bn.noise(key, SHAPE[-1])
    assert_close(noisy, np.asarray(plain, np.float64) * np.asarray(scale) + np.asarray(shift))


@pytest.mark.parametrize("groups", [1, 5], ids=["layer_norm", "instance_norm"])
def test_group_norm_over_images_matches_wu_and_he_pytorch_and_keras(torch, keras, groups):
    channels = 5
    (x,) = image_batches(seed=19, k=1)
    gamma, beta = affine(seed=20)
    layer = LayerNorm(epsilon=1e-5) if groups == 1 else GroupNorm(groups=groups, epsilon=1e-5)
    y, state = layer.apply(params_of(gamma, beta), {}, jnp.asarray(x), train=True)
    assert state == {}
    assert_close(y, reference_conv.group_norm_images(x, gamma.astype(np.float64),
                                                     beta.astype(np.float64), 1e-5, groups))
    theirs = torch.nn.GroupNorm(groups, channels, eps=1e-5)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(gamma))
        theirs.bias.copy_(torch.from_numpy(beta))
    assert_close(y, theirs(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
                 .transpose(0, 2, 3, 1))
    keras_layer = keras.layers.GroupNormalization(groups=groups, epsilon=1e-5)
    keras_layer.build((None, *SHAPE[1:]))
    keras_layer.gamma.assign(gamma)
    keras_layer.beta.assign(beta)
    assert_close(y, np.asarray(keras_layer(x)))


def test_group_norm_over_images_splits_channels_into_groups():
    gamma, beta = affine(seed=21, channels=6)
    (x,) = image_batches(seed=22, k=1, shape=(2, 3, 3, 6))
    y, _ = GroupNorm(groups=3).apply(params_of(gamma, beta), {}, jnp.asarray(x), train=False)
    assert_close(y, reference_conv.group_norm_images(x, gamma.astype(np.float64),
                                                     beta.astype(np.float64), 1e-3, 3))
    with pytest.raises(ConfigError, match="4 groups do not split 6"):
        GroupNorm(groups=4).init(None, (3, 3, 6))
