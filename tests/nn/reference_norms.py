"""Independent NumPy references (float64) for the layers of ``bnlab.nn.norms``, transcribed
from the papers with explicit loops over rows, groups and ghosts. Shares no code with bnlab.

Shapes: ``x: (m, features)``; ``gamma, beta, moving_mean, moving_var: (features,)``.
"""

from __future__ import annotations

import numpy as np


def moments(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and biased variance over the first axis."""
    m = rows.shape[0]
    mu = sum(rows[i] for i in range(m)) / m
    return mu, sum((rows[i] - mu) ** 2 for i in range(m)) / m


def renorm_limits(step: int, rmax: float, dmax: float, warmup: int, rmax_steps: int,
                  dmax_steps: int) -> tuple[float, float]:
    """Ioffe 2017 §4: r_max = 1, d_max = 0 until ``warmup``, then linear to ``rmax`` at
    ``rmax_steps`` and ``dmax`` at ``dmax_steps``."""
    def fraction(end: int) -> float:
        if step <= warmup:
            return 0.0
        return min(1.0, (step - warmup) / (end - warmup))

    return 1.0 + (rmax - 1.0) * fraction(rmax_steps), dmax * fraction(dmax_steps)


def renorm_train(x, gamma, beta, moving_mean, moving_var, epsilon, r_max, d_max):
    """Batch Renormalization, Algorithm 1 (training), with σ = √(moving_var + ε).

    Returns ``(y, r, d, μ_B, σ²_B)``.
    """
    x = np.asarray(x, np.float64)
    mu_b, var_b = moments(x)
    sigma_b = np.sqrt(var_b + epsilon)
    sigma = np.sqrt(moving_var + epsilon)
    r = np.minimum(np.maximum(sigma_b / sigma, 1.0 / r_max), r_max)
    d = np.minimum(np.maximum((mu_b - moving_mean) / sigma, -d_max), d_max)
    y = np.empty_like(x)
    for i in range(x.shape[0]):
        y[i] = gamma * ((x[i] - mu_b) / sigma_b * r + d) + beta
    return y, r, d, mu_b, var_b


def ghost_train(x, gamma, beta, epsilon, ghost: int):
    """Ghost BN (Hoffer et al. 2017): Algorithm 1 on each ghost of ``ghost`` consecutive rows.

    Returns ``(y, mean of the ghost means, mean of the ghost variances)``.
    """
    x = np.asarray(x, np.float64)
    y = np.empty_like(x)
    means, variances = [], []
    for start in range(0, x.shape[0], ghost):
        rows = x[start:start + ghost]
        mu, var = moments(rows)
        y[start:start + ghost] = gamma * (rows - mu) / np.sqrt(var + epsilon) + beta
        means.append(mu)
        variances.append(var)
    return y, sum(means) / len(means), sum(variances) / len(variances)


def group_norm(x, gamma, beta, epsilon, groups: int) -> np.ndarray:
    """Group Normalization (Wu & He 2018) of each row; ``groups=1`` is LayerNorm (Ba et al.
    2016)."""
    x = np.asarray(x, np.float64)
    m, features = x.shape
    size = features // groups
    y = np.empty_like(x)
    for i in range(m):
        for g in range(groups):
            cols = slice(g * size, (g + 1) * size)
            values = x[i, cols]
            mu = values.sum() / size
            var = ((values - mu) ** 2).sum() / size
            y[i, cols] = gamma[cols] * (values - mu) / np.sqrt(var + epsilon) + beta[cols]
    return y
