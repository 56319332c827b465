"""Batch Normalization, written from the paper (Ioffe & Szegedy 2015, Algorithm 1).

For a mini-batch B = {x_1..m} of one feature (each feature is normalized independently):

    μ_B  = (1/m) Σ x_i                         mini-batch mean
    σ²_B = (1/m) Σ (x_i − μ_B)²                mini-batch variance (biased, two-pass: never < 0)
    x̂_i  = (x_i − μ_B) / √(σ²_B + ε)           normalize
    y_i  = γ · x̂_i + β                         scale and shift

Training uses the batch statistics and updates moving statistics for inference:

    momentum_on="old" (Keras, Flax):  moving ← momentum · moving + (1 − momentum) · batch
    momentum_on="new" (PyTorch):      moving ← (1 − momentum) · moving + momentum · batch

where the stored variance is σ²_B (``stored_variance="biased"``, Keras/Flax) or the
unbiased m/(m−1) · σ²_B (``"unbiased"``, PyTorch and the paper's population estimate). With
``moving_average="cumulative"`` (PyTorch's ``momentum=None``) the moving statistics are the
plain mean of every batch's so far: after the n-th batch, moving ← moving + (batch − moving)/n,
with n counted in the state's ``num_batches_tracked``. A batch without real rows (empty, or
every row masked) leaves the moving statistics as they were.

**Images.** For ``x: (batch, height, width, channels)`` a feature is a channel and B holds
its values at every pixel of every image: m = N·H·W (Ioffe & Szegedy §3.2, "so that different
elements of the same feature map, at different locations, are normalized in the same way";
Keras's ``BatchNormalization`` on NHWC, PyTorch's ``BatchNorm2d`` on NCHW, whose unbiased
factor also uses m = N·H·W). γ, β and the moving statistics are per channel.

Inference is one affine map per feature:

    y = γ · (x − moving_mean) / √(moving_variance + ε) + β  =  s · x + (β − moving_mean · s)

Keras's defaults are this module's defaults: momentum 0.99 on the old value, ε = 1e-3,
biased stored variance, γ = 1, β = 0, moving_mean = 0, moving_variance = 1.

Trainable parameters (``params``): ``gamma``, ``beta``. Non-trainable state (``bn_state``):
``moving_mean``, ``moving_variance`` (and ``num_batches_tracked``, an int32 scalar, for the
cumulative average). Both are dicts of ``(features,)`` float32 arrays.

**Freezing is not inference.** ``train`` picks the statistics a call normalizes with (the
batch's or the moving ones); freezing picks what training may change, independently:
``freeze=True`` keeps γ, β *and* the moving statistics fixed (γ and β then live in
``bn_state``, the non-trainable tree, so no optimizer sees them and every count calls them
non-trainable), ``freeze_affine=True`` keeps only γ, β fixed while training still updates the
moving statistics. Keras's ``trainable=False`` is ``freeze=True`` *and* ``train=False``
together; here each is asked for by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from bnlab.errors import ConfigError
from bnlab.lazy import Deferred
from bnlab.nn.layers import is_number, is_traced, per_channel

if TYPE_CHECKING:
    from jax import Array

jax = Deferred("jax")
jnp = Deferred("jax.numpy")



@dataclass(frozen=True)
class BatchNorm:
    """BatchNorm per feature of ``x: (batch, features)``, or per channel of images
    ``x: (batch, height, width, channels)`` over (N, H, W) (module docstring).

    Arguments:
        momentum: moving-average momentum; its meaning depends on ``momentum_on``.
        epsilon: added to the variance before the square root.
        momentum_on: ``"old"`` — momentum weights the old moving value (Keras 0.99, Flax);
            ``"new"`` — momentum weights the new batch value (PyTorch 0.1 = 1 − Keras 0.99).
        stored_variance: ``"biased"`` stores σ²_B (Keras, Flax); ``"unbiased"`` stores
            m/(m−1)·σ²_B (PyTorch; the paper's population variance). Training always
            normalizes with the biased σ²_B.
        moving_average: ``"exponential"`` (the formulas above, with ``momentum``) or
            ``"cumulative"`` (PyTorch's ``momentum=None``: the mean of all batches so far;
            ``momentum`` is then unused).
        center: learn β (Keras ``center``); ``scale``: learn γ (Keras ``scale``).
        freeze: γ, β and the moving statistics stay as they are, in training too (module
            docstring); ``freeze_affine``: only γ and β do.
        axis_name: for synchronized BN under ``pmap``/``shard_map``: batch statistics are
            averaged over this mapped axis (the global batch), like PyTorch's SyncBatchNorm.
    """

    momentum: float = 0.99
    epsilon: float = 1e-3
    momentum_on: Literal["old", "new"] = "old"
    stored_variance: Literal["biased", "unbiased"] = "biased"
    moving_average: Literal["exponential", "cumulative"] = "exponential"
    center: bool = True
    scale: bool = True
    freeze: bool = False
    freeze_affine: bool = False
    axis_name: str | None = None

    def __post_init__(self) -> None:
        # A traced momentum or epsilon (a sweep member's scalar, ``train.engine.Bind``) was
        # checked as a number in its config; only numbers are checked here.
        for name in ("momentum", "epsilon"):
            value = getattr(self, name)
            if not is_number(value) and not is_traced(value):
                hint = (" (PyTorch's momentum=None is moving_average='cumulative')"
                        if name == "momentum" and value is None else "")
                raise ConfigError(f"BatchNorm {name} must be a number, got {value!r}{hint}")
        if is_number(self.momentum) and not 0.0 <= self.momentum <= 1.0:
            raise ConfigError(f"BatchNorm momentum must be in [0, 1], got {self.momentum}")
        if is_number(self.epsilon) and not 0.0 < self.epsilon < float("inf"):  # NaN fails
            raise ConfigError(f"BatchNorm epsilon must be a finite number > 0, got {self.epsilon}")
        if self.momentum_on not in ("old", "new"):
            raise ConfigError(
                f"BatchNorm momentum_on must be 'old' (Keras/Flax) or 'new' (PyTorch), "
                f"got {self.momentum_on!r}"
            )
        if self.stored_variance not in ("biased", "unbiased"):
            raise ConfigError(
                f"BatchNorm stored_variance must be 'biased' or 'unbiased', "
                f"got {self.stored_variance!r}"
            )
        if self.moving_average not in ("exponential", "cumulative"):
            raise ConfigError(f"BatchNorm moving_average must be 'exponential' or "
                              f"'cumulative', got {self.moving_average!r}")

    @classmethod
    def keras(cls, **overrides: object) -> BatchNorm:
        """Keras 3 ``BatchNormalization()``: momentum 0.99 on old, ε 1e-3, biased."""
        return cls(**{"momentum": 0.99, "epsilon": 1e-3, **overrides})

    @classmethod
    def pytorch(cls, **overrides: object) -> BatchNorm:
        """PyTorch ``BatchNorm1d()``: momentum 0.1 on new, ε 1e-5, unbiased stored variance;
        ``momentum=None`` is PyTorch's cumulative average (``moving_average="cumulative"``)."""
        defaults = {"momentum": 0.1, "epsilon": 1e-5, "momentum_on": "new",
                    "stored_variance": "unbiased"}
        if "momentum" in overrides and overrides["momentum"] is None:
            overrides = {**overrides, "momentum": 0.1, "moving_average": "cumulative"}
        return cls(**{**defaults, **overrides})

    @classmethod
    def flax(cls, **overrides: object) -> BatchNorm:
        """Flax ``nn.BatchNorm()``: momentum 0.99 on old, ε 1e-5, biased."""
        return cls(**{"momentum": 0.99, "epsilon": 1e-5, **overrides})

    @property
    def decay(self) -> float:
        """Weight of the old moving value in the update, whatever the convention."""
        return self.momentum if self.momentum_on == "old" else 1.0 - self.momentum

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return channels_last(type(self).__name__, in_shape)

    def init(self, key: Array, in_shape: tuple[int, ...]) -> tuple[dict, dict, tuple[int, ...]]:
        """``(params, bn_state, out_shape)`` for inputs ``(batch, *in_shape)``; ``key`` unused."""
        del key
        features = self.output_shape(in_shape)[-1]
        affine = {}
        if self.scale:
            affine["gamma"] = jnp.ones((features,), jnp.float32)
        if self.center:
            affine["beta"] = jnp.zeros((features,), jnp.float32)
        frozen_affine = self.freeze or self.freeze_affine
        params = {} if frozen_affine else affine
        bn_state = {
            **(affine if frozen_affine else {}),
            "moving_mean": jnp.zeros((features,), jnp.float32),
            "moving_variance": jnp.ones((features,), jnp.float32),
        }
        if self.moving_average == "cumulative":
            bn_state["num_batches_tracked"] = jnp.zeros((), jnp.int32)
        return params, bn_state, in_shape

    def apply(
        self,
        params: dict,
        bn_state: dict,
        x: Array,
        *,
        train: bool,
        mask: Array | None = None,
        key: Array | None = None,
    ) -> tuple[Array, dict]:
        """Normalize ``x: (batch, ..., channels)``; returns ``(y, new_bn_state)``.

        ``mask: (batch,)`` bool marks the real rows of a padded batch (the ragged last
        batch of an epoch): statistics are taken over those rows only. In training a batch
        of one row is an error: its variance is 0 and every output would silently equal β.
        A batch without real rows leaves the moving statistics unchanged.
        """
        del key
        if not train:
            scale, shift = inference_affine(params, bn_state, self.epsilon)
            return x * per_channel(scale, x) + per_channel(shift, x), bn_state
        x_hat, new_bn_state = self.normalize(bn_state, x, mask=mask)
        gamma, beta = self.affine(params, bn_state, x_hat)
        return x_hat * per_channel(gamma, x) + per_channel(beta, x), new_bn_state

    def normalize(self, bn_state: dict, x: Array, *,
                  mask: Array | None = None) -> tuple[Array, dict]:
        """Training-mode steps 1–3 of Algorithm 1: ``(x̂: x's shape, new_bn_state)``
        with the moving statistics updated; ``apply`` then scales and shifts."""
        self.check_training_rows(x, mask)
        mean, variance, count = batch_moments(x, mask, self.axis_name)
        x_hat = (x - per_channel(mean, x)) * per_channel(
            jax.lax.rsqrt(variance + self.epsilon), x)
        return x_hat, self.updated_statistics(bn_state, mean, variance, count)

    def check_training_rows(self, x: Array, mask: Array | None) -> None:
        """A training batch with one (unmasked) value per channel is a ``ConfigError``: its
        variance is 0 (one row of features; an image of one pixel has H·W = 1 too)."""
        if math.prod(x.shape[:-1]) == 1 and mask is None:
            what = "rows per batch" if x.ndim == 2 else "values per channel (rows × pixels)"
            raise ConfigError(
                f"{type(self).__name__} in training needs at least 2 {what}, got 1 "
                "(its variance is 0 and the output would equal beta); use a larger batch or "
                "train=False"
            )

    def updated_statistics(self, bn_state: dict, mean: Array, variance: Array,
                           count: Array) -> dict:
        """``bn_state`` after a training batch of ``count`` real rows with moments ``mean``,
        biased ``variance`` (``(features,)``): the moving averages of the module docstring;
        unchanged when ``count`` is 0 or the layer is frozen."""
        if self.freeze:
            return bn_state
        if self.stored_variance == "unbiased":  # m/(m−1); one real row (masked) stays finite
            stored = variance * count / jnp.maximum(count - 1.0, 1.0)
        else:
            stored = variance
        new_bn_state = dict(bn_state)
        if self.moving_average == "cumulative":
            tracked = bn_state["num_batches_tracked"] + 1
            decay = 1.0 - 1.0 / tracked.astype(jnp.float32)
            new_bn_state["num_batches_tracked"] = tracked
        else:
            decay = self.decay
        new_bn_state["moving_mean"] = _moving_average(bn_state["moving_mean"], mean, decay)
        new_bn_state["moving_variance"] = _moving_average(bn_state["moving_variance"], stored,
                                                          decay)
        has_rows = count > 0  # an empty or fully masked batch updates nothing
        return {name: jnp.where(has_rows, value, bn_state[name])
                for name, value in new_bn_state.items()}

    def affine(self, params: dict, bn_state: dict, x_hat: Array) -> tuple[Array, Array]:
        """``(γ, β)`` for ``x̂: (batch, ..., channels)`` as ``(channels,)`` arrays: the learned
        ones (or the frozen ones, in ``bn_state``), or 1 and 0 (constants, no gradient)
        where ``scale`` / ``center`` is off."""
        gamma, beta = affine_parameters(params, bn_state)
        gamma = gamma if gamma is not None else jnp.ones(x_hat.shape[-1:], x_hat.dtype)
        beta = beta if beta is not None else jnp.zeros(x_hat.shape[-1:], x_hat.dtype)
        return gamma, beta


def batch_moments(
    x: Array, mask: Array | None = None, axis_name: str | None = None
) -> tuple[Array, Array, Array]:
    """Per-channel batch mean and biased variance of ``x: (batch, ..., channels)``, over the
    batch and every other axis but the last: ``(batch, features)`` → per feature, images
    ``(batch, H, W, C)`` → per channel over N·H·W values (Keras's ``BatchNormalization``
    on NHWC, PyTorch's ``BatchNorm2d``).

    Two-pass (variance of the centred values), so the variance is never negative.
    ``mask: (batch,)`` keeps only the real rows; ``axis_name`` sums over mapped devices.
    Returns ``(mean, variance, count)`` with ``mean, variance: (channels,)`` and the number
    of values per channel ``count`` (real rows × H·W) as a float scalar.
    """
    axes = tuple(range(x.ndim - 1))
    per_row = math.prod(x.shape[1:-1])  # H·W for images, 1 for features
    if mask is None:
        total = jnp.asarray(x.shape[0] * per_row, x.dtype)
        real = x
    else:  # `where`, not a product: a non-finite padded row must not leak in via 0·inf
        rows = mask.reshape(mask.shape + (1,) * (x.ndim - 1))
        total = mask.sum().astype(x.dtype) * per_row
        real = jnp.where(rows, x, 0.0)
    value_sum = real.sum(axis=axes)
    if axis_name is not None:
        total = jax.lax.psum(total, axis_name)
        value_sum = jax.lax.psum(value_sum, axis_name)
    mean = value_sum / jnp.maximum(total, 1.0)  # no rows: mean 0, variance 0, count 0
    mean_x = per_channel(mean, x)
    centred = real - mean_x if mask is None else jnp.where(rows, x - mean_x, 0.0)
    square_sum = jnp.sum(centred * centred, axis=axes)
    if axis_name is not None:
        square_sum = jax.lax.psum(square_sum, axis_name)
    return mean, square_sum / jnp.maximum(total, 1.0), total


def channels_last(kind: str, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """``in_shape`` when a normalization layer takes it — ``(features,)`` or images
    ``(height, width, channels)``, normalized per feature or channel (the last axis) — else a
    ``ConfigError``: a ``(28, 28)`` input would otherwise be read as 28 channels."""
    if len(in_shape) not in (1, 3):
        raise ConfigError(
            f"{kind} expects (batch, features) or (batch, height, width, channels) inputs, got "
            f"feature shape {tuple(in_shape)}; put a Flatten layer (or a Reshape to "
            f"[{', '.join(map(str, in_shape))}, 1]) before it")
    return tuple(in_shape)


def affine_parameters(params: dict, bn_state: dict) -> tuple[Array | None, Array | None]:
    """A BatchNorm layer's ``(γ, β)``: trained (in ``params``) or frozen (in ``bn_state``);
    ``None`` for one the layer does not have (``scale`` / ``center`` off)."""
    def find(name: str) -> Array | None:
        return params.get(name, bn_state.get(name))

    return find("gamma"), find("beta")


def inference_affine(params: dict, bn_state: dict, epsilon: float) -> tuple[Array, Array]:
    """The inference-mode BN as ``y = scale · x + shift`` with ``(features,)`` arrays.

    ``scale = γ / √(moving_variance + ε)``, ``shift = β − moving_mean · scale``; this is
    the map that folds into a neighbouring Dense layer for deployment.
    """
    gamma, beta = affine_parameters(params, bn_state)
    scale = jax.lax.rsqrt(bn_state["moving_variance"] + epsilon)
    if gamma is not None:
        scale = scale * gamma
    shift = -bn_state["moving_mean"] * scale
    if beta is not None:
        shift = shift + beta
    return scale, shift


def _moving_average(old: Array, new: Array, decay: float | Array) -> Array:
    # The batch statistics carry no gradient into the running averages.
    return decay * old + (1.0 - decay) * jax.lax.stop_gradient(new)
