"""Statistics across seeds: per-epoch summaries and seed-paired comparisons of variants.

Every run of a variant is repeated over the same seeds, so two variants can be compared
*paired by seed*: seed `i` of variant A and seed `i` of variant B share their data order and
initialisation key, and their difference `d_i = a_i - b_i` removes the seed-to-seed noise they
share. The comparison is the paired Student-t test on `d` (what `scipy.stats.ttest_rel` does),
reported as a mean difference with its t confidence interval, a p-value, Cohen's `d_z`, and one
English sentence for reports and the CLI. When every pair of several variants is compared
(`compare_all`), the p-values are Holm-adjusted over the pairs, so that the chance of calling
any difference real when none is stays below α for the whole table.

Distribution quantiles come from `scipy.stats.t`; the tests check every number against
`scipy.stats.ttest_rel` and `scipy.stats.t.interval`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats

from bnlab.analysis import sentences
from bnlab.errors import BnlabError, ConfigError

__all__ = [
    "PairedComparison",
    "SeedSummary",
    "compare_all",
    "compare_final_accuracy",
    "compare_paired",
    "compare_pairs",
    "holm_adjust",
    "summarize_over_seeds",
]


@dataclass(frozen=True, eq=False)
class SeedSummary:
    """Mean and spread over seeds of a metric, per epoch.

    Attributes:
        mean: `(epochs,)` (or `()` for a single value per seed) float64, mean over seeds.
        std: same shape, sample standard deviation over seeds (`ddof=1`); NaN when `n == 1`.
        ci_half_width: same shape, half-width `h` of the Student-t confidence interval of the
            mean, `h = t_{(1+c)/2, n-1} · std / √n`; the interval is `mean ± h`. NaN when
            `n == 1`: one seed says nothing about the spread, and 0 would claim certainty.
        n: number of seeds.
        confidence: the confidence level `c` of the interval, e.g. 0.95.

    The arrays are read-only.
    """

    mean: np.ndarray
    std: np.ndarray
    ci_half_width: np.ndarray
    n: int
    confidence: float

    @property
    def ci_low(self) -> np.ndarray:
        """Lower end of the confidence interval, `mean - ci_half_width`."""
        return self.mean - self.ci_half_width

    @property
    def ci_high(self) -> np.ndarray:
        """Upper end of the confidence interval, `mean + ci_half_width`."""
        return self.mean + self.ci_half_width


@dataclass(frozen=True)
class PairedComparison:
    """A seed-paired comparison of one metric between variants `a` and `b`.

    With `d = a - b` over `n` seeds, `s = std(d, ddof=1)` and `df = n - 1`:

    Attributes:
        name_a, name_b: the variants; every signed number below is `a - b`.
        metric: what was compared, e.g. "validation accuracy".
        epochs: the epoch the final values come from (only used in the sentence), or None.
        n: number of paired seeds.
        mean_difference: `mean(d)`, in the metric's own units (fractions for accuracy).
        ci_half_width: `t_{1-α/2, df} · s / √n`, the half-width of the `1 - α` interval of
            `mean(d)`. 0 when all differences are equal, NaN when `n == 1`.
        p_value: two-sided paired t-test, `2 · sf_t(|mean(d)| / (s/√n); df)`; equals
            `scipy.stats.ttest_rel(a, b).pvalue`. When all differences are equal (`s == 0`)
            the t statistic is undefined (SciPy gives NaN); then it is the exact two-sided
            sign test, `min(1, 2 · 0.5^n)` for a nonzero difference (all n signs agree) and 1
            for a zero difference. NaN when `n == 1`.
        p_adjusted: `p_value` Holm-adjusted over the `comparisons` pairs of one table
            (`compare_all`); equal to `p_value` for a single comparison.
        comparisons: how many pairs were compared together (the Holm family size).
        effect_size_dz: Cohen's `d_z = mean(d) / s`; ±inf for a nonzero constant difference,
            0 for an all-zero difference, NaN when `n == 1`.
        alpha: significance level of the test; the interval has confidence `1 - α`
            (per pair, not adjusted).
        higher_is_better: True for accuracy-like metrics, False for losses.
        winner: the name of the variant that is significantly better (`p_adjusted < α`),
            else None.
        verdict: one sentence stating the result, see `compare_paired`.
    """

    name_a: str
    name_b: str
    metric: str
    epochs: int | None
    n: int
    mean_difference: float
    ci_half_width: float
    p_value: float
    p_adjusted: float
    comparisons: int
    effect_size_dz: float
    alpha: float
    higher_is_better: bool
    winner: str | None
    verdict: str


def summarize_over_seeds(values: np.ndarray, confidence: float = 0.95) -> SeedSummary:
    """Mean, sample std and t confidence interval of a metric over seeds.

    Args:
        values: `(seeds, epochs)` or `(seeds,)` array of a metric, one row per seed.
        confidence: level `c` of the interval, in (0, 1).

    Returns:
        A `SeedSummary` whose arrays have shape `(epochs,)` (or `()` for `(seeds,)` input).
        With a single seed, `std` and `ci_half_width` are NaN.

    Raises:
        ConfigError: `confidence` is not in (0, 1).
        BnlabError: `values` is not 1-D or 2-D, has no seeds, or holds NaN/inf.
    """
    _check_level("confidence", confidence)
    x = _as_seed_array(values, "values", ndims=(1, 2))  # (seeds, ...)
    n = x.shape[0]
    mean = x.mean(axis=0)
    if n == 1:
        std = np.full_like(mean, np.nan)
        half = np.full_like(mean, np.nan)
    else:
        std = x.std(axis=0, ddof=1)
        half = stats.t.ppf((1 + confidence) / 2, n - 1) * std / np.sqrt(n)
    return SeedSummary(
        mean=_read_only(mean),
        std=_read_only(std),
        ci_half_width=_read_only(np.asarray(half, dtype=np.float64)),
        n=n,
        confidence=confidence,
    )


def compare_paired(
    a: np.ndarray,
    b: np.ndarray,
    *,
    name_a: str,
    name_b: str,
    metric: str = "validation accuracy",
    epochs: int | None = None,
    alpha: float = 0.05,
    higher_is_better: bool = True,
    percentage_points: bool = True,
    holm: tuple[float, int, float] | None = None,
) -> PairedComparison:
    """Compare the final metric of two variants over the same seeds (paired t-test).

    Args:
        a, b: `(seeds,)` final values; `a[i]` and `b[i]` come from the same seed.
        name_a, name_b: variant names used in the sentence.
        metric: the metric's name as it should read in the sentence.
        epochs: how many epochs the runs trained (the sentence says "after N epochs"), or None.
        alpha: significance level; the difference is called real when `p < alpha`, and the
            interval shown has confidence `1 - alpha`.
        higher_is_better: True for accuracies, False for losses (lower wins).
        percentage_points: the values are fractions in [0, 1] (accuracies) and the sentence
            shows differences ×100 as "points"; when False it shows raw differences (use it for
            losses). Either way numbers are rounded to the half-width's first significant digit
            (1 to 4 decimals), or to 3 significant digits when there is no spread.
        holm: `(p_adjusted, comparisons, interval_alpha)` when this pair is one of several
            compared together (`compare_all` passes it, from `holm`); the verdict then uses
            the adjusted p and the interval has confidence `1 - interval_alpha`, so that it
            excludes no difference exactly when the adjusted p is below `alpha`.

    Returns:
        A `PairedComparison` (see its attributes for the formulas); its `verdict` is the
        sentence `analysis.sentences.verdict` writes.

    Raises:
        ConfigError: `alpha` is not in (0, 1).
        BnlabError: `a` or `b` is not 1-D, is empty, holds NaN/inf, or their seed counts differ.
    """
    _check_level("alpha", alpha)
    x = _as_seed_array(a, name_a, ndims=(1,))
    y = _as_seed_array(b, name_b, ndims=(1,))
    if x.shape != y.shape:
        raise BnlabError(
            f"cannot pair {name_a!r} ({x.shape[0]} seeds) with {name_b!r} ({y.shape[0]} seeds); "
            "run both variants over the same seeds"
        )
    p_adjusted, comparisons, interval_alpha = holm if holm is not None else (None, 1, alpha)
    n, mean, half, p, dz = paired_test(x, y, interval_alpha)
    p_adjusted = p if p_adjusted is None else p_adjusted
    a_is_better = mean > 0 if higher_is_better else mean < 0
    winner = None
    if n >= 2 and p_adjusted < alpha:
        winner = name_a if a_is_better else name_b
    p_text = sentences.p_text(p_adjusted, alpha) + (
        f" Holm-adjusted over {comparisons} pairs" if comparisons > 1 else "")
    verdict = sentences.verdict(name_a, name_b, metric, epochs, n, mean, half, p_text, dz,
                                winner, percentage_points)
    return PairedComparison(
        name_a=name_a,
        name_b=name_b,
        metric=metric,
        epochs=epochs,
        n=n,
        mean_difference=mean,
        ci_half_width=half,
        p_value=p,
        p_adjusted=p_adjusted,
        comparisons=comparisons,
        effect_size_dz=dz,
        alpha=alpha,
        higher_is_better=higher_is_better,
        winner=winner,
        verdict=verdict,
    )


def paired_test(a: np.ndarray, b: np.ndarray,
                alpha: float) -> tuple[int, float, float, float, float]:
    """``(n, mean(d), half-width of the 1 − α interval, two-sided p, d_z)`` of the paired
    differences ``d = a − b`` (``PairedComparison`` states each): ``scipy.stats.ttest_rel``
    and its ``confidence_interval``, except for constant differences, where the t statistic is
    ±inf (or 0/0) and says nothing: n equal signs have the exact two-sided sign-test p-value
    ``2·0.5^n`` (= ``scipy.stats.binomtest``), and the interval is the difference itself."""
    d = a - b  # (seeds,)
    n, mean = d.shape[0], float(d.mean())
    if n == 1:
        return n, mean, float("nan"), float("nan"), float("nan")
    sd = float(d.std(ddof=1))
    if sd == 0:
        p = min(1.0, 2.0 * 0.5**n) if mean != 0 else 1.0
        return n, mean, 0.0, p, float(np.copysign(np.inf, mean)) if mean != 0 else 0.0
    test = stats.ttest_rel(a, b)
    low, high = test.confidence_interval(1 - alpha)
    return n, mean, float(high - low) / 2, float(test.pvalue), mean / sd


def compare_all(finals: Mapping[str, np.ndarray], **kw: Any) -> list[PairedComparison]:
    """Seed-paired comparisons of every pair of variants.

    Args:
        finals: variant name → `(seeds,)` final values, all over the same seeds.
        **kw: passed to `compare_paired` (`metric`, `epochs`, `alpha`, `higher_is_better`,
            `percentage_points`).

    Returns:
        One `PairedComparison` per unordered pair, `len(finals)·(len(finals)-1)/2` in all, in
        the order of `itertools.combinations` over the mapping's order. Each pair is oriented
        so that `a` is the variant with the better mean (`mean_difference >= 0` for
        accuracies, `<= 0` for losses) and the sentence names it first; ties keep the
        mapping's order. Verdicts use the Holm-adjusted p-values over all the pairs
        (`p_adjusted`); `p_value` keeps each pair's own.
    """
    return compare_pairs(finals, list(combinations(finals, 2)), **kw)


def compare_pairs(finals: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]],
                  **kw: Any) -> list[PairedComparison]:
    """``compare_all`` over the given ``pairs`` of names of ``finals`` only (a sweep's
    comparisons at equal learning rate, say): each pair oriented so that ``a`` has the
    better mean, the Holm adjustment over these pairs."""
    higher_is_better = kw.get("higher_is_better", True)
    oriented, p_values = [], []
    for name_i, name_j in pairs:
        vi, vj = finals[name_i], finals[name_j]
        first = compare_paired(vi, vj, name_a=name_i, name_b=name_j, **kw)  # p is symmetric
        j_is_better = first.mean_difference < 0 if higher_is_better else first.mean_difference > 0
        oriented.append(((name_j, vj), (name_i, vi)) if j_is_better
                        else ((name_i, vi), (name_j, vj)))
        p_values.append(first.p_value)
    family = holm(p_values, kw.get("alpha", 0.05))
    return [compare_paired(va, vb, name_a=na, name_b=nb, holm=adjusted, **kw)
            for ((na, va), (nb, vb)), adjusted in zip(oriented, family, strict=True)]


def compare_final_accuracy(histories: Mapping[str, Mapping[str, np.ndarray]],
                           epochs: int) -> list[PairedComparison]:
    """The verdicts bnlab prints, stores and reports: `compare_all` of every pair of
    variants on the final validation accuracy, `histories[variant]["val_accuracy"]:
    (seeds, epochs)`."""
    return compare_all({name: np.asarray(h["val_accuracy"])[:, -1]
                        for name, h in histories.items()}, epochs=epochs)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: with `p_(1) ≤ … ≤ p_(m)` sorted,
    `adj_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j))`; NaN (one seed) stays NaN and does
    not count in `m`. Rejecting where `adj < α` keeps the family-wise error rate ≤ α."""
    finite = sorted((p, i) for i, p in enumerate(p_values) if not np.isnan(p))
    m = len(finite)
    adjusted = [float("nan")] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def holm_interval_alphas(p_values: Sequence[float], alpha: float) -> list[float]:
    """The level ``α_i`` of each comparison's interval that agrees with Holm's procedure
    (Holm 1979): with ``p_(1) ≤ … ≤ p_(m)`` sorted, the comparison of rank ``i`` is tested at
    ``α / (m − i + 1)`` if every comparison before it was rejected, and the first one kept (at
    rank ``f``) ends the procedure; so ``α_i = α / (m − min(i, f) + 1)``. The interval at
    ``1 − α_i`` then excludes no difference exactly when the Holm-adjusted p is below α (a
    t-interval excludes 0 exactly when its test's p is below its level). NaN p: ``α``."""
    finite = sorted((p, i) for i, p in enumerate(p_values) if not np.isnan(p))
    m = len(finite)
    levels = [alpha] * len(p_values)
    kept_at = None
    for rank, (p, i) in enumerate(finite, 1):
        if kept_at is None and p >= alpha / (m - rank + 1):
            kept_at = rank
        levels[i] = alpha / (m - min(rank, kept_at or rank) + 1)
    return levels


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[tuple[float, int, float]]:
    """Per comparison ``(Holm-adjusted p, comparisons, interval α)``: ``holm_adjust`` and
    ``holm_interval_alphas`` together, what ``compare_paired`` takes as ``holm``."""
    m = sum(not np.isnan(p) for p in p_values)
    return [(p, m, level) for p, level in zip(holm_adjust(p_values),
                                              holm_interval_alphas(p_values, alpha), strict=True)]


def _check_level(name: str, level: float) -> None:
    """Reject a confidence level or significance level outside (0, 1)."""
    if not 0 < level < 1:
        raise ConfigError(f"{name} must be between 0 and 1 (exclusive), got {level}")


def _as_seed_array(values: np.ndarray, name: str, *, ndims: tuple[int, ...]) -> np.ndarray:
    """`values` as float64 with seeds on axis 0, or a one-line error saying what is wrong."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim not in ndims:
        shapes = " or ".join(_SHAPE_NAMES[d] for d in ndims)
        raise BnlabError(f"{name}: expected shape {shapes}, got {x.shape}")
    if x.shape[0] == 0:
        raise BnlabError(f"{name}: no seeds to summarise; run at least one seed")
    if not np.all(np.isfinite(x)):
        raise BnlabError(f"{name}: holds NaN or inf (a diverged run?); drop or rerun those seeds")
    return x


_SHAPE_NAMES = {1: "(seeds,)", 2: "(seeds, epochs)"}


def _read_only(x: np.ndarray) -> np.ndarray:
    """`x` as a float64 array that cannot be modified in place."""
    x = np.array(x, dtype=np.float64)
    x.flags.writeable = False
    return x
