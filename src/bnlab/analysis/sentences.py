"""The sentences of a seed-paired comparison (``analysis.stats.compare_paired``).

``verdict`` writes one of:

- "bn_after beats baseline by 3.4 ± 0.6 points of validation accuracy after 10 epochs
  (p < 0.01, d_z = 3.1, 5 seeds)" when ``p < alpha``; the better variant is named first and
  the advantage is shown positive.
- "bn_after and baseline are not distinguishable on validation accuracy after 10 epochs
  (difference 0.3 ± 1.1 points, p = 0.52, d_z = 0.3, 5 seeds)" otherwise; the difference is
  ``a - b``.
- "with one seed, bn_after and baseline cannot be distinguished on ... (difference 0.3
  points; a paired t-test needs at least 2 seeds)" when ``n == 1``.

``±`` is the half-width of the ``1 - alpha`` interval; numbers are rounded to the
half-width's first significant digit (1 to 4 decimals), or to 3 significant digits when there
is no spread; p reads "p < 0.001", "p < 0.01" or "p = 0.034" (two significant digits, three
where two would round across α), followed by "Holm-adjusted over k pairs" when a family of k
pairs was compared.
"""

from __future__ import annotations

import numpy as np


def verdict(
    name_a: str,
    name_b: str,
    metric: str,
    epochs: int | None,
    n: int,
    mean: float,
    half: float,
    p_text: str,
    dz: float,
    winner: str | None,
    percentage_points: bool,
) -> str:
    """The sentence of the module docstring."""
    after = "" if epochs is None else f" after {epochs} epoch{'s' if epochs != 1 else ''}"
    unit = " points" if percentage_points else ""
    scale = 100.0 if percentage_points else 1.0
    if n == 1:
        return (
            f"with one seed, {name_a} and {name_b} cannot be distinguished on {metric}{after} "
            f"(difference {rounded(scale * mean, decimal_places(0.0, scale * mean))}{unit}; "
            "a paired t-test needs at least 2 seeds)"
        )
    places = decimal_places(scale * half, scale * mean)
    shown_half = rounded(scale * half, places)
    effect = "d_z = " + ("∞" if np.isinf(dz) else rounded(abs(dz) if winner else dz, 1))
    if winner is not None:
        loser = name_b if winner == name_a else name_a
        by = f"{rounded(scale * abs(mean), places)} ± {shown_half}"
        of = " points of " if percentage_points else " in "
        return (f"{winner} beats {loser} by {by}{of}{metric}{after} "
                f"({p_text}, {effect}, {n} seeds)")
    return (
        f"{name_a} and {name_b} are not distinguishable on {metric}{after} "
        f"(difference {rounded(scale * mean, places)} ± {shown_half}{unit}, "
        f"{p_text}, {effect}, {n} seeds)"
    )


def decimal_places(half: float, value: float) -> int:
    """Decimals for a shown difference, from 1 to 4.

    The usual "round to the uncertainty" rule: the half-width gets one significant digit
    (0.44 → 1 place, 0.0044 → 3 places). Without a positive half-width (one seed, or constant
    differences) the value gets three significant digits instead.
    """
    if half > 0:
        places = -np.floor(np.log10(half))
    elif value != 0:
        places = 2 - np.floor(np.log10(abs(value)))
    else:
        places = 1
    return int(np.clip(places, 1, 4))


def rounded(x: float, places: int) -> str:
    """`x` with `places` decimals, never printed as "-0.0"."""
    text = f"{x:.{places}f}"
    return text.removeprefix("-") if float(text) == 0 else text


def p_text(p: float, alpha: float) -> str:
    """The p-value as "p < 0.001", "p < 0.01" or "p = 0.034": two significant digits, or
    three where two would round across α (0.0496 is "p = 0.0496", never "p = 0.050")."""
    if p < 0.001 and alpha > 0.001:
        return "p < 0.001"
    if p < 0.01 and alpha > 0.01:
        return "p < 0.01"
    text = f"{p:#.2g}"
    if (float(text) < alpha) != (p < alpha):
        text = f"{p:#.3g}"
    return f"p = {text.rstrip('.')}"


