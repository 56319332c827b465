"""Normalization layers beside BatchNorm, each written like ``batchnorm.py``: the BN family
(noisy BN, Batch Renormalization, ghost BN: BatchNorm's options, state and inference, another
training computation) and the per-row controls (LayerNorm, GroupNorm: one computation in
training and inference, no state, no dependence on the batch).

**Noisy BatchNorm** (Santurkar et al. 2018, "How Does Batch Normalization Help
Optimization?", §2.1): BatchNorm whose output is made deliberately unstable during training,
to test whether BN helps *because* it stabilizes the distribution of each layer's inputs. At
every training step each unit j draws a scale and a shift,

    s_j ~ U(scale_low, scale_high),   t_j ~ N(shift_mean, shift_sd²)   (new every step)

and the layer outputs ``y_ij = s_j · (γ_j · x̂_ij + β_j) + t_j`` for every row i of the batch:
the next layer's input distribution moves by a random affine map each step — a non-zero mean
and a non-unit variance that change all the time — while the batch statistics, the moving
statistics and γ, β are BatchNorm's own. Inference is BatchNorm's (no noise). The paper adds
its noise per activation; it does not pin the distributions down, so they are this layer's
options, with defaults that move each unit's scale by up to 2× and its mean by about one
standard deviation.

Trainable parameters and state are BatchNorm's (``gamma``, ``beta``; ``moving_mean``,
``moving_variance``); the noise needs the step's PRNG ``key`` in training, as Dropout does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from bnlab.errors import ConfigError
from bnlab.lazy import Deferred
from bnlab.nn.batchnorm import BatchNorm, batch_moments, channels_last
from bnlab.nn.layers import is_number, per_channel

if TYPE_CHECKING:
    from jax import Array

jax = Deferred("jax")
jnp = Deferred("jax.numpy")



@dataclass(frozen=True)
class NoisyBatchNorm(BatchNorm):
    """BatchNorm (all its options) followed, in training, by a per-unit random affine map
    redrawn every step (module docstring).

    Arguments (besides BatchNorm's):
        scale_low, scale_high: the uniform range of each unit's scale s_j (0 < low ≤ high).
        shift_mean, shift_sd: the normal distribution of each unit's shift t_j (sd ≥ 0).
    """

    scale_low: float = 0.5
    scale_high: float = 2.0
    shift_mean: float = 0.0
    shift_sd: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        numbers = [self.scale_low, self.scale_high, self.shift_mean, self.shift_sd]
        if all(is_number(v) for v in numbers):
            if not 0 < self.scale_low <= self.scale_high < float("inf"):
                raise ConfigError(f"NoisyBatchNorm needs 0 < scale_low ≤ scale_high (finite), "
                                  f"got {self.scale_low}, {self.scale_high}")
            if not (abs(self.shift_mean) < float("inf") and 0 <= self.shift_sd < float("inf")):
                raise ConfigError(f"NoisyBatchNorm needs a finite shift_mean and shift_sd ≥ "
                                  f"0, got {self.shift_mean}, {self.shift_sd}")

    def noise(self, key: Array, features: int) -> tuple[Array, Array]:
        """One step's ``(scale, shift)``, each ``(features,)``."""
        scale_key, shift_key = jax.random.split(key)
        scale = jax.random.uniform(scale_key, (features,), jnp.float32, self.scale_low,
                                   self.scale_high)
        shift = self.shift_mean + self.shift_sd * jax.random.normal(shift_key, (features,),
                                                                    jnp.float32)
        return scale, shift

    def apply(self, params: dict, bn_state: dict, x: Array, *, train: bool,
              mask: Array | None = None, key: Array | None = None) -> tuple[Array, dict]:
        """BatchNorm of ``x: (batch, ..., channels)``, then in training ``s · y + t`` (one
        draw per channel) with this step's noise from ``key``; returns ``(y, new_bn_state)``."""
        y, new_bn_state = super().apply(params, bn_state, x, train=train, mask=mask)
        if not train:
            return y, new_bn_state
        if key is None:
            raise ConfigError("NoisyBatchNorm in training needs a PRNG key (its noise is drawn "
                              "every step)")
        scale, shift = self.noise(key, x.shape[-1])
        return y * per_channel(scale, y) + per_channel(shift, y), new_bn_state


@dataclass(frozen=True)
class BatchRenorm(BatchNorm):
    """Batch Renormalization (Ioffe 2017, "Batch Renormalization: Towards Reducing Minibatch
    Dependence in Batch-Normalized Models", Algorithm 1), over ``x: (batch, ..., channels)``.

    Training normalizes with the batch statistics and then corrects them towards the moving
    ones, so that training computes what inference will (exactly, when r and d are not clipped):

        σ_B = √(σ²_B + ε),   σ = √(moving_variance + ε)          (moving values before the step)
        r = stop_gradient(clip(σ_B / σ, 1/r_max, r_max))
        d = stop_gradient(clip((μ_B − moving_mean) / σ, −d_max, d_max))
        x̂ = (x − μ_B) / σ_B · r + d,   y = γ · x̂ + β

    r and d are constants in the backward pass (the gradient is BatchNorm's, scaled by r).
    With ``schedule="paper"`` the limits start at r_max = 1, d_max = 0 (plain BatchNorm) for
    ``warmup_steps`` training steps and then relax linearly to ``rmax`` at step ``rmax_steps``
    and ``dmax`` at ``dmax_steps`` (the paper's §4: 5,000 steps of BN, r_max = 3 at 40k and
    d_max = 5 at 25k steps, the defaults); ``schedule="fixed"`` clips at ``rmax``, ``dmax``
    from the first step, as Keras 2's ``renorm_clipping``. The moving statistics are
    BatchNorm's (all its conventions; the paper averages σ rather than σ², a difference of
    second order in the momentum's step), and inference is BatchNorm's. The state also counts
    the training steps taken (``steps``, int32), which the schedule reads.
    """

    rmax: float = 3.0
    dmax: float = 5.0
    schedule: Literal["paper", "fixed"] = "paper"
    warmup_steps: int = 5000
    rmax_steps: int = 40000
    dmax_steps: int = 25000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.schedule not in ("paper", "fixed"):
            raise ConfigError(f"BatchRenorm schedule must be 'paper' or 'fixed', got "
                              f"{self.schedule!r}")
        if not (is_number(self.rmax) and is_number(self.dmax) and 1.0 <= self.rmax < float("inf")
                and 0.0 <= self.dmax < float("inf")):
            raise ConfigError(f"BatchRenorm needs rmax ≥ 1 and dmax ≥ 0 (finite), got "
                              f"{self.rmax}, {self.dmax}")
        steps = (self.warmup_steps, self.rmax_steps, self.dmax_steps)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in steps) or not (
                0 <= self.warmup_steps <= min(self.rmax_steps, self.dmax_steps)):
            raise ConfigError(f"BatchRenorm needs whole numbers 0 ≤ warmup_steps ≤ rmax_steps, "
                              f"dmax_steps, got {steps}")

    def init(self, key: Array, in_shape: tuple[int, ...]) -> tuple[dict, dict, tuple[int, ...]]:
        params, bn_state, out_shape = super().init(key, in_shape)
        return params, {**bn_state, "steps": jnp.zeros((), jnp.int32)}, out_shape

    def limits(self, steps: Array) -> tuple[Array, Array]:
        """``(r_max, d_max)`` after ``steps`` training steps (class docstring)."""
        if self.schedule == "fixed":
            return jnp.float32(self.rmax), jnp.float32(self.dmax)

        def relaxed(end: int) -> Array:
            done = (steps - self.warmup_steps) / max(end - self.warmup_steps, 1)
            return jnp.clip(done.astype(jnp.float32), 0.0, 1.0)

        return 1.0 + (self.rmax - 1.0) * relaxed(self.rmax_steps), self.dmax * relaxed(
            self.dmax_steps)

    def normalize(self, bn_state: dict, x: Array, *,
                  mask: Array | None = None) -> tuple[Array, dict]:
        """``(x̂: x's shape, new_bn_state)`` of the class docstring."""
        self.check_training_rows(x, mask)
        mean, variance, count = batch_moments(x, mask, self.axis_name)
        sigma_batch = jnp.sqrt(variance + self.epsilon)
        sigma = jnp.sqrt(bn_state["moving_variance"] + self.epsilon)
        r_max, d_max = self.limits(bn_state["steps"])
        r = jax.lax.stop_gradient(jnp.clip(sigma_batch / sigma, 1.0 / r_max, r_max))
        d = jax.lax.stop_gradient(jnp.clip((mean - bn_state["moving_mean"]) / sigma,
                                           -d_max, d_max))
        x_hat = ((x - per_channel(mean, x)) * per_channel(r / sigma_batch, x)
                 + per_channel(d, x))
        new_bn_state = self.updated_statistics(bn_state, mean, variance, count)
        if new_bn_state is not bn_state:  # frozen: the schedule stands still too
            new_bn_state = {**new_bn_state,
                            "steps": bn_state["steps"] + (count > 0).astype(jnp.int32)}
        return x_hat, new_bn_state


@dataclass(frozen=True)
class GhostBatchNorm(BatchNorm):
    """Ghost Batch Normalization (Hoffer, Hubara & Soudry 2017, "Train longer, generalize
    better", §4), over ``x: (batch, ..., channels)``.

    In training the batch is split into ghost batches of ``virtual_batch_size`` consecutive
    rows, and each is normalized with its own statistics (Algorithm 1 on each ghost); a batch
    of at most ``virtual_batch_size`` rows is one ghost (plain BatchNorm), a larger one must
    be a multiple of it. The moving statistics take one step per batch, towards the mean over
    the ghosts of their means and of their variances. Inference is BatchNorm's: the moving
    statistics, row by row, for any batch size (Keras 2's ``virtual_batch_size`` also split
    inference batches, which made a prediction depend on its neighbours; not here).
    """

    virtual_batch_size: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        size = self.virtual_batch_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 2:
            raise ConfigError(f"GhostBatchNorm virtual_batch_size must be a whole number ≥ 2 "
                              f"(a ghost of one row has variance 0), got {size!r}")

    def normalize(self, bn_state: dict, x: Array, *,
                  mask: Array | None = None) -> tuple[Array, dict]:
        """``(x̂: x's shape, new_bn_state)``, each ghost normalized alone."""
        rows = x.shape[0]
        if rows <= self.virtual_batch_size:
            return super().normalize(bn_state, x, mask=mask)
        if rows % self.virtual_batch_size:
            raise ConfigError(f"GhostBatchNorm: a batch of {rows} rows does not split into "
                              f"ghost batches of {self.virtual_batch_size}; pick a batch size "
                              "that is a multiple of virtual_batch_size")
        ghosts = rows // self.virtual_batch_size
        x_ghosts = x.reshape(ghosts, self.virtual_batch_size, *x.shape[1:])
        mask_ghosts = (jnp.ones((ghosts, self.virtual_batch_size), bool) if mask is None
                       else mask.reshape(ghosts, self.virtual_batch_size))
        means, variances, counts = jax.vmap(batch_moments, in_axes=(0, 0, None))(
            x_ghosts, mask_ghosts, self.axis_name)  # (ghosts, channels), …, (ghosts,)
        per_ghost = (ghosts,) + (1,) * (x.ndim - 1) + (x.shape[-1],)  # against x_ghosts
        x_hat = (x_ghosts - means.reshape(per_ghost)) * jax.lax.rsqrt(
            variances + self.epsilon).reshape(per_ghost)
        real = (counts > 0).astype(x.dtype)  # ghosts with rows; a padded-out one counts not
        used = jnp.maximum(real.sum(), 1.0)
        mean = (means * real[:, None]).sum(axis=0) / used
        variance = (variances * real[:, None]).sum(axis=0) / used
        count = (counts * real).sum() / used  # values per ghost: the unbiased factor's m
        return x_hat.reshape(x.shape), self.updated_statistics(bn_state, mean, variance, count)


@dataclass(frozen=True)
class LayerNorm:
    """Layer Normalization (Ba, Kiros & Hinton 2016), over each row of ``x: (batch,
    features)`` or each image of ``x: (batch, H, W, C)``:

        μ_n = mean of x[n, ...],   σ²_n = mean of (x[n, ...] − μ_n)²
        y[n, ..., c] = γ_c · (x[n, ..., c] − μ_n) / √(σ²_n + ε) + β_c

    The same computation in training and inference, no state and no dependence on the other
    rows: a control for what BatchNorm's batch statistics do. On images the statistics span
    the whole image (H, W and C) and γ, β are per channel, as in Wu & He's Group Normalization
    paper (LayerNorm = GroupNorm with one group; PyTorch ``GroupNorm(1, C)``, Keras
    ``GroupNormalization(groups=1)``) — not Keras's ``LayerNormalization()``, whose default
    ``axis=-1`` normalizes each pixel over its channels alone. Keras 3's ε = 1e-3 (PyTorch's
    ``LayerNorm`` uses 1e-5). Parameters: ``gamma``, ``beta`` ``(channels,)`` (``scale`` /
    ``center`` off: none).
    """

    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True

    def __post_init__(self) -> None:
        if not is_number(self.epsilon) or not 0.0 < self.epsilon < float("inf"):
            raise ConfigError(f"LayerNorm epsilon must be a finite number > 0, got "
                              f"{self.epsilon!r}")

    def groups_of(self, features: int) -> int:
        """Statistics are taken over groups of channels; LayerNorm's is all of them."""
        del features
        return 1

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        in_shape = channels_last(type(self).__name__, in_shape)
        self.groups_of(in_shape[-1])  # checks that the groups split the channels
        return in_shape

    def init(self, key: Array, in_shape: tuple[int, ...]) -> tuple[dict, dict, tuple[int, ...]]:
        """``(params, {}, out_shape)`` for inputs ``(batch, *in_shape)``; ``key`` unused."""
        del key
        channels = self.output_shape(in_shape)[-1]
        params = {}
        if self.scale:
            params["gamma"] = jnp.ones((channels,), jnp.float32)
        if self.center:
            params["beta"] = jnp.zeros((channels,), jnp.float32)
        return params, {}, in_shape

    def apply(self, params: dict, bn_state: dict, x: Array, *, train: bool,
              mask: Array | None = None, key: Array | None = None) -> tuple[Array, dict]:
        """Normalize each row of ``x: (batch, ..., channels)`` by group; ``(y, bn_state)``."""
        del train, mask, key  # per row: the same in training and inference, padding harmless
        channels = x.shape[-1]
        groups = self.groups_of(channels)
        grouped = x.reshape(*x.shape[:-1], groups, channels // groups)
        axes = (*range(1, x.ndim - 1), grouped.ndim - 1)  # pixels and the group's channels
        mean = grouped.mean(axis=axes, keepdims=True)
        centred = grouped - mean
        variance = (centred * centred).mean(axis=axes, keepdims=True)  # two-pass: never < 0
        y = (centred * jax.lax.rsqrt(variance + self.epsilon)).reshape(x.shape)
        if self.scale:
            y = y * per_channel(params["gamma"], y)
        if self.center:
            y = y + per_channel(params["beta"], y)
        return y, bn_state


@dataclass(frozen=True)
class GroupNorm(LayerNorm):
    """Group Normalization (Wu & He 2018), over ``x: (batch, features)`` or images
    ``(batch, H, W, C)``: LayerNorm's formula with the statistics taken over each of
    ``groups`` consecutive groups of C/G channels of a row (of an image: those channels at
    every pixel, Wu & He's eq. 1 and Figure 2). ``groups=1`` is LayerNorm; ``groups=C``
    normalizes each channel alone (Instance Norm on images). γ and β are per channel.
    Keras 3's ``GroupNormalization`` defaults (32 groups, ε = 1e-3), which PyTorch's
    ``GroupNorm(G, C)`` computes on NCHW; the groups must split the channels evenly (300 and
    100 units: e.g. 4, 5, 10, 20, 25, 50).
    """

    groups: int = 32

    def groups_of(self, features: int) -> int:
        groups = self.groups
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise ConfigError(f"GroupNorm groups must be a whole number ≥ 1, got {groups!r}")
        if features % groups:
            raise ConfigError(f"GroupNorm: {groups} groups do not split {features} features "
                              f"evenly; pick groups that divide {features}")
        return groups
