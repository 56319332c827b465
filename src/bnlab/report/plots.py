"""Learning curves as Matplotlib figures, built without pyplot: no global figure state and no
backend change, so a notebook keeps its own (the figure shows inline where the notebook
displays it) and a headless run renders to PNG or SVG.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from bnlab.analysis.stats import summarize_over_seeds
from bnlab.io import atomic_write_bytes


class InlineFigure(Figure):
    """A Matplotlib ``Figure`` that shows itself as PNG in Jupyter (``_repr_png_``), with no
    pyplot and no backend set (IPython displays a plain ``Figure`` only once pyplot or
    ``%matplotlib`` has registered its formatter)."""

    def _repr_png_(self) -> bytes:
        return figure_bytes(self, "png")


def learning_curves(histories: Mapping[str, Mapping[str, np.ndarray]],
                    title: str = "") -> InlineFigure:
    """A 2 × 2 grid: loss (top) and accuracy (bottom), training (left) and validation
    (right) per epoch, one colour per variant; rows share their y axis.

    ``histories[variant][metric]: (seeds, epochs)`` for ``loss``, ``accuracy`` and, where
    measured, ``val_loss``, ``val_accuracy``. With several seeds each line is the mean over
    seeds and the band its 95% Student-t confidence interval.
    """
    figure = InlineFigure(figsize=(11, 7), layout="constrained")
    axes = figure.subplots(2, 2, sharex=True, sharey="row", squeeze=False)
    for color_index, (name, history) in enumerate(histories.items()):
        epochs = np.arange(1, np.shape(history["loss"])[1] + 1)
        for row, metric in enumerate(("loss", "accuracy")):
            for column, key in enumerate((metric, f"val_{metric}")):
                if key not in history:
                    continue
                summary = summarize_over_seeds(np.asarray(history[key]))
                ax = axes[row, column]
                ax.plot(epochs, summary.mean, color=f"C{color_index}", marker="o",
                        markersize=3, label=name)
                if summary.n > 1:
                    ax.fill_between(epochs, summary.ci_low, summary.ci_high,
                                    color=f"C{color_index}", alpha=0.15, linewidth=0)
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


def figure_bytes(figure: Figure, image_format: str = "png", dpi: int = 110) -> bytes:
    """The figure as an image file's bytes (``png``, ``svg``, …)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format, dpi=dpi)
    return buffer.getvalue()


def save_figure(figure: Figure, paths: Sequence[Path]) -> None:
    """Write ``figure`` to every path atomically, the format from each suffix."""
    for path in paths:
        atomic_write_bytes(path, figure_bytes(figure, path.suffix.lstrip(".")))
