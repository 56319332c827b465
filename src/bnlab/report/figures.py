"""The figures a run writes into its folder when it finishes (``run_figures``)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from bnlab.analysis.sweep import SweepPoint, numeric_axes
from bnlab.report.plots import gap_figure, learning_curves, save_figure, sweep_figure
from bnlab.report.probe_plots import Records, activation_bands, figure1, measures_figure
from bnlab.train.history import History


def run_figures(experiment: str, points: Sequence[SweepPoint] | None = None
                ) -> Callable[..., list[Path]]:
    """What ``bnlab run`` and ``bnlab.run`` give the runner as ``figures``: it writes a
    run's learning curves, ``curves.png`` and ``curves.svg``, into its folder, and BatchNorm's
    train/inference gap, ``gap.png`` / ``.svg`` (``plots.gap_figure``); for a sweep's
    ``points`` (``store.summary.sweep_points``) ``sweep-<axis>.png`` / ``.svg`` of the final
    validation accuracy against each numeric axis (``sweep_figure``); and from the variants'
    ``records`` (``train.loop.Recorded``) ``activations`` (the percentile bands),
    ``figure1`` (when the test set was evaluated every epoch) and ``measures`` (Santurkar et
    al.'s), each as PNG and SVG (``report.probe_plots``). With ``only`` (file names) it draws
    only the figures one of whose files is named there (a repair) and returns their paths."""
    def save(run_dir: Path, histories: Mapping[str, History],
             records: Mapping[str, Records] | None = None,
             only: Collection[str] | None = None) -> list[Path]:
        per_seed = {n: h.per_seed for n, h in histories.items()}
        title = f"{experiment} ({run_dir.name})"
        finals = {n: h.final("val_accuracy") for n, h in histories.items()}
        drawers: dict[str, Callable[[], Figure | None]] = {
            "curves": functools.partial(learning_curves, per_seed, title=title),
            "gap": functools.partial(gap_figure, per_seed, title=title)}
        for axis in numeric_axes(points or []):
            drawers[sweep_figure_name(axis)] = functools.partial(
                sweep_figure, points, finals, axis, title=title)
        drawers |= probe_drawers(title, records or {})
        return draw(run_dir, drawers, only)
    return save


def draw(run_dir: Path, drawers: Mapping[str, Callable[[], Figure | None]],
         only: Collection[str] | None = None) -> list[Path]:
    """Each drawer's figure as ``<name>.png`` and ``<name>.svg`` in ``run_dir`` (none where
    it draws ``None``; with ``only``, those one of whose file names it holds)."""
    paths = []
    for name, drawer in drawers.items():
        files = [run_dir / f"{name}.png", run_dir / f"{name}.svg"]
        if only is not None and not {f.name for f in files} & set(only):
            continue
        figure = drawer()
        if figure is not None:
            save_figure(figure, files)
            paths += files
    return paths


def sweep_figure_name(axis: str) -> str:
    """The file name (without suffix) of the figure of final accuracy against ``axis``:
    ``sweep-learning_rate``, ``sweep-dense0-1.units``."""
    return "sweep-" + axis.removeprefix("optimizer.").replace("[", "").replace(
        "]", "").replace(", ", "-").replace(",", "-")


def probe_drawers(title: str, records: Mapping[str, Records]
                  ) -> dict[str, Callable[[], Figure]]:
    """The figures of what the probes recorded (``run_figures``), by name, not yet drawn."""
    drawers: dict[str, Callable[[], Figure]] = {}
    if any("activations/steps" in r for r in records.values()):
        drawers["activations"] = functools.partial(activation_bands, records, title)
        if all("test/accuracy" in r for r in records.values()):
            drawers["figure1"] = functools.partial(figure1, records, title)
    if any("measures/steps" in r for r in records.values()):
        drawers["measures"] = functools.partial(measures_figure, records, title)
    return drawers
