"""An independent NumPy reference for Batch Normalization, in float64.

Transcribed from Ioffe & Szegedy 2015 ("Batch Normalization: Accelerating Deep Network
Training by Reducing Internal Covariate Shift"), Algorithm 1 and the backpropagation
formulas of section 3, and from the framework table in docs/reference.md ("BatchNorm across
frameworks"). It deliberately shares no code with ``bnlab.nn.batchnorm``: loops over the
batch are written as sums over explicit row indices, and the conventions are spelled the
way each framework documents them.

Shapes: ``x: (m, features)``; ``gamma, beta, mean, var: (features,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Convention:
    """How one framework keeps its moving statistics.

    ``weight_on``: ``"old"`` — ``moving = momentum·moving + (1 − momentum)·batch`` (Keras,
    Flax); ``"new"`` — ``moving = (1 − momentum)·moving + momentum·batch`` (PyTorch).
    ``unbiased``: store ``m/(m−1)·σ²_B`` (PyTorch, the paper) instead of ``σ²_B``.
    """

    momentum: float
    epsilon: float
    weight_on: str
    unbiased: bool


# The documented defaults (docs/reference.md, "BatchNorm across frameworks").
KERAS = Convention(momentum=0.99, epsilon=1e-3, weight_on="old", unbiased=False)
PYTORCH = Convention(momentum=0.1, epsilon=1e-5, weight_on="new", unbiased=True)
FLAX = Convention(momentum=0.99, epsilon=1e-5, weight_on="old", unbiased=False)
# Keras's momentum and ε with the paper's unbiased population variance m/(m−1).
PAPER_UNBIASED = Convention(momentum=0.99, epsilon=1e-3, weight_on="old", unbiased=True)

CONVENTIONS = {"keras": KERAS, "pytorch": PYTORCH, "flax": FLAX, "unbiased": PAPER_UNBIASED}


def real_rows(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The rows of ``x`` the statistics are taken over (all rows when ``mask`` is None)."""
    x = np.asarray(x, np.float64)
    return x if mask is None else x[np.asarray(mask, bool)]


def minibatch_stats(x: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray,
                                                                            np.ndarray, int]:
    """Algorithm 1, lines 1–2: ``μ_B = 1/m Σ x_i``, ``σ²_B = 1/m Σ (x_i − μ_B)²``.

    Returns ``(μ_B, σ²_B, m)`` with ``m`` the number of real rows.
    """
    rows = real_rows(x, mask)
    m = rows.shape[0]
    mu = sum(rows[i] for i in range(m)) / m
    var = sum((rows[i] - mu) ** 2 for i in range(m)) / m
    return mu, var, m


def train_forward(x, gamma, beta, epsilon, mask=None) -> tuple[np.ndarray, np.ndarray,
                                                               np.ndarray, int]:
    """Algorithm 1, lines 1–4 for every row of ``x`` (padded rows use the real rows' stats).

    Returns ``(y, μ_B, σ²_B, m)``.
    """
    mu, var, m = minibatch_stats(x, mask)
    x_hat = (np.asarray(x, np.float64) - mu) / np.sqrt(var + epsilon)   # line 3
    y = np.asarray(gamma, np.float64) * x_hat + np.asarray(beta, np.float64)  # line 4
    return y, mu, var, m


def moving_update(moving_mean, moving_var, mu, var, m, conv: Convention):
    """One moving-average update of ``(moving_mean, moving_var)`` with batch ``(μ_B, σ²_B)``."""
    stored_var = var * m / (m - 1) if conv.unbiased else var
    if conv.weight_on == "old":
        keep, take = conv.momentum, 1.0 - conv.momentum
    elif conv.weight_on == "new":
        keep, take = 1.0 - conv.momentum, conv.momentum
    else:
        raise ValueError(conv.weight_on)
    return keep * moving_mean + take * mu, keep * moving_var + take * stored_var


def inference_forward(x, gamma, beta, moving_mean, moving_var, epsilon) -> np.ndarray:
    """Algorithm 2, line 11: ``y = γ/√(Var[x]+ε) · x + (β − γ·E[x]/√(Var[x]+ε))``."""
    x = np.asarray(x, np.float64)
    return gamma / np.sqrt(moving_var + epsilon) * x + (
        beta - gamma * moving_mean / np.sqrt(moving_var + epsilon)
    )


def init_state(features: int) -> tuple[np.ndarray, np.ndarray]:
    """Moving statistics before training: mean 0, variance 1 (Keras, PyTorch, Flax)."""
    return np.zeros(features), np.ones(features)


def run_training(batches, gamma, beta, conv: Convention, masks=None):
    """Train-mode forward on each batch in turn, updating the moving statistics.

    Returns ``(outputs, states)``: one ``y`` and one ``(moving_mean, moving_var)`` per batch.
    """
    moving_mean, moving_var = init_state(np.shape(batches[0])[1])
    outputs, states = [], []
    for k, x in enumerate(batches):
        mask = None if masks is None else masks[k]
        y, mu, var, m = train_forward(x, gamma, beta, conv.epsilon, mask)
        moving_mean, moving_var = moving_update(moving_mean, moving_var, mu, var, m, conv)
        outputs.append(y)
        states.append((moving_mean, moving_var))
    return outputs, states


def train_backward(dy, x, gamma, epsilon) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paper's section 3 chain rule through Algorithm 1, for upstream ``dy = ∂ℓ/∂y``.

        ∂ℓ/∂x̂_i  = ∂ℓ/∂y_i · γ
        ∂ℓ/∂σ²_B = Σ_i ∂ℓ/∂x̂_i · (x_i − μ_B) · (−1/2) (σ²_B + ε)^(−3/2)
        ∂ℓ/∂μ_B  = (Σ_i ∂ℓ/∂x̂_i · −1/√(σ²_B + ε)) + ∂ℓ/∂σ²_B · (Σ_i −2 (x_i − μ_B)) / m
        ∂ℓ/∂x_i  = ∂ℓ/∂x̂_i · 1/√(σ²_B + ε) + ∂ℓ/∂σ²_B · 2 (x_i − μ_B)/m + ∂ℓ/∂μ_B · 1/m
        ∂ℓ/∂γ    = Σ_i ∂ℓ/∂y_i · x̂_i
        ∂ℓ/∂β    = Σ_i ∂ℓ/∂y_i

    Returns ``(∂ℓ/∂x, ∂ℓ/∂γ, ∂ℓ/∂β)``.
    """
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    m = x.shape[0]
    mu, var, _ = minibatch_stats(x)
    inv_std = 1.0 / np.sqrt(var + epsilon)
    x_hat = (x - mu) * inv_std

    d_xhat = dy * gamma
    d_var = sum(d_xhat[i] * (x[i] - mu) for i in range(m)) * -0.5 * (var + epsilon) ** -1.5
    d_mu = sum(d_xhat[i] * -inv_std for i in range(m)) + d_var * sum(
        -2.0 * (x[i] - mu) for i in range(m)
    ) / m
    d_x = np.stack([
        d_xhat[i] * inv_std + d_var * 2.0 * (x[i] - mu) / m + d_mu / m for i in range(m)
    ])
    d_gamma = sum(dy[i] * x_hat[i] for i in range(m))
    d_beta = sum(dy[i] for i in range(m))
    return d_x, d_gamma, d_beta
