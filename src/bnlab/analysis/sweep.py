"""A sweep's answers: final accuracy per point with its CI, each variant's best value of an
axis, and which pairs of points the seed-paired verdicts compare.

Plain data in, plain data out (this layer knows no config): a point is a ``SweepPoint`` of
its name, variant and axis values; its numbers are ``(seeds,)`` final accuracies, NaN for a
seed that diverged.

- ``point_rows``: each point's final validation and test accuracy, mean ± 95% t-interval
  over the seeds that did not diverge, and how many diverged.
- ``best_points``: per variant, the point of highest mean final validation accuracy among
  those none of whose seeds diverged (the best learning rate, when that is the only axis).
  Chosen on validation accuracy, its test accuracy is the unbiased estimate of how good that
  choice is.
- ``sweep_pairs``: the pairs the verdicts compare — points of different variants at equal
  values of every axis both have ("at equal learning rate"), points of one variant one
  categorical value apart ("with vs without bias"), and the variants' best points against
  each other ("each at its own best"); ``analysis.stats.compare_pairs`` Holm-adjusts
  over all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from bnlab.analysis.stats import SeedSummary, summarize_over_seeds


@dataclass(frozen=True)
class SweepPoint:
    """A point: ``name``, the ``variant`` it comes from, its ``values`` (axis key → value,
    the axes that apply to it)."""

    name: str
    variant: str
    values: Mapping[str, Any]


@dataclass(frozen=True)
class PointRow:
    """A point's final numbers: ``val`` and ``test`` summaries over its finite seeds
    (``None`` when every seed diverged), ``diverged`` of ``seeds``."""

    point: SweepPoint
    val: SeedSummary | None
    test: SeedSummary | None
    diverged: int
    seeds: int


def finite_summary(values: np.ndarray) -> SeedSummary | None:
    """``summarize_over_seeds`` of the finite values of ``(seeds,)`` (``None`` if none)."""
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    return summarize_over_seeds(finite) if finite.size else None


def point_rows(points: Sequence[SweepPoint], val: Mapping[str, np.ndarray],
               test: Mapping[str, np.ndarray]) -> list[PointRow]:
    """One ``PointRow`` per point, from ``(seeds,)`` final validation and test accuracies by
    point name (NaN for a diverged seed)."""
    rows = []
    for point in points:
        values = np.asarray(val[point.name], np.float64)
        diverged = int(np.count_nonzero(~np.isfinite(values)))
        rows.append(PointRow(point, finite_summary(values), finite_summary(test[point.name]),
                             diverged, values.size))
    return rows


def best_points(rows: Sequence[PointRow]) -> dict[str, PointRow]:
    """Per variant (in first-seen order), the row of highest mean validation accuracy among
    the points with no diverged seed; a variant all of whose points diverged is absent."""
    best: dict[str, PointRow] = {}
    for row in rows:
        if row.diverged or row.val is None:
            continue
        current = best.get(row.point.variant)
        if current is None or float(row.val.mean) > float(current.val.mean):
            best[row.point.variant] = row
    return best


def sweep_pairs(points: Sequence[SweepPoint],
                best: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """The pairs of point names the verdicts compare: every two points of different
    variants whose values agree on every axis both have; every two points of one variant
    that differ in one categorical axis only (a boolean or text value: ``use_bias`` true vs
    false, the question such an axis asks); then the ``best`` points (variant → point name)
    of every two variants, where that pair is not already there. Two points of one variant
    at different learning rates are not compared (their best is the answer)."""
    pairs = []
    for a, b in combinations(points, 2):
        shared = set(a.values) & set(b.values)
        differ = [k for k in shared if a.values[k] != b.values[k]]
        across = a.variant != b.variant and not differ
        within = a.variant == b.variant and len(differ) == 1 and all(
            isinstance(p.values[differ[0]], bool | str) for p in (a, b))
        if across or within:
            pairs.append((a.name, b.name))
    seen = {frozenset(p) for p in pairs}
    for a, b in combinations(list((best or {}).values()), 2):
        if frozenset((a, b)) not in seen:
            pairs.append((a, b))
            seen.add(frozenset((a, b)))
    return pairs


def numeric_axes(points: Sequence[SweepPoint]) -> list[str]:
    """The axes with more than one numeric (not boolean) value: those a plot can put on
    its x axis, in first-seen order."""
    values: dict[str, set] = {}
    for point in points:
        for key, value in point.values.items():
            values.setdefault(key, set()).add(value)
    return [key for key, seen in values.items() if len(seen) > 1 and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in seen)]
