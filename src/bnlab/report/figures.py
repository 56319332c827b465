"""The figures a run writes into its folder when it finishes (``run_figures``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bnlab.analysis.sweep import SweepPoint, numeric_axes
from bnlab.report.plots import gap_figure, learning_curves, save_figure, sweep_figure
from bnlab.report.probe_plots import Records, activation_bands, figure1, measures_figure
from bnlab.train.history import History


def run_figures(experiment: str, points: Sequence[SweepPoint] | None = None
                ) -> Callable[[Path, Mapping[str, History], Mapping[str, Records]], list[Path]]:
    """What ``bnlab run`` and ``bnlab.run`` give the runner as ``figures``: it writes a
    run's learning curves, ``curves.png`` and ``curves.svg``, into its folder, and BatchNorm's
    train/inference gap, ``gap.png`` / ``.svg`` (``plots.gap_figure``); for a sweep's
    ``points`` (``store.summary.sweep_points``) ``sweep-<axis>.png`` / ``.svg`` of the final
    validation accuracy against each numeric axis (``sweep_figure``); and from the variants'
    ``records`` (``train.loop.Recorded``) ``activations`` (the percentile bands),
    ``figure1`` (when the test set was evaluated every epoch) and ``measures`` (Santurkar et
    al.'s), each as PNG and SVG (``report.probe_plots``)."""
    def save(run_dir: Path, histories: Mapping[str, History],
             records: Mapping[str, Records] | None = None) -> list[Path]:
        figure = learning_curves({n: h.per_seed for n, h in histories.items()},
                                 title=f"{experiment} ({run_dir.name})")
        paths = [run_dir / "curves.png", run_dir / "curves.svg"]
        save_figure(figure, paths)
        gap = gap_figure({n: h.per_seed for n, h in histories.items()},
                         title=f"{experiment} ({run_dir.name})")
        if gap is not None:
            paths += [run_dir / "gap.png", run_dir / "gap.svg"]
            save_figure(gap, paths[-2:])
        finals = {n: h.final("val_accuracy") for n, h in histories.items()}
        for axis in numeric_axes(points or []):
            name = sweep_figure_name(axis)
            drawn = [run_dir / f"{name}.png", run_dir / f"{name}.svg"]
            save_figure(sweep_figure(points, finals, axis,
                                     title=f"{experiment}: final validation accuracy vs "
                                           f"{axis.removeprefix('optimizer.')} — mean over "
                                           "seeds, 95% band, ✕ diverged"), drawn)
            paths += drawn
        paths += probe_figures(run_dir, experiment, records or {})
        return paths
    return save


def sweep_figure_name(axis: str) -> str:
    """The file name (without suffix) of the figure of final accuracy against ``axis``:
    ``sweep-learning_rate``, ``sweep-dense0-1.units``."""
    return "sweep-" + axis.removeprefix("optimizer.").replace("[", "").replace(
        "]", "").replace(", ", "-").replace(",", "-")


def probe_figures(run_dir: Path, experiment: str,
                  records: Mapping[str, Records]) -> list[Path]:
    """The figures of what the probes recorded (``run_figures``), written into ``run_dir``."""
    title = f"{experiment} ({run_dir.name})"
    drawn = []
    if any("activations/steps" in r for r in records.values()):
        drawn.append(("activations", activation_bands(records, title)))
        if all("test/accuracy" in r for r in records.values()):
            drawn.append(("figure1", figure1(records, title)))
    if any("measures/steps" in r for r in records.values()):
        drawn.append(("measures", measures_figure(records, title)))
    paths = []
    for name, figure in drawn:
        files = [run_dir / f"{name}.png", run_dir / f"{name}.svg"]
        save_figure(figure, files)
        paths += files
    return paths
