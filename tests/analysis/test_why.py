"""Why-BN numbers (``analysis.why``): ratios paired by seed against SciPy's paired t-test on
the log values, the per-seed summaries against their definitions, and sentences that follow
the numbers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bnlab.analysis.why import (
    beta_smoothness,
    drift,
    findings,
    geometric_mean,
    per_seed,
    ratio_finding,
    summary_lines,
)


def test_a_ratio_is_the_geometric_mean_with_the_t_interval_of_the_log_ratios():
    rng = np.random.default_rng(0)
    b = rng.uniform(1, 3, 6)
    a = b * np.exp(rng.normal(-1.0, 0.2, 6))
    f = ratio_finding("q", "a", "b", a, b)
    logs = np.log(a) - np.log(b)
    assert f.ratio == pytest.approx(np.exp(logs.mean()))
    low, high = stats.t.interval(0.95, 5, loc=logs.mean(), scale=stats.sem(logs))
    assert (f.low, f.high) == pytest.approx((np.exp(low), np.exp(high)))
    assert f.p_value == pytest.approx(stats.ttest_rel(np.log(a), np.log(b)).pvalue)
    assert f.n == 6


def test_findings_holm_adjust_and_say_what_the_numbers_say():
    rng = np.random.default_rng(1)
    base = {"x": rng.uniform(1, 2, 5), "y": rng.uniform(1, 2, 5)}
    lower = {"x": base["x"] * 0.25 * np.exp(rng.normal(0, 0.05, 5)),  # clearly 4× lower
             "y": base["y"] * np.exp(rng.normal(0, 0.3, 5))}           # no real change
    out = {f.quantity: f for f in findings({"baseline": base, "bn": lower})}
    raw = [out["x"].p_value, out["y"].p_value]
    assert out["x"].p_adjusted == pytest.approx(min(1, 2 * min(raw)))  # Holm, 2 tests
    assert out["x"].family == 2
    assert out["x"].sentence.startswith("bn lowers x by")
    assert "do not differ measurably" in out["y"].sentence or out["y"].significant
    assert f"{out['x'].n} seeds" in out["x"].sentence


def test_one_seed_and_diverged_seeds_give_no_interval_and_say_why():
    f = ratio_finding("q", "a", "b", np.array([2.0, np.nan]), np.array([1.0, 1.0]))
    assert f.n == 1 and np.isnan(f.low)
    (one,) = findings({"b": {"q": np.array([1.0, 1.0])}, "a": {"q": np.array([2.0, np.nan])}})
    assert "one seed" in one.sentence
    (none,) = findings({"b": {"q": np.array([1.0])}, "a": {"q": np.array([np.nan])}})
    assert "no seed" in none.sentence


def test_per_seed_summaries_follow_their_definitions():
    rng = np.random.default_rng(2)
    seeds, m, sizes = 3, 4, 2
    records = {
        "measures/grad_change": rng.uniform(1, 2, (seeds, m, sizes)).astype(np.float32),
        "measures/step_sizes": np.full((seeds, m, sizes), [0.1, 0.2], np.float32),
        "measures/grad_norm": rng.uniform(1, 2, (seeds, m)).astype(np.float32),
        "measures/loss_along": rng.uniform(0, 1, (seeds, m, sizes)).astype(np.float32),
        "measures/ics/dense": np.zeros((seeds, m), np.float32),  # nothing below it
        "measures/ics/dense_1": rng.uniform(1, 2, (seeds, m)).astype(np.float32),
        "measures/steps": np.arange(m) * 100,
        "activations/dense/pre_activation/layer": rng.normal(size=(seeds, 5, 7)).astype(
            np.float32),
        "activations/steps": np.arange(5) * 100,
    }
    out = per_seed(records)
    beta = np.max(records["measures/grad_change"] / (records["measures/step_sizes"]
                  * records["measures/grad_norm"][..., None]), axis=-1)
    np.testing.assert_allclose(beta_smoothness(records), beta, rtol=1e-6)
    np.testing.assert_allclose(out["effective β-smoothness"],
                               np.exp(np.log(beta).mean(axis=1)), rtol=1e-6)
    assert "internal covariate shift of dense" not in out  # zero by definition: skipped
    np.testing.assert_allclose(out["internal covariate shift of dense_1"],
                               geometric_mean(records["measures/ics/dense_1"]), rtol=1e-6)
    bands = records["activations/dense/pre_activation/layer"][..., :3].astype(np.float64)
    want = (np.abs(np.diff(bands, axis=1)).sum(-1).mean(1)
            / (bands[..., 2] - bands[..., 0]).mean(1))
    np.testing.assert_allclose(out["distribution drift at hidden layer 1"], want)
    np.testing.assert_allclose(drift(records["activations/dense/pre_activation/layer"]), want)


def test_intervals_of_a_family_are_at_holms_level_so_they_agree_with_the_adjusted_p():
    rng = np.random.default_rng(3)
    base = {f"q{k}": rng.uniform(1, 2, 4) for k in range(6)}
    moved = {q: v * np.exp(rng.normal(-0.4, 0.3, 4)) for q, v in base.items()}
    for f in findings({"ref": base, "bn": moved}):
        assert f.family == 6 and "adjusted CI" in f.sentence
        assert (f.high < 1 or f.low > 1) == f.significant, f.sentence


def test_a_sweeps_findings_pair_points_at_the_same_axis_value_and_summarise_per_variant():
    rng = np.random.default_rng(4)
    per_point = {}
    for lr in ("0.01", "0.1", "1.0"):
        ref = rng.uniform(1, 2, 5)
        per_point[f"base@lr={lr}"] = {"smoothness": ref}
        factor = 0.25 if lr != "1.0" else 1.0  # lower at two rates, unchanged at the third
        per_point[f"bn@lr={lr}"] = {"smoothness": ref * factor * np.exp(rng.normal(0, .02, 5))}
    per_point["bn@lr=1.0"]["smoothness"][:4] = np.nan  # diverged: one seed left
    pairs = [(f"bn@lr={lr}", f"base@lr={lr}") for lr in ("0.01", "0.1", "1.0")]
    found = findings(per_point, pairs)
    assert [(f.variant, f.reference) for f in found] == pairs  # like with like
    variant_of = {name: name.split("@")[0] for name in per_point}
    axis = {name: name.split("@")[1] for name in per_point}
    (line,) = summary_lines(found, variant_of, axis)
    assert line.startswith("smoothness: bn against base at the same 3 values: lower at 2 "
                           "(lr=0.01, lr=0.1; ratio 0.2")
    assert line.endswith("not comparable at 1 (fewer than 2 seeds finite in both)")


def test_a_drift_needs_two_records_and_is_left_out_with_fewer():
    one_record = {"activations/dense/layer": np.ones((2, 1, 7))}
    assert "distribution drift at hidden layer 1" not in per_seed(one_record)
