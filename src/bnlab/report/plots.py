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
from bnlab.analysis.sweep import SweepPoint, finite_summary
from bnlab.config.sweep import value_text
from bnlab.io import atomic_write_bytes


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


def point_styles(names: Sequence[str], epochs: int) -> dict[str, dict[str, object]]:
    """``line_style`` of each name; for a sweep's points (``variant@axis=value``) one colour
    per variant and one line style and marker per axis value instead, so that a dozen
    points read as variants × values rather than a dozen unrelated colours."""
    if not any("@" in name for name in names):
        return {name: line_style(index, epochs) for index, name in enumerate(names)}
    variants = list(dict.fromkeys(name.split("@", 1)[0] for name in names))
    values = list(dict.fromkeys(name.partition("@")[2] for name in names))
    styles = {}
    for index, name in enumerate(names):
        variant, _, value = name.partition("@")
        shape = line_style(values.index(value), epochs)
        styles[name] = shape | {"color": f"C{variants.index(variant) % 10}",
                                "markevery": line_style(index, epochs)["markevery"]}
    return styles


# Up to this many seeds a figure draws each seed as a thin line, not a t-interval band
# (with 1 or 2 degrees of freedom its half-width is 12.7 or 4.3 standard errors).
FEW_SEEDS = 3
# What each plotted quantity can be: bands are clipped to it.
RANGE = {"loss": (0.0, np.inf), "accuracy": (0.0, 1.0)}


def draw_spread(ax, x: np.ndarray, seeds: np.ndarray, low: np.ndarray, high: np.ndarray,
                color: str, bounds: tuple[float, float] = (-np.inf, np.inf)) -> None:
    """The spread over seeds around a mean already drawn: ``seeds: (seeds, len(x))`` each as
    a thin line up to ``FEW_SEEDS`` seeds, above that the band ``low``–``high`` clipped to
    ``bounds`` (what the quantity can be); nothing for one seed."""
    if 1 < len(seeds) <= FEW_SEEDS:
        for seed in seeds:
            ax.plot(x, seed, color=color, linewidth=0.6, alpha=0.5)
    elif np.isfinite(low).any():
        ax.fill_between(x, np.clip(low, *bounds), np.clip(high, *bounds), color=color,
                        alpha=0.15, linewidth=0)


def learning_curves(histories: Mapping[str, Mapping[str, np.ndarray]],
                    title: str = "") -> InlineFigure:
    """A 2 × 2 grid: loss (top) and accuracy (bottom), training (left) and validation
    (right) per epoch, one line per variant with its own colour, line style and marker
    (``line_style``: curves that coincide stay apart); rows share their y axis.

    ``histories[variant][metric]: (seeds, epochs)`` for ``loss``, ``accuracy`` and, where
    measured, ``val_loss``, ``val_accuracy`` and a BN model's ``val_batchstats_loss``,
    ``val_batchstats_accuracy`` (dotted, in the validation panels). With several seeds each
    line is the mean over seeds, with each seed as a thin line up to ``FEW_SEEDS`` seeds and
    above that the 95% Student-t confidence band, clipped to the quantity's ``RANGE``
    (``band_over_seeds``: a diverged seed, NaN from its epoch on, leaves the mean and band
    from then on).
    """
    figure = InlineFigure(figsize=(11, 7), layout="constrained")
    axes = figure.subplots(2, 2, sharex=True, sharey="row", squeeze=False)
    longest = max((np.shape(h["loss"])[1] for h in histories.values()), default=1)
    styles = point_styles(list(histories), longest)
    for name, history in histories.items():
        epochs = np.arange(1, np.shape(history["loss"])[1] + 1)
        style = styles[name]
        if not np.isfinite(np.asarray(history["loss"], float)).any():
            name += " (diverged at once: not drawn)"
        for row, metric in enumerate(("loss", "accuracy")):
            for column, key in enumerate((metric, f"val_{metric}")):
                if key not in history:
                    continue
                values = np.asarray(history[key])
                mean, low, high = band_over_seeds(values)
                ax = axes[row, column]
                ax.plot(epochs, mean, label=name, **style)
                draw_spread(ax, epochs, values, low, high, style["color"], RANGE[metric])
                batch_key = f"val_batchstats_{metric}"
                if column == 1 and batch_key in history:  # BN's batch-statistics score
                    batch_mean, _, _ = band_over_seeds(np.asarray(history[batch_key]))
                    # Loosely dotted and without markers: apart from every variant's style.
                    ax.plot(epochs, batch_mean, **(style | {"linestyle": (0, (1, 3)),
                                                            "marker": None}))
    seeds = np.shape(next(iter(histories.values()))["loss"])[0] if histories else 0
    for (row, column), ax in np.ndenumerate(axes):
        metric = ("loss", "accuracy")[row]
        ax.set_title(f"{('training', 'validation')[column]} {metric}", fontsize=10)
        if column == 0:
            ax.set_ylabel("cross-entropy loss" if metric == "loss" else "accuracy (fraction)")
        if row == 1:
            ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if longest <= 12:  # every epoch a tick (one epoch would get ticks at 0.96 … 1.04)
        axes[1, 0].set_xticks(np.arange(1, longest + 1))  # the x axis is shared
        axes[1, 0].set_xlim(0.5, longest + 0.5)
    else:
        for ax in axes.ravel():
            ax.xaxis.get_major_locator().set_params(integer=True)
    if any(axes[1, c].has_data() for c in range(2)):
        ax = axes[1, 1] if axes[1, 1].has_data() else axes[1, 0]
        if any("@" in name for name in histories):  # a sweep's points: beside the panels
            handles, labels = ax.get_legend_handles_labels()
            values = len({name.partition("@")[2] for name in histories})
            figure.legend(handles, labels, loc="outside lower center", fontsize=8,
                          ncols=values if values <= 4 else 3)
        else:
            ax.legend(fontsize=9, loc="lower right")
    spread = ("one seed" if seeds < 2 else
              f"mean of {seeds} seeds, thin lines = each seed" if seeds <= FEW_SEEDS else
              f"mean of {seeds} seeds, band = 95% confidence interval")
    if any("val_batchstats_loss" in h for h in histories.values()):
        spread += "; dotted: validation with batch statistics (BN)"
    figure.suptitle(f"{title} — {spread}" if title else spread, fontsize=11)
    return figure


def gap_figure(histories: Mapping[str, Mapping[str, np.ndarray]],
               title: str = "") -> InlineFigure | None:
    """BatchNorm's train/inference gap over training (``analysis.gap``), for the variants
    whose ``histories[variant]`` have ``val_batchstats_accuracy``: validation accuracy per
    epoch in inference mode (solid) and with batch statistics (dashed), and the gap,
    inference minus batch statistics in points, per seed then over seeds: the mean, with
    each seed as a thin line up to ``FEW_SEEDS`` seeds and above that the 95% band, clipped
    to what a gap can be (±100 points). A sweep's points are styled as in
    ``learning_curves`` (``point_styles``). ``None`` when no variant measured it."""
    measured = {name: h for name, h in histories.items() if "val_batchstats_accuracy" in h}
    if not measured:
        return None
    figure = InlineFigure(figsize=(13, 4.5), layout="constrained")
    accuracy, gap = figure.subplots(1, 2)
    longest = max(np.shape(h["val_accuracy"])[1] for h in measured.values())
    styles = point_styles(list(measured), longest)
    for name, history in measured.items():
        inference = np.asarray(history["val_accuracy"], np.float64)
        batch = np.asarray(history["val_batchstats_accuracy"], np.float64)
        epochs = np.arange(1, inference.shape[1] + 1)
        style = styles[name]
        for values, line in ((inference, "-"), (batch, "--")):
            mean, _, _ = band_over_seeds(values)
            accuracy.plot(epochs, mean, **(style | {"linestyle": line}))
        points = 100.0 * (inference - batch)
        mean, low, high = band_over_seeds(points)
        gap.plot(epochs, mean, label=name, **style)
        draw_spread(gap, epochs, points, low, high, style["color"], (-100.0, 100.0))
    gap.axhline(0.0, color="black", linewidth=0.8)
    accuracy.set_title("validation accuracy: inference (solid) vs batch statistics (dashed)",
                       fontsize=10)
    accuracy.set_ylabel("accuracy (fraction)")
    gap.set_title("gap = inference − batch statistics", fontsize=10)
    gap.set_ylabel("points of validation accuracy")
    for ax in (accuracy, gap):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    # One legend of the variants beside the panels (the line style tells the mode).
    figure.legend(*gap.get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    seeds = np.shape(next(iter(measured.values()))["val_accuracy"])[0]
    spread = ("one seed" if seeds < 2 else
              f"mean of {seeds} seeds, thin lines = each seed" if seeds <= FEW_SEEDS else
              f"mean of {seeds} seeds, band = 95% confidence interval")
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


def sweep_figure(points: Sequence[SweepPoint], finals: Mapping[str, np.ndarray], axis: str,
                 title: str = "") -> InlineFigure:
    """Final validation accuracy against the sweep axis ``axis`` (log scale when its values
    are positive and span a factor of 10 or more), one line per variant — and per value of
    the other axes — with each seed as a thin line up to ``FEW_SEEDS`` seeds, above that its
    95% band over the seeds that did not diverge (clipped to [0, 1]). A point where
    seeds diverged is marked ✕ and labelled ``k/n diverged``; where every seed did, the ✕
    sits on the bottom edge. ``finals[point]: (seeds,)``, NaN for a diverged seed."""
    series: dict[str, list[SweepPoint]] = {}
    for point in points:
        if axis not in point.values:
            continue
        others = ", ".join(f"{k.removeprefix('optimizer.')}={value_text(v)}"
                           for k, v in point.values.items() if k != axis)
        series.setdefault(point.variant + (f" ({others})" if others else ""), []).append(point)
    figure = InlineFigure(figsize=(8, 5), layout="constrained")
    ax = figure.subplots()
    values = [float(p.values[axis]) for line in series.values() for p in line]
    if values and min(values) > 0 and max(values) / min(values) >= 10:
        ax.set_xscale("log", base=2 if axis == "batch_size" else 10)
    lost = []
    seeds = max((len(finals[p.name]) for line in series.values() for p in line), default=0)
    for index, (label, line) in enumerate(series.items()):
        line = sorted(line, key=lambda p: p.values[axis])
        x = np.array([float(p.values[axis]) for p in line])
        stats = [finite_summary(finals[p.name]) for p in line]
        mean = np.array([np.nan if s is None else float(s.mean) for s in stats])
        low = np.array([np.nan if s is None or s.n < 2 else float(s.ci_low) for s in stats])
        high = np.array([np.nan if s is None or s.n < 2 else float(s.ci_high) for s in stats])
        style = line_style(index, len(x)) | {"markevery": None}
        ax.plot(x, mean, label=label, **style)
        draw_spread(ax, x, np.array([finals[p.name] for p in line], np.float64).T, low, high,
                    style["color"], RANGE["accuracy"])
        for xi, yi, point in zip(x, mean, line, strict=True):
            gone = int(np.count_nonzero(~np.isfinite(finals[point.name])))
            if gone:
                lost.append((xi, yi, f"{gone}/{len(finals[point.name])} diverged",
                             style["color"]))
    bottom = ax.get_ylim()[0]
    for xi, yi, text, color in lost:
        y = bottom if not np.isfinite(yi) else yi
        ax.plot([xi], [y], marker="x", color="red", markersize=9, markeredgewidth=2,
                linestyle="none", clip_on=False)
        ax.annotate(text, (xi, y), textcoords="offset points", xytext=(4, 6), fontsize=8,
                    color=color)
    ax.set_xlabel(axis.removeprefix("optimizer."))
    ax.set_ylabel("final validation accuracy (fraction)")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8, loc="best")
    spread = ("thin lines = each seed" if 1 < seeds <= FEW_SEEDS else
              "band = 95% confidence interval" if seeds > FEW_SEEDS else "one seed")
    figure.suptitle(f"{title + ': ' if title else ''}final validation accuracy vs "
                    f"{axis.removeprefix('optimizer.')}\nmean over {seeds} seed(s), {spread}, "
                    "✕ = diverged seeds", fontsize=10)
    return figure


def prediction_grid(images: np.ndarray, predicted: Sequence[str], true: Sequence[str],
                    title: str = "") -> InlineFigure:
    """``images`` ``(n, 28, 28)`` in a grid, each titled with its predicted class and, where
    that is wrong, the true one in red."""
    n = len(images)
    columns = min(n, 8)
    rows = -(-n // columns)
    figure = InlineFigure(figsize=(1.6 * columns, 1.9 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, guess, label in zip(axes, images, predicted, true, strict=False):
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
        right = guess == label
        ax.set_title(guess if right else f"{guess}\n(true: {label})", fontsize=8,
                     color="black" if right else "red")
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def figure_bytes(figure: Figure, image_format: str = "png", dpi: int = 110) -> bytes:
    """The figure as an image file's bytes (``png``, ``svg``, …)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format, dpi=dpi)
    return buffer.getvalue()


def save_figure(figure: Figure, paths: Sequence[Path]) -> None:
    """Write ``figure`` to every path atomically, the format from each suffix. The layout
    (constrained, the costliest part of drawing) is computed for the first file and kept for
    the others."""
    for path in paths:
        atomic_write_bytes(path, figure_bytes(figure, path.suffix.lstrip(".")))
        figure.set_layout_engine("none")
