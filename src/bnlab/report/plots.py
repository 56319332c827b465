"""Learning curves with Matplotlib (headless ``Agg`` backend)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from bnlab.analysis.stats import summarize_over_seeds
from bnlab.store import atomic_write_bytes


def plot_learning_curves(histories: Mapping[str, Mapping[str, np.ndarray]],
                         paths: Sequence[Path], title: str = "") -> None:
    """Write ``render_learning_curves`` to every path (format from the suffix)."""
    for path in paths:
        atomic_write_bytes(path, render_learning_curves(histories, path.suffix.lstrip("."),
                                                        title=title))


def render_learning_curves(histories: Mapping[str, Mapping[str, np.ndarray]],
                           image_format: str = "png", title: str = "") -> bytes:
    """A 2 × 2 grid: loss (top) and accuracy (bottom), training (left) and validation
    (right) per epoch, one colour per variant; rows share their y axis.

    ``histories[variant][metric]: (seeds, epochs)`` for ``loss``, ``accuracy``,
    ``val_loss``, ``val_accuracy``. With several seeds each line is the mean over seeds and
    the band its 95% Student-t confidence interval. Returns the image file's bytes.
    """
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True, sharey="row",
                             constrained_layout=True)
    for color_index, (name, history) in enumerate(histories.items()):
        epochs = np.arange(1, history["loss"].shape[1] + 1)
        for row, metric in enumerate(("loss", "accuracy")):
            for column, key in enumerate((metric, f"val_{metric}")):
                summary = summarize_over_seeds(history[key])
                ax = axes[row, column]
                ax.plot(epochs, summary.mean, color=f"C{color_index}", marker="o",
                        markersize=3, label=name)
                if summary.n > 1:
                    ax.fill_between(epochs, summary.ci_low, summary.ci_high,
                                    color=f"C{color_index}", alpha=0.15, linewidth=0)
    seeds = next(iter(histories.values()))["loss"].shape[0]
    for (row, column), ax in np.ndenumerate(axes):
        metric = ("loss", "accuracy")[row]
        ax.set_title(f"{('training', 'validation')[column]} {metric}", fontsize=10)
        if column == 0:
            ax.set_ylabel("cross-entropy loss" if metric == "loss" else "accuracy (fraction)")
        if row == 1:
            ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[1, 1].legend(fontsize=9, loc="lower right")
    spread = (f"mean of {seeds} seeds, band = 95% confidence interval" if seeds > 1
              else "one seed")
    fig.suptitle(f"{title} — {spread}" if title else spread, fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=image_format, dpi=110)
    plt.close(fig)
    return buffer.getvalue()
