"""What bnlab prints: Keras-style epoch lines, result tables and verdicts (Rich)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rich.table import Table

from bnlab.analysis.stats import PairedComparison
from bnlab.errors import OptionRenderer, python_option, render_options
from bnlab.store.runs import Run
from bnlab.train.loop import EpochRecord


def epoch_line(record: EpochRecord) -> str:
    """Keras ``verbose=2`` line; with several seeds, metrics are means ± sd over seeds."""
    parts = [f"{record.steps}/{record.steps}", f"{record.seconds:.2f}s/epoch",
             f"{1000 * record.seconds / record.steps:.2f}ms/step"]
    for metric, values in record.metrics.items():
        text = f"{metric}: {values.mean():.4f}"
        if len(values) > 1:
            text += f" ±{values.std(ddof=1):.4f}"
        parts.append(text)
    return " - ".join(parts)


def results_table(run: Run) -> Table:
    """Final validation and test metrics per variant (mean ± sd over seeds), seconds per
    epoch and compile seconds; an unfinished run shows the epochs each variant finished."""
    seeds = run.config.seeds
    title = "Results after training" + (f" (mean ± sd over {seeds} seeds)" if seeds > 1 else "")
    if not run.complete:
        title = "Results so far (unfinished run)"
    table = Table(title=title, title_justify="left")
    columns = ["model", *([] if run.complete else ["epochs"]), "val_accuracy", "val_loss",
               "test_accuracy", "test_loss", "s/epoch", "compile s"]
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for variant in run.config.variants:
        history = run.histories.get(variant.name)
        summary = (run.summary or {}).get(variant.name)
        epochs = [] if run.complete else [str(history.epochs if history else 0)]
        if history is None:
            table.add_row(variant.name, *epochs, *["not started"] * 4, "—", "—")
            continue
        tests = ([mean_sd(summary.test_accuracy), mean_sd(summary.test_loss),
                  f"{summary.seconds_per_epoch:.2f}", f"{summary.compile_seconds:.1f}"]
                 if summary is not None else ["unfinished", "unfinished", "—", "—"])
        table.add_row(variant.name, *epochs, mean_sd(history.final("val_accuracy")),
                      mean_sd(history.final("val_loss")), *tests)
    return table


def verdict_lines(run: Run, option: OptionRenderer = python_option) -> list[str]:
    """What ``bnlab seed`` and ``bnlab show`` print after the table (Rich markup): the
    seed-paired verdicts, or with one seed the differences and why there is no verdict
    (naming the seeds option as ``option`` renders it)."""
    if len(run.histories) < 2 or not run.complete:
        return []
    comparisons = run.comparisons()
    if comparisons[0].n == 1:
        return [render_options(one_seed_differences(comparisons), option)]
    return ["[bold]Verdicts[/] (seed-paired t-tests on final validation accuracy):",
            *(f"  • {comparison.verdict}" for comparison in comparisons)]


def one_seed_differences(comparisons: Sequence[PairedComparison]) -> str:
    differences = ", ".join(f"{c.name_a} − {c.name_b} {100 * c.mean_difference:+.2f}"
                            for c in comparisons)
    return ("One seed: no verdict (a seed-paired test needs ≥ 2 seeds; try {seeds=5}). "
            f"Differences in final validation accuracy, points: {differences}")


def mean_sd(values: np.ndarray) -> str:
    """``0.8406`` for one value, ``0.8406 ± 0.0031`` (sample sd) for several."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"
