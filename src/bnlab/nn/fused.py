"""The fused input-BatchNorm + Dense training path.

In bn_after and bn_before the first BatchNorm normalizes the model's input and feeds a Dense
layer. In training that pair runs as one ``scale_shift_dense``: the data need no gradient, so
γ and β get theirs without the first Dense layer's input-gradient product, the largest
single matrix product of a BN step (same values; ``benchmarks/profile_epoch.py`` measures
the effect). Inference and every other model run ``Sequential.apply`` unchanged.

    logits, bn_state = apply_training(model, params, bn_state, x, mask=mask, key=key)

equals ``model.apply(params, bn_state, x, train=True, mask=mask, key=key)`` in value and
gradient (``tests/nn/test_fused.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.layers import MATMUL_PRECISION, Dense, Flatten
from bnlab.nn.model import Sequential

Array = jax.Array


def input_batchnorm_dense(model: Sequential) -> int | None:
    """Index of a BatchNorm that normalizes the model's input (only Flatten before it) and
    feeds a Dense layer, else ``None``. Only BatchNorm itself: a subclass (NoisyBatchNorm)
    does more after its affine step than the fused pair computes."""
    for i, layer in enumerate(model.layers[:-1]):
        if type(layer) is BatchNorm:
            return i if isinstance(model.layers[i + 1], Dense) else None
        if not isinstance(layer, Flatten):
            return None
    return None


def apply_training(
    model: Sequential,
    params: tuple[dict, ...],
    bn_state: tuple[dict, ...],
    x: Array,
    *,
    mask: Array | None = None,
    key: Array | None = None,
) -> tuple[Array, tuple[dict, ...]]:
    """``model.apply(..., train=True)`` with an input BatchNorm and the Dense layer after
    it (``input_batchnorm_dense``) run as one ``scale_shift_dense``; the plain
    ``model.apply`` when the model has no such pair. Returns ``(logits, new_bn_state)``."""
    index = input_batchnorm_dense(model)
    if index is None:
        return model.apply(params, bn_state, x, train=True, mask=mask, key=key)
    for i in range(index):  # Flatten layers only
        x, _ = model.layers[i].apply(params[i], bn_state[i], x, train=True)
    batchnorm, dense = model.layers[index], model.layers[index + 1]
    x_hat, normalized_state = batchnorm.normalize(bn_state[index], x, mask=mask)
    gamma, beta = batchnorm.affine(params[index], bn_state[index], x_hat)
    kernel = params[index + 1]["kernel"]
    bias = (params[index + 1]["bias"] if dense.use_bias
            else jnp.zeros(kernel.shape[-1:], kernel.dtype))
    x = model.dense_output(index + 1, scale_shift_dense(x_hat, gamma, beta, kernel, bias))
    logits, new_bn_state, _ = model.apply_with_intermediates(
        params, bn_state, x, train=True, mask=mask, key=key, start=index + 2)
    return logits, (*new_bn_state[:index], normalized_state, *new_bn_state[index + 1:])


@jax.custom_vjp
def scale_shift_dense(x_hat: Array, gamma: Array, beta: Array, kernel: Array,
                      bias: Array) -> Array:
    """``(γ·x̂ + β) @ kernel + bias``: a BatchNorm's step 4 and the Dense layer after it,
    ``x_hat: (batch, features)``, ``kernel: (features, units)`` → ``(batch, units)``.

    Same values as the two layers one after the other; the difference is the backward pass.
    With ``M = x̂ᵀ·dZ`` (the product the kernel's gradient needs anyway) and ``c = Σ_rows dZ``:

        dkernel = γ·M + β⊗c,   dγ_i = Σ_j kernel_ij·M_ij,   dβ = kernel·c,   dbias = c,
        dx̂ = (dZ·kernelᵀ)·γ

    so γ and β get their gradients without the batch's input gradient ``dZ·kernelᵀ``. Where
    nothing needs ``dx̂`` — a BatchNorm on the model's input, whose input is the data — XLA
    drops that product: one (batch × units × features) matrix product less per step (the
    largest single operation of a bn_after step, measured by ``benchmarks/profile_epoch.py``).
    """
    y = x_hat * gamma[None, :] + beta[None, :]
    return jnp.matmul(y, kernel, precision=MATMUL_PRECISION) + bias[None, :]


def _scale_shift_dense_forward(x_hat, gamma, beta, kernel, bias):
    return scale_shift_dense(x_hat, gamma, beta, kernel, bias), (x_hat, gamma, beta, kernel)


def _scale_shift_dense_backward(residuals, dz):
    x_hat, gamma, beta, kernel = residuals
    m = jnp.matmul(x_hat.T, dz, precision=MATMUL_PRECISION)  # (features, units)
    c = dz.sum(axis=0)  # (units,)
    dkernel = gamma[:, None] * m + beta[:, None] * c[None, :]
    dgamma = jnp.sum(kernel * m, axis=1)
    dbeta = jnp.matmul(kernel, c, precision=MATMUL_PRECISION)
    dx_hat = jnp.matmul(dz, kernel.T, precision=MATMUL_PRECISION) * gamma[None, :]
    return dx_hat, dgamma, dbeta, dkernel, c


scale_shift_dense.defvjp(_scale_shift_dense_forward, _scale_shift_dense_backward)


