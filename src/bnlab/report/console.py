"""What bnlab prints: Keras-style epoch lines, result tables and verdicts (Rich)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO

import numpy as np
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

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


def new_console(file: IO[str] | None = None, *, stderr: bool = False) -> Console:
    """How bnlab prints: no guessing of colours for numbers, long lines kept whole, and in
    a log or pipe (not a terminal) 120 columns, wide enough for its tables."""
    stream = file or (sys.stderr if stderr else sys.stdout)
    width = None if stream.isatty() else 120
    return Console(file=file, stderr=stderr, highlight=False, soft_wrap=True, width=width)


def results_table(run: Run, *, title: str | None = None, epochs: bool = False) -> Table:
    """Final validation and test metrics per variant (mean ± sd over seeds), seconds per
    epoch and compile seconds; with ``epochs`` (always for an unfinished run) the epochs each
    variant finished."""
    seeds = run.config.seeds
    if title is None:
        title = "Results after training" + (f" (mean ± sd over {seeds} seeds)"
                                            if seeds > 1 else "")
    if not run.complete:
        title, epochs = f"{title} — unfinished run", True
    table = Table(title=title, title_justify="left")
    columns = ["model", *(["epochs"] if epochs else []), "val_accuracy", "val_loss",
               "test_accuracy", "test_loss", "s/epoch", "compile s"]
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for variant in run.config.variants:
        history = run.histories.get(variant.name)
        summary = (run.summary or {}).get(variant.name)
        done = [str(history.epochs if history else 0)] if epochs else []
        if history is None:
            table.add_row(escape(variant.name), *done, *["not started"] * 4, "—", "—")
            continue
        tests = ([mean_sd(summary.test_accuracy), mean_sd(summary.test_loss),
                  f"{summary.seconds_per_epoch:.2f}", f"{summary.compile_seconds:.1f}"]
                 if summary is not None else ["unfinished", "unfinished", "—", "—"])
        table.add_row(escape(variant.name), *done, mean_sd(history.final("val_accuracy")),
                      mean_sd(history.final("val_loss")), *tests)
    return table


def run_overview(run: Run, option: OptionRenderer = python_option) -> Group:
    """What ``bnlab show`` prints: the run and its recipe, the final metrics of every
    variant (with the epochs each finished) and the verdicts."""
    config, env = run.config, run.environment
    data = env.get("data")
    rows = (f"; {data['train']:,} / {data['val']:,} / {data['test']:,} rows (train / val / test)"
            if isinstance(data, dict) and {"train", "val", "test"} <= set(data) else "")
    recipe = (f"optimizer {config.optimizer.name} lr {config.optimizer.learning_rate:g}, batch "
              f"{config.batch_size}, {config.epochs} epochs, seeds {list(config.seed_list)}"
              f"{rows}; {env.get('device')}, jax {(env.get('packages') or {}).get('jax')}"
              + (f"; resumed {len(env['resumes'])}× (environment.json)"
                 if env.get("resumes") else ""))
    header = Text.assemble((str(run.path), "bold"), f": experiment {config.name!r}"
                           + (f" — {config.description}" if config.description else ""))
    return Group(header, Text(recipe),
                 results_table(run, title="Final metrics (mean ± sd over seeds)", epochs=True),
                 *(Text.from_markup(line) for line in verdict_lines(run, option)))


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
