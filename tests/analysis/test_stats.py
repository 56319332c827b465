"""Statistics across seeds, checked against SciPy, NumPy and hand-computed values.

Tolerances: the module and SciPy evaluate the same float64 formulas in a slightly different
order, so p-values and intervals agree to rounding error; 1e-12 relative is far above that
(~1e-15) and far below any difference that would change a reported digit.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from bnlab.analysis.sentences import p_text
from bnlab.analysis.stats import (
    compare_all,
    compare_paired,
    holm_adjust,
    summarize_over_seeds,
)
from bnlab.errors import BnlabError, ConfigError

RTOL = 1e-12

# Final validation accuracies of two variants over 6 seeds, paired by seed: 6 unrelated
# baselines plus differences of 1..6 percentage points.
BASELINE = np.array([0.861, 0.874, 0.852, 0.880, 0.869, 0.858])
BN_AFTER = BASELINE + np.array([1, 2, 3, 4, 5, 6]) / 100


def _runs(seeds: int, epochs: int, seed: int) -> np.ndarray:
    """`(seeds, epochs)` accuracy-like curves with seed noise."""
    rng = np.random.default_rng(seed)
    return 0.8 + 0.1 * np.linspace(0, 1, epochs) + 0.02 * rng.standard_normal((seeds, epochs))


# --- summarize_over_seeds -------------------------------------------------------------------


def test_summary_mean_and_std_match_numpy_per_epoch():
    values = _runs(seeds=5, epochs=7, seed=0)
    summary = summarize_over_seeds(values)
    assert summary.n == 5
    assert summary.mean.shape == summary.std.shape == summary.ci_half_width.shape == (7,)
    np.testing.assert_allclose(summary.mean, values.mean(axis=0), rtol=RTOL)
    np.testing.assert_allclose(summary.std, values.std(axis=0, ddof=1), rtol=RTOL)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_summary_interval_matches_scipy_t_interval(confidence):
    values = _runs(seeds=4, epochs=3, seed=1)
    summary = summarize_over_seeds(values, confidence=confidence)
    low, high = stats.t.interval(
        confidence,
        df=3,
        loc=values.mean(axis=0),
        scale=values.std(axis=0, ddof=1) / math.sqrt(4),
    )
    np.testing.assert_allclose(summary.ci_low, low, rtol=RTOL)
    np.testing.assert_allclose(summary.ci_high, high, rtol=RTOL)
    assert summary.confidence == confidence


def test_summary_hand_example_three_seeds():
    # values 1, 2, 3: mean 2, s = sqrt(((1-2)² + 0 + (3-2)²) / 2) = 1,
    # half-width = t_{0.975, 2} · 1 / √3 = 4.302652729749464 / 1.7320508075688772.
    summary = summarize_over_seeds(np.array([1.0, 2.0, 3.0]))
    assert summary.mean.shape == ()
    assert summary.mean == pytest.approx(2.0, rel=RTOL)
    assert summary.std == pytest.approx(1.0, rel=RTOL)
    assert summary.ci_half_width == pytest.approx(4.302652729749464 / math.sqrt(3), rel=1e-12)


@pytest.mark.filterwarnings("error")
def test_summary_of_one_seed_has_nan_spread_and_no_warning():
    summary = summarize_over_seeds(np.array([[0.5, 0.6, 0.7]]))
    assert summary.n == 1
    np.testing.assert_array_equal(summary.mean, [0.5, 0.6, 0.7])
    assert np.isnan(summary.std).all()
    assert np.isnan(summary.ci_half_width).all()


def test_summary_arrays_are_read_only():
    summary = summarize_over_seeds(_runs(seeds=3, epochs=2, seed=2))
    with pytest.raises(ValueError, match="read-only"):
        summary.mean[0] = 0.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.zeros((2, 3, 4)), "expected shape"),
        (np.zeros((0, 3)), "no seeds"),
        (np.array([0.5, np.nan]), "NaN or inf"),
    ],
)
def test_summary_rejects_bad_values_with_one_line_error(values, message):
    with pytest.raises(BnlabError, match=message):
        summarize_over_seeds(values)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95.0])
def test_summary_rejects_confidence_outside_open_unit_interval(confidence):
    with pytest.raises(ConfigError, match="between 0 and 1"):
        summarize_over_seeds(np.ones(3), confidence=confidence)


# --- compare_paired: numbers ------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_paired_p_value_matches_scipy_ttest_rel(seed):
    rng = np.random.default_rng(seed)
    a = 0.9 + 0.01 * rng.standard_normal(seed + 2)
    b = 0.9 + 0.01 * rng.standard_normal(seed + 2)
    result = compare_paired(a, b, name_a="a", name_b="b")
    reference = stats.ttest_rel(a, b)
    assert result.p_value == pytest.approx(reference.pvalue, rel=RTOL)
    assert result.n == seed + 2


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
def test_paired_interval_matches_scipy_t_interval_and_ttest_rel(alpha):
    result = compare_paired(BN_AFTER, BASELINE, name_a="bn_after", name_b="baseline", alpha=alpha)
    d = BN_AFTER - BASELINE
    low, high = stats.t.interval(1 - alpha, df=5, loc=d.mean(), scale=d.std(ddof=1) / math.sqrt(6))
    assert result.mean_difference - result.ci_half_width == pytest.approx(low, rel=RTOL)
    assert result.mean_difference + result.ci_half_width == pytest.approx(high, rel=RTOL)
    ci = stats.ttest_rel(BN_AFTER, BASELINE).confidence_interval(confidence_level=1 - alpha)
    assert result.ci_half_width == pytest.approx((ci.high - ci.low) / 2, rel=RTOL)


def test_paired_hand_example_differences_one_to_five():
    # d = [1, 2, 3, 4, 5]: mean 3; s² = (4 + 1 + 0 + 1 + 4) / 4 = 2.5; se = √(2.5 / 5) = √0.5;
    # t = 3 / √0.5 = 4.2426; d_z = 3 / √2.5 = 1.8974;
    # half-width = t_{0.975, 4} · √0.5 = 2.7764451051977987 · 0.7071 = 1.9632;
    # p = 2 · sf_t(4.2426; 4) = 0.013235599563682 (tables: t = 4.24 with 4 df → p ≈ 0.013).
    b = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    a = b + np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    result = compare_paired(a, b, name_a="a", name_b="b", percentage_points=False)
    assert result.n == 5
    assert result.mean_difference == pytest.approx(3.0, rel=RTOL)
    assert result.effect_size_dz == pytest.approx(3 / math.sqrt(2.5), rel=RTOL)
    assert result.ci_half_width == pytest.approx(2.7764451051977987 * math.sqrt(0.5), rel=1e-12)
    assert result.p_value == pytest.approx(0.013235599563682, rel=1e-9)
    assert result.winner == "a"


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("n", [2, 4, 6])
def test_paired_constant_nonzero_difference_falls_back_to_the_exact_sign_test(n):
    # Every difference is exactly 0.25: the t statistic is undefined (SciPy gives NaN), so
    # the p-value is the two-sided sign test of n agreeing signs, as scipy.stats.binomtest.
    a = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])[:n]
    b = a - 0.25  # exact in binary
    result = compare_paired(a, b, name_a="bn", name_b="plain", epochs=3)
    assert result.p_value == pytest.approx(stats.binomtest(n, n).pvalue, rel=1e-12)
    assert result.effect_size_dz == math.inf
    assert result.ci_half_width == 0.0
    if n < 6:  # 2·0.5^4 = 0.125: four agreeing seeds are not enough at α = 0.05
        assert result.winner is None
        assert result.verdict.startswith("bn and plain are not distinguishable")
    else:
        assert result.winner == "bn"
        assert result.verdict == (
            "bn beats plain by 25.0 ± 0.0 points of validation accuracy after 3 epochs "
            "(p = 0.031, d_z = ∞, 6 seeds)"
        )


@pytest.mark.filterwarnings("error")
def test_paired_identical_runs_are_not_distinguishable_without_warning():
    a = np.array([0.9, 0.8, 0.7])
    result = compare_paired(a, a.copy(), name_a="x", name_b="y", epochs=2)
    assert (result.mean_difference, result.ci_half_width) == (0.0, 0.0)
    assert (result.p_value, result.effect_size_dz) == (1.0, 0.0)
    assert result.winner is None
    assert result.verdict == (
        "x and y are not distinguishable on validation accuracy after 2 epochs "
        "(difference 0.0 ± 0.0 points, p = 1.0, d_z = 0.0, 3 seeds)"
    )


def test_paired_rejects_different_seed_counts():
    with pytest.raises(BnlabError, match="same seeds"):
        compare_paired(np.ones(3), np.ones(4), name_a="x", name_b="y")


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.05])
def test_paired_rejects_alpha_outside_open_unit_interval(alpha):
    with pytest.raises(ConfigError, match="alpha"):
        compare_paired(np.ones(3), np.ones(3), name_a="x", name_b="y", alpha=alpha)


# --- compare_paired: sentences ----------------------------------------------------------------


def test_verdict_beats_names_winner_first_in_points_with_p_below_001():
    # d = 1..6 points: mean 3.5, s = √3.5, half-width = t_{0.975,5}·√3.5/√6 = 1.96, p = 0.0059.
    result = compare_paired(BASELINE, BN_AFTER, name_a="baseline", name_b="bn_after", epochs=10)
    assert result.verdict == (
        "bn_after beats baseline by 3.5 ± 2.0 points of validation accuracy after 10 epochs "
        "(p < 0.01, d_z = 1.9, 6 seeds)"
    )
    assert result.mean_difference < 0
    assert result.winner == "bn_after"


def test_verdict_beats_shows_p_with_two_significant_digits():
    # d = 1..5 points: p = 0.013235..., see the hand example above.
    result = compare_paired(
        BN_AFTER[:5], BASELINE[:5], name_a="bn_after", name_b="baseline", epochs=1
    )
    assert result.verdict == (
        "bn_after beats baseline by 3.0 ± 2.0 points of validation accuracy after 1 epoch "
        "(p = 0.013, d_z = 1.9, 5 seeds)"
    )


def test_verdict_not_distinguishable_reports_signed_difference_and_p():
    # d = [-1, 0, 1, 2] points: mean 0.5, s = √(5/3), half-width = t_{0.975,3}·s/2 = 2.05,
    # t = 0.5 / (s/2) = 0.7746, p = 0.495.
    b = BASELINE[:4]
    a = b + np.array([-1, 0, 1, 2]) / 100
    result = compare_paired(a, b, name_a="bn_before", name_b="baseline", epochs=10)
    assert result.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=RTOL)
    assert result.winner is None
    assert result.verdict == (
        "bn_before and baseline are not distinguishable on validation accuracy after 10 epochs "
        "(difference 0.5 ± 2.1 points, p = 0.50, d_z = 0.4, 4 seeds)"
    )


def test_verdict_p_above_alpha_is_not_distinguishable_even_when_below_005():
    result = compare_paired(
        BN_AFTER[:5], BASELINE[:5], name_a="bn_after", name_b="baseline", alpha=0.01
    )
    assert result.winner is None
    assert result.verdict.startswith("bn_after and baseline are not distinguishable")
    assert "p = 0.013, d_z = 1.9, 5 seeds)" in result.verdict


@pytest.mark.filterwarnings("error")
def test_verdict_one_seed_says_it_cannot_distinguish_and_gives_no_p():
    result = compare_paired(
        np.array([0.91]), np.array([0.88]), name_a="bn_after", name_b="baseline", epochs=10
    )
    assert result.n == 1
    assert math.isnan(result.p_value)
    assert math.isnan(result.ci_half_width)
    assert math.isnan(result.effect_size_dz)
    assert result.winner is None
    assert result.verdict == (
        "with one seed, bn_after and baseline cannot be distinguished on validation accuracy "
        "after 10 epochs (difference 3.00 points; a paired t-test needs at least 2 seeds)"
    )


def test_verdict_for_loss_calls_the_lower_loss_the_winner():
    # Losses: d = bn - plain = -[0.01, 0.02, 0.03, 0.04, 0.05], mean -0.03, half-width 0.0196.
    plain = np.array([0.40, 0.35, 0.42, 0.38, 0.36])
    bn = plain - np.array([0.01, 0.02, 0.03, 0.04, 0.05])
    result = compare_paired(
        plain,
        bn,
        name_a="plain",
        name_b="bn",
        metric="validation loss",
        epochs=5,
        higher_is_better=False,
        percentage_points=False,
    )
    assert result.mean_difference > 0
    assert result.winner == "bn"
    assert result.verdict == (
        "bn beats plain by 0.03 ± 0.02 in validation loss after 5 epochs "
        "(p = 0.013, d_z = 1.9, 5 seeds)"
    )


def test_verdict_without_epochs_omits_after_clause():
    result = compare_paired(BN_AFTER, BASELINE, name_a="bn_after", name_b="baseline")
    assert result.verdict == (
        "bn_after beats baseline by 3.5 ± 2.0 points of validation accuracy "
        "(p < 0.01, d_z = 1.9, 6 seeds)"
    )


# --- properties -------------------------------------------------------------------------------


def _same(x: float, y: float) -> bool:
    """Equal as numbers (so 0.0 == -0.0), or both NaN."""
    return x == y or (math.isnan(x) and math.isnan(y))


paired_finals = st.integers(min_value=1, max_value=8).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(0, 1), min_size=n, max_size=n),
        st.lists(st.floats(0, 1), min_size=n, max_size=n),
    )
)


@pytest.mark.filterwarnings("error")
@settings(deadline=None, max_examples=200)
@given(paired_finals, st.booleans())
def test_swapping_a_and_b_flips_difference_and_keeps_p(pair, higher_is_better):
    a, b = (np.array(x) for x in pair)
    kw = {"higher_is_better": higher_is_better}
    ab = compare_paired(a, b, name_a="a", name_b="b", **kw)
    ba = compare_paired(b, a, name_a="b", name_b="a", **kw)
    assert ba.mean_difference == -ab.mean_difference
    assert _same(ba.p_value, ab.p_value)
    assert _same(ba.ci_half_width, ab.ci_half_width)
    assert _same(ba.effect_size_dz, -ab.effect_size_dz)
    assert ba.winner == ab.winner
    assert ab.n < 2 or 0.0 <= ab.p_value <= 1.0


# --- compare_all ------------------------------------------------------------------------------


def test_compare_all_gives_every_pair_once_with_the_better_variant_first():
    finals = {
        "baseline": BASELINE,
        "bn_after": BN_AFTER,
        "bn_before": BN_AFTER + np.array([1, 0, 1, 1, 2, 1]) / 100,
    }
    results = compare_all(finals, epochs=10)
    pairs = [(r.name_a, r.name_b) for r in results]
    assert pairs == [("bn_after", "baseline"), ("bn_before", "baseline"), ("bn_before", "bn_after")]
    assert all(r.mean_difference >= 0 for r in results)
    # bn_before - bn_after = [1, 0, 1, 1, 2, 1] points: mean 1, s = √0.4,
    # half-width = t_{0.975,5}·√0.4/√6 = 0.66, t = 3.87, p = 0.0117; Holm over 3 pairs: the
    # raw p-values sort as 0.00455 (bn_before−baseline) ×3 = 0.0136, 0.00593 ×2 = 0.0119,
    # 0.0117 ×1, and the running maximum makes this pair's adjusted p 0.0136.
    raw = [stats.ttest_rel(finals[r.name_a], finals[r.name_b]).pvalue for r in results]
    order = np.argsort(raw)
    expected = np.maximum.accumulate([min(1, (3 - k) * raw[i]) for k, i in enumerate(order)])
    for k, i in enumerate(order):
        assert results[i].p_value == pytest.approx(raw[i], rel=RTOL)
        assert results[i].p_adjusted == pytest.approx(expected[k], rel=RTOL)
        assert results[i].comparisons == 3
    assert results[2].p_adjusted == pytest.approx(0.0136, abs=1e-4)
    assert results[2].verdict == (
        "bn_before beats bn_after by 1.0 ± 0.7 points of validation accuracy after 10 epochs "
        "(p = 0.014 Holm-adjusted over 3 pairs, d_z = 1.6, 6 seeds)"
    )


def test_holm_adjust_hand_example_and_nan_passthrough():
    # sorted 0.01, 0.03, 0.04 → ×3, ×2, ×1 = 0.03, 0.06, 0.04 → running max 0.03, 0.06, 0.06
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([0.6, 0.9]) == pytest.approx([1.0, 1.0])
    adjusted = holm_adjust([float("nan"), 0.02])
    assert math.isnan(adjusted[0]) and adjusted[1] == pytest.approx(0.02)


def test_holm_adjustment_can_turn_a_pair_into_not_distinguishable():
    # Three pairs with the same t statistic, p = 0.035 each: each would "beat" alone; Holm
    # adjusts all three to 3 × 0.035 = 0.106.
    base = np.array([0.80, 0.82, 0.81, 0.79])
    step = np.array([1.5, 2.5, 0.5, 2.5]) / 100
    finals = {"a": base + step, "b": base, "c": base - step}
    alone = compare_paired(finals["a"], finals["b"], name_a="a", name_b="b")
    assert alone.winner == "a"
    together = compare_all(finals)
    a_vs_b = next(r for r in together if (r.name_a, r.name_b) == ("a", "b"))
    assert a_vs_b.p_value == pytest.approx(alone.p_value, rel=RTOL)
    assert a_vs_b.p_adjusted == pytest.approx(3 * alone.p_value, rel=RTOL)
    assert a_vs_b.winner is None
    assert "Holm-adjusted over 3 pairs" in a_vs_b.verdict


@pytest.mark.parametrize(("p", "text"), [
    (0.0496, "p = 0.0496"), (0.0504, "p = 0.050"), (0.04, "p = 0.040"), (0.039, "p = 0.039"),
    (0.0005, "p < 0.001"), (0.005, "p < 0.01"), (0.5, "p = 0.50"), (1.0, "p = 1.0"),
])
def test_p_values_are_never_rounded_across_alpha(p, text):
    assert p_text(p, 0.05) == text


def test_compare_all_for_loss_puts_the_lower_loss_first():
    finals = {"bn": np.array([0.30, 0.32, 0.31]), "plain": np.array([0.41, 0.40, 0.45])}
    [result] = compare_all(
        finals, metric="validation loss", higher_is_better=False, percentage_points=False
    )
    assert (result.name_a, result.name_b) == ("bn", "plain")
    assert result.mean_difference < 0


def test_compare_all_of_one_variant_is_empty():
    assert compare_all({"baseline": BASELINE}) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.floats(-1, 1, allow_nan=False), min_size=3, max_size=3),
                min_size=2, max_size=6),
       st.sampled_from([0.05, 0.1]))
def test_each_interval_excludes_no_difference_exactly_when_holm_rejects(differences, alpha):
    """``holm``: the interval at each comparison's level agrees with its Holm-adjusted p, so
    a sentence never calls a difference unclear while its interval excludes zero (or the
    reverse)."""
    from bnlab.analysis.stats import compare_pairs

    base = np.array([0.5, 0.6, 0.7])
    finals = {"ref": base} | {f"v{i}": base + np.array(d) * np.array([1, 1.3, 0.7])
                              for i, d in enumerate(differences)}
    pairs = [(name, "ref") for name in finals if name != "ref"]
    for c in compare_pairs(finals, pairs, alpha=alpha):
        if not np.isfinite(c.p_adjusted) or c.ci_half_width == 0 or abs(
                abs(c.mean_difference) - c.ci_half_width) < 1e-9:
            continue  # constant differences (sign test) or a bound exactly at zero
        excludes = abs(c.mean_difference) > c.ci_half_width
        assert excludes == (c.p_adjusted < alpha), (c.p_adjusted, c.mean_difference,
                                                    c.ci_half_width)


def test_holm_interval_levels_follow_the_step_down_and_stop_at_the_first_kept():
    from bnlab.analysis.stats import holm_interval_alphas

    # sorted: 0.001 rejected at α/4, 0.01 at α/3, 0.03 kept (≥ α/2): it and 0.04 at α/2
    levels = holm_interval_alphas([0.03, 0.001, 0.01, 0.04], 0.05)
    assert levels == pytest.approx([0.05 / 2, 0.05 / 4, 0.05 / 3, 0.05 / 2])
    assert holm_interval_alphas([0.2, float("nan")], 0.05) == pytest.approx([0.05, 0.05])
