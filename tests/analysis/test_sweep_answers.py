"""A sweep's answers: which pairs are compared, each variant's best point, the rows' CIs."""

from __future__ import annotations

import numpy as np
from scipy import stats

from bnlab.analysis.sweep import SweepPoint, best_points, numeric_axes, point_rows, sweep_pairs

LR = "optimizer.learning_rate"


def grid() -> list[SweepPoint]:
    return [SweepPoint(f"{v}@lr={lr},bias={b}", v, {LR: lr, "dense.use_bias": b})
            for v in ("base", "bn") for lr in (0.01, 0.1) for b in (True, False)]


def test_pairs_are_variants_at_equal_values_and_one_categorical_value_apart_then_bests():
    points = grid()
    pairs = sweep_pairs(points, {"base": "base@lr=0.1,bias=True", "bn": "bn@lr=0.01,bias=False"})
    as_sets = [frozenset(p) for p in pairs]
    assert len(as_sets) == len(set(as_sets))
    # Between variants at equal (lr, bias): 4; within a variant, bias true vs false at each lr:
    # 2 × 2; no pair of one variant at two learning rates; then the two bests: 1.
    assert len(pairs) == 4 + 4 + 1
    assert frozenset(("base@lr=0.01,bias=True", "bn@lr=0.01,bias=True")) in as_sets
    assert frozenset(("bn@lr=0.1,bias=True", "bn@lr=0.1,bias=False")) in as_sets
    assert frozenset(("bn@lr=0.01,bias=True", "bn@lr=0.1,bias=True")) not in as_sets
    assert pairs[-1] == ("base@lr=0.1,bias=True", "bn@lr=0.01,bias=False")


def test_an_axis_a_variant_lacks_does_not_keep_it_from_its_pairs():
    points = [SweepPoint("base@lr=0.1", "base", {LR: 0.1}),
              SweepPoint("bn@lr=0.1,m=0.9", "bn", {LR: 0.1, "batch_norm.momentum": 0.9}),
              SweepPoint("bn@lr=0.1,m=0.99", "bn", {LR: 0.1, "batch_norm.momentum": 0.99})]
    assert sweep_pairs(points) == [("base@lr=0.1", "bn@lr=0.1,m=0.9"),
                                   ("base@lr=0.1", "bn@lr=0.1,m=0.99")]
    assert numeric_axes(points) == ["batch_norm.momentum"]


def test_rows_are_t_intervals_over_finite_seeds_and_the_best_skips_diverged_points():
    points = [SweepPoint("a", "v", {LR: 0.1}), SweepPoint("b", "v", {LR: 1.0}),
              SweepPoint("c", "w", {LR: 1.0})]
    val = {"a": np.array([0.80, 0.82, 0.81]), "b": np.array([0.90, np.nan, 0.88]),
           "c": np.full(3, np.nan)}
    rows = point_rows(points, val, val)
    low, high = stats.t.interval(0.95, 2, loc=0.81, scale=stats.sem([0.80, 0.82, 0.81]))
    assert np.isclose(rows[0].val.ci_low, low) and np.isclose(rows[0].val.ci_high, high)
    assert (rows[1].diverged, rows[1].val.n, rows[2].val) == (1, 2, None)
    best = best_points(rows)  # b has the higher mean but a diverged seed; w has no point
    assert {v: r.point.name for v, r in best.items()} == {"v": "a"}
