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
                         paths: Sequence[Path]) -> None:
    """Write ``render_learning_curves`` to every path (format from the suffix)."""
    for path in paths:
        atomic_write_bytes(path, render_learning_curves(histories, path.suffix.lstrip(".")))


def render_learning_curves(histories: Mapping[str, Mapping[str, np.ndarray]],
                           image_format: str = "png") -> bytes:
    """Loss and accuracy per epoch, train (dashed) and validation (solid), per variant.

    ``histories[variant][metric]: (seeds, epochs)`` for ``loss``, ``accuracy``,
    ``val_loss``, ``val_accuracy``. With several seeds each line is the mean over seeds and
    the band its 95% Student-t confidence interval. Returns the image file's bytes.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for color_index, (name, history) in enumerate(histories.items()):
        color = f"C{color_index}"
        epochs = np.arange(1, history["loss"].shape[1] + 1)
        for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
            for key, style, label in ((metric, "--", "train"), (f"val_{metric}", "-", "val")):
                summary = summarize_over_seeds(history[key])
                ax.plot(epochs, summary.mean, style, color=color, marker="o",
                        markersize=3, label=f"{name} ({label})")
                if summary.n > 1:
                    ax.fill_between(epochs, summary.ci_low, summary.ci_high,
                                    color=color, alpha=0.15, linewidth=0)
    seeds = next(iter(histories.values()))["loss"].shape[0]
    suffix = f" — mean of {seeds} seeds, band = 95% CI" if seeds > 1 else ""
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy loss" if metric == "loss" else "accuracy (fraction)")
        ax.set_title(f"{metric}{suffix}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[1].legend(fontsize=8, loc="lower right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=image_format, dpi=120)
    plt.close(fig)
    return buffer.getvalue()
