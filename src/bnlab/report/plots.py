"""Learning curves as Matplotlib figures, built without pyplot: no global figure state and no
backend change, so a notebook keeps its own (the figure shows inline where the notebook
displays it) and a headless run renders to PNG or SVG.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from bnlab.analysis.stats import summarize_over_seeds
from bnlab.io import atomic_write_bytes
from bnlab.train.loop import History


class InlineFigure(Figure):
    """A Matplotlib ``Figure`` that shows itself as PNG in Jupyter (``_repr_png_``), with no
    pyplot and no backend set (IPython displays a plain ``Figure`` only once pyplot or
    ``%matplotlib`` has registered its formatter)."""

    def _repr_png_(self) -> bytes:
        return figure_bytes(self, "png")


# One (line style, marker) per variant beside its colour, so that curves that coincide (two
# variants differing only in a BN convention) stay distinguishable: 4 styles × 7 markers
# (coprime counts) give 28 distinct pairs before one repeats.
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
MARKERS_PER_LINE = 8  # at most this many markers on a line, however many epochs


def line_style(index: int, epochs: int) -> dict[str, object]:
    """Matplotlib ``plot`` keywords of the ``index``-th variant's line over ``epochs``
    points: its colour (the ``C0``, ``C1``, … cycle), line style and marker, and a sparse
    ``markevery`` whose start is shifted per variant, so that the markers of coinciding
    curves fall on different epochs."""
    step = max(1, -(-epochs // MARKERS_PER_LINE))  # ceil(epochs / MARKERS_PER_LINE)
    return {"color": f"C{index}", "linestyle": LINE_STYLES[index % len(LINE_STYLES)],
            "marker": MARKERS[index % len(MARKERS)], "markersize": 4,
            "markevery": (index % step, step)}


def learning_curves(histories: Mapping[str, Mapping[str, np.ndarray]],
                    title: str = "") -> InlineFigure:
    """A 2 × 2 grid: loss (top) and accuracy (bottom), training (left) and validation
    (right) per epoch, one line per variant with its own colour, line style and marker
    (``line_style``: curves that coincide stay apart); rows share their y axis.

    ``histories[variant][metric]: (seeds, epochs)`` for ``loss``, ``accuracy`` and, where
    measured, ``val_loss``, ``val_accuracy``. With several seeds each line is the mean over
    seeds and the band its 95% Student-t confidence interval (``band_over_seeds``: a
    diverged seed, NaN from its epoch on, leaves the mean and band from then on).
    """
    figure = InlineFigure(figsize=(11, 7), layout="constrained")
    axes = figure.subplots(2, 2, sharex=True, sharey="row", squeeze=False)
    for index, (name, history) in enumerate(histories.items()):
        epochs = np.arange(1, np.shape(history["loss"])[1] + 1)
        style = line_style(index, len(epochs))
        for row, metric in enumerate(("loss", "accuracy")):
            for column, key in enumerate((metric, f"val_{metric}")):
                if key not in history:
                    continue
                mean, low, high = band_over_seeds(np.asarray(history[key]))
                ax = axes[row, column]
                ax.plot(epochs, mean, label=name, **style)
                if np.isfinite(low).any():
                    ax.fill_between(epochs, low, high, color=style["color"], alpha=0.15,
                                    linewidth=0)
    seeds = np.shape(next(iter(histories.values()))["loss"])[0] if histories else 0
    for (row, column), ax in np.ndenumerate(axes):
        metric = ("loss", "accuracy")[row]
        ax.set_title(f"{('training', 'validation')[column]} {metric}", fontsize=10)
        if column == 0:
            ax.set_ylabel("cross-entropy loss" if metric == "loss" else "accuracy (fraction)")
        if row == 1:
            ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if any(axes[1, c].has_data() for c in range(2)):
        (axes[1, 1] if axes[1, 1].has_data() else axes[1, 0]).legend(fontsize=9,
                                                                      loc="lower right")
    spread = (f"mean of {seeds} seeds, band = 95% confidence interval" if seeds > 1
              else "one seed")
    figure.suptitle(f"{title} — {spread}" if title else spread, fontsize=11)
    return figure


def band_over_seeds(values: np.ndarray,
                    confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, low, high)`` per epoch of ``values: (seeds, epochs)`` over the seeds whose
    value is finite that epoch: NaN where none is, and no band (NaN) where one is."""
    mean, low, high = (np.full(values.shape[1], np.nan) for _ in range(3))
    for epoch in range(values.shape[1]):
        finite = values[:, epoch][np.isfinite(values[:, epoch])]
        if finite.size:
            summary = summarize_over_seeds(finite, confidence)
            mean[epoch] = summary.mean
            if finite.size > 1:
                low[epoch], high[epoch] = summary.ci_low, summary.ci_high
    return mean, low, high


def run_figures(experiment: str) -> Callable[[Path, Mapping[str, History]], list[Path]]:
    """What ``bnlab run`` and ``bnlab.run`` give the runner as ``figures``: it writes a
    run's learning curves, ``curves.png`` and ``curves.svg``, into its folder."""
    def save(run_dir: Path, histories: Mapping[str, History]) -> list[Path]:
        figure = learning_curves({n: h.per_seed for n, h in histories.items()},
                                 title=f"{experiment} ({run_dir.name})")
        paths = [run_dir / "curves.png", run_dir / "curves.svg"]
        save_figure(figure, paths)
        return paths
    return save


def figure_bytes(figure: Figure, image_format: str = "png", dpi: int = 110) -> bytes:
    """The figure as an image file's bytes (``png``, ``svg``, …)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format, dpi=dpi)
    return buffer.getvalue()


def save_figure(figure: Figure, paths: Sequence[Path]) -> None:
    """Write ``figure`` to every path atomically, the format from each suffix."""
    for path in paths:
        atomic_write_bytes(path, figure_bytes(figure, path.suffix.lstrip(".")))
