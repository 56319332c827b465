"""Population statistics recomputed after training (fvcore's ``PreciseBN``; Wu & Johnson
2021, "Rethinking 'Batch' in BatchNorm", §3).

A BatchNorm layer's moving statistics are an exponential average of batch statistics taken
while the weights were still changing: with momentum 0.99 they weigh the last ~100 steps,
computed by weights that are no longer the final ones. Recalibration replaces them with
plain averages over ``N`` batches of training data run through the *final* weights in
training mode, gradients off:

    moving_mean     = (1/N) Σ_k μ_B(k)        moving_variance = (1/N) Σ_k σ²_B(k)

(σ²_B stored as each layer stores it: biased, or m/(m−1)·σ²_B for ``stored_variance=
"unbiased"``), all layers at once, each seeing the batch normalized by the layers below it
with their batch statistics, as in training. Dropout and noisy BN's noise are off: the
averages describe what inference will be given. A frozen layer keeps its statistics; the
other state (a renorm layer's step count) stays as it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.model import Sequential
from bnlab.train.batches import scale_pixels
from bnlab.train.engine import Bind

Array = jax.Array
# The PRNG stream of the recalibration batches: fold_in(a run's shuffle key, this), apart from
# every epoch's stream (fold_in(shuffle, epoch), epoch < MAX_EPOCHS).
RECALIBRATION_STREAM = 2**31 - 1


def precise_statistics(model: Sequential, params: tuple[dict, ...], bn_state: tuple[dict, ...],
                       batches: Array) -> tuple[dict, ...]:
    """``bn_state`` with every BatchNorm layer's moving statistics replaced by the averages
    of the module docstring over ``batches: (N, batch, *input_shape)`` model inputs (floats,
    as ``apply`` takes them)."""
    quiet = model.without_training_noise()
    counting = []
    counting_state = []
    for layer, state in zip(quiet.layers, bn_state, strict=True):
        if isinstance(layer, BatchNorm) and not layer.freeze:
            layer = dataclasses.replace(layer, moving_average="cumulative")
            state = {**state, "num_batches_tracked": jnp.zeros((), jnp.int32)}
        counting.append(layer)
        counting_state.append(state)
    counting_model = dataclasses.replace(quiet, layers=tuple(counting))

    def one_batch(state, x):
        _, state = counting_model.apply(params, state, x, train=True)
        return state, None

    averaged, _ = jax.lax.scan(one_batch, tuple(counting_state), batches)
    new_state = []
    for layer, old, new in zip(model.layers, bn_state, averaged, strict=True):
        if isinstance(layer, BatchNorm) and not layer.freeze:
            old = {**old, "moving_mean": new["moving_mean"],
                   "moving_variance": new["moving_variance"]}
            if layer.moving_average == "cumulative":  # its own count: the N batches
                old["num_batches_tracked"] = new["num_batches_tracked"]
        new_state.append(old)
    return tuple(new_state)


def make_recalibrate(bind: Bind, n_samples: int, batch_size: int,
                     batches: int) -> Callable[..., tuple[dict, ...]]:
    """Build ``recalibrate(params, bn_state, scalars, images, key) -> bn_state`` (not jitted):
    ``precise_statistics`` over the first ``batches`` full batches of ``batch_size`` rows of
    a permutation of the ``n_samples`` training ``images`` drawn from ``key``; ``scalars``
    and ``bind`` as in ``engine.make_train_epoch``."""
    def recalibrate(params, bn_state, scalars, images, key):
        member_model = bind(scalars)[0]
        rows = jax.random.permutation(key, n_samples)[:batches * batch_size]
        x = scale_pixels(images[rows]).reshape(batches, batch_size, *images.shape[1:])
        return precise_statistics(member_model, params, bn_state, x)

    return recalibrate
