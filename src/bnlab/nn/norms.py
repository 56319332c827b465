"""Normalization layers beside BatchNorm, each written like ``batchnorm.py``.

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

import jax
import jax.numpy as jnp

from bnlab.errors import ConfigError
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.layers import is_number

Array = jax.Array


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
        """BatchNorm of ``x: (batch, features)``, then in training ``s · y + t`` with this
        step's noise drawn from ``key``; returns ``(y, new_bn_state)``."""
        y, new_bn_state = super().apply(params, bn_state, x, train=train, mask=mask)
        if not train:
            return y, new_bn_state
        if key is None:
            raise ConfigError("NoisyBatchNorm in training needs a PRNG key (its noise is drawn "
                              "every step)")
        scale, shift = self.noise(key, x.shape[-1])
        return y * scale[None, :] + shift[None, :], new_bn_state
