"""What bnlab prints of a sweep: its table of points, each variant's best point, and its
verdicts and train/inference gaps summarised per pair of variants and per variant (like
with like: points at the same axis values; docs/sweeps.md)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rich.markup import escape

from bnlab.analysis.stats import PairedComparison, SeedSummary
from bnlab.analysis.sweep import PointRow, SweepPoint, best_points, point_rows
from bnlab.config.sweep import Point, value_text
from bnlab.report.tables import Column, FittedTable
from bnlab.store.runs import Run


def axis_text(point: Point) -> str:
    """A point's axis values other than its variant: ``learning_rate=0.1, batch_size=32``."""
    return ", ".join(f"{k.removeprefix('optimizer.')}={value_text(v)}"
                     for k, v in point.values if k != "variants")


def sweep_rows(run: Run) -> tuple[list[PointRow], dict[str, PointRow]]:
    """The rows of a sweep's answer (``analysis.sweep.point_rows``) of every point with a
    history, and each variant's best point; test accuracies come from ``summary.json``
    (NaN until the run has finished)."""
    points = [SweepPoint(p.name, p.variant, dict(p.values)) for p in run.config.points
              if p.name in run.histories]
    seeds = run.config.seeds
    val = {p.name: run.histories[p.name].final("val_accuracy") if run.histories[p.name].epochs
           else np.full(seeds, np.nan) for p in points}
    test = {p.name: (run.summary[p.name].test_accuracy if run.summary and p.name in run.summary
                     else np.full(seeds, np.nan)) for p in points}
    rows = point_rows(points, val, test)
    return rows, best_points(rows)


def sweep_text(config) -> str:
    """``learning_rate ∈ {0.001, 0.01}; batch_size ∈ {16, 32}: 12 points``."""
    axes = "; ".join(f"{axis.key.removeprefix('optimizer.')} ∈ "
                     f"{{{', '.join(value_text(v) for v in axis.values)}}}"
                     for axis in config.sweep)
    return f"{axes}: {len(config.points)} points (docs/sweeps.md)"


def ci_text(summary: SeedSummary | None) -> str:
    """``0.8812 (0.8790–0.8834)``: a mean and its 95% interval; ``—`` for none."""
    if summary is None:
        return "—"
    mean = float(summary.mean)
    if summary.n == 1:
        return f"{mean:.4f} (1 seed)"
    return f"{mean:.4f} ({float(summary.ci_low):.4f}–{float(summary.ci_high):.4f})"


def sweep_table(run: Run) -> FittedTable:
    """A sweep's answer: per point its axis values, status, final validation and test
    accuracy (mean and 95% t-interval over the seeds that did not diverge) and how many
    seeds diverged; each variant's best point marked ★."""
    rows, best = sweep_rows(run)
    keys = [axis.key for axis in run.config.sweep if axis.kind != "variants"]
    table = FittedTable(
        f"Sweep: final accuracy, mean (95% CI) over {run.config.seeds} seeds; ★ each "
        "variant's best",
        [Column("variant", "left"), *(Column(escape(k.removeprefix("optimizer."))) for k in keys),
         Column("status", "left", whole=False), Column("val accuracy", whole=False),
         Column("test accuracy", whole=False), Column("diverged")])
    best_names = {row.point.name for row in best.values()}
    for row in rows:
        point = row.point
        status = run.variant_status(point.name)
        style = {"complete": "green", "damaged": "red"}.get(status, "yellow")
        mark = " ★" if point.name in best_names else ""
        table.add_row(escape(point.variant) + mark,
                      *(value_text(point.values[k]) if k in point.values else "—"
                        for k in keys),
                      f"[{style}]{escape(status)}[/]", ci_text(row.val), ci_text(row.test),
                      f"[red]{row.diverged}/{row.seeds}[/]" if row.diverged
                      else f"0/{row.seeds}")
    return table


def best_lines(run: Run) -> list[str]:
    """One line per variant: its best point (highest mean final validation accuracy among
    the points none of whose seeds diverged) with both accuracies and their 95% CIs."""
    _, best = sweep_rows(run)
    lines = []
    for variant, row in best.items():
        values = ", ".join(f"{k.removeprefix('optimizer.')}={value_text(v)}"
                           for k, v in row.point.values.items()) or "its only point"
        lines.append(f"  • {escape(variant)}: best at {escape(values)}: validation "
                     f"{ci_text(row.val)}, test {ci_text(row.test)}")
    missing = [v.name for v in run.config.variants if v.name not in best]
    lines += [f"  • {escape(name)}: no point without a diverged seed" for name in missing]
    return ["[bold]Best per variant[/] (chosen on mean final validation accuracy; the test "
            "accuracy is the unbiased estimate of that choice):", *lines] if lines else []


def sweep_verdict_lines(run: Run, comparisons: Sequence[PairedComparison]) -> list[str]:
    """A sweep's verdicts: those between points at equal axis values as one line per pair
    of variants (which wins at how many values, and where; the range of the differences in
    points), then each comparison between variants' best points as its sentence."""
    point = {p.name: p for p in run.config.points}
    axis = {name: axis_text(p) for name, p in point.items()}
    order = [v.name for v in run.config.variants]
    pairs: dict[tuple[str, str], list[PairedComparison]] = {}
    best = []
    for c in comparisons:
        a, b = point[c.name_a], point[c.name_b]
        if axis[c.name_a] != axis[c.name_b]:
            best.append(c.verdict)
            continue
        key = tuple(sorted((a.variant, b.variant), key=order.index))
        pairs.setdefault(key, []).append(c)
    lines = []
    for (first, second), group in pairs.items():
        wins = {name: [c for c in group if c.winner and point[c.winner].variant == name]
                for name in (first, second)}
        parts = [f"{name} better at {len(won)} ({', '.join(axis[c.winner] for c in won)})"
                 for name, won in wins.items() if won]
        unclear = len(group) - sum(len(won) for won in wins.values())
        if unclear:
            parts.append(f"not distinguishable at {unclear}")
        differences = [100 * (c.mean_difference if point[c.name_a].variant == first
                              else -c.mean_difference) for c in group]
        lines.append(f"{first} against {second} at {len(group)} equal axis value"
                     f"{'s' * (len(group) > 1)}: " + "; ".join(parts)
                     + f" ({first} − {second}: {min(differences):+.1f} to "
                       f"{max(differences):+.1f} points)")
    return [*lines, *best]


def gap_summary(run: Run, gaps: Sequence) -> list[str]:
    """A sweep's gaps, one line per variant: at how many of its points inference mode is
    measurably worse or better than batch statistics (which), or neither, and the range of
    the mean differences in points."""
    variant_of = {p.name: p.variant for p in run.config.points}
    axis = {p.name: axis_text(p) for p in run.config.points}
    by_variant: dict[str, list] = {}
    for gap in gaps:
        by_variant.setdefault(variant_of[gap.variant], []).append(gap)
    lines = []
    for variant, group in by_variant.items():
        worse = [g for g in group if g.comparison.winner == g.comparison.name_b]
        better = [g for g in group if g.comparison.winner == g.comparison.name_a]
        parts = [f"{word} at {len(members)} ({', '.join(axis[g.variant] for g in members)})"
                 for word, members in (("worse", worse), ("better", better)) if members]
        unclear = len(group) - len(worse) - len(better)
        if unclear:
            parts.append(f"not measurably different at {unclear}")
        differences = [100 * g.comparison.mean_difference for g in group]
        lines.append(f"{variant} in inference mode against batch statistics at "
                     f"{len(group)} point{'s' * (len(group) > 1)}: " + "; ".join(parts)
                     + f" (mean differences {min(differences):+.1f} to "
                       f"{max(differences):+.1f} points)")
    return lines
