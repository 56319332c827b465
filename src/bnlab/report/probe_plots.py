"""Figures of what a run's probes recorded (``train.loop.Recorded``): activation percentile
bands over training, Ioffe & Szegedy's Figure 1, and Santurkar et al.'s measures.

Every line is the mean over seeds of a per-seed curve, with its 95% band over the seeds
(``plots.band_over_seeds``; a diverged seed leaves it where its records end). Built without
pyplot, as ``plots``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

import numpy as np

from bnlab.analysis.why import beta_smoothness, last_hidden_input
from bnlab.report.plots import (
    FEW_SEEDS,
    InlineFigure,
    band_over_seeds,
    draw_spread,
    line_style,
    point_styles,
)

Records = Mapping[str, np.ndarray]



def finite_mean(values: np.ndarray) -> np.ndarray:
    """The mean over the first axis (seeds) of the finite values; NaN where none is (a
    point whose every seed diverged draws nothing there, and warns of nothing)."""
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    total = np.where(finite, values, 0.0).sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)

def _line(ax, x, values, index, label, *, band=True, log=False, within=None, **style):
    """One variant's mean over seeds with its 95% band, or with each seed as a thin line up
    to ``plots.FEW_SEEDS`` seeds (a t-band of 1–2 degrees of freedom would dwarf the curve);
    ``log``: the geometric mean and the band of the log values (for positive quantities that
    vary by factors, on a log axis); ``within``: the ``(low, high)`` the quantity cannot
    leave (a cosine's), which the band is clipped to."""
    values = np.asarray(values, np.float64)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            mean, low, high = (np.exp(v) for v in band_over_seeds(
                np.where(values > 0, np.log(values), np.nan)))
    else:
        mean, low, high = band_over_seeds(values)
    look = line_style(index, len(x)) | style
    ax.plot(x, mean, label=label, **look)
    if band:
        draw_spread(ax, x, np.where(values > 0, values, np.nan) if log else values, low, high,
                    look["color"], within or (-np.inf, np.inf))


def panel_title(text: str, inches: float, fontsize: float) -> str:
    """``text`` wrapped to a panel ``inches`` wide at ``fontsize`` points (a character is
    about 0.6 of the size wide), long names broken where they must be: a sweep point's
    name has no spaces, and a title wider than its panel runs off the canvas."""
    return textwrap.fill(text, max(12, int(inches * 72 / (0.6 * fontsize))),
                         break_on_hyphens=False)


def hidden_inputs(record: Records) -> list[str]:
    """The ``activations/<input>/layer`` names of a variant's records, in layer order."""
    return [n for n in record if n.startswith("activations/") and n.endswith("/layer")]


def activation_bands(records: Mapping[str, Records], title: str = "") -> InlineFigure:
    """One row per variant, one column per hidden nonlinearity (by position: the k-th
    hidden layer of each model): the pooled 15th–85th percentile band and the median over
    training steps (each the mean over seeds), the minimum and maximum dotted."""
    layers = {v: hidden_inputs(r) for v, r in records.items() if hidden_inputs(r)}
    columns = max((len(names) for names in layers.values()), default=1)
    figure = InlineFigure(figsize=(4 * columns, 2.6 * max(len(layers), 1)),
                          layout="constrained")
    axes = figure.subplots(max(len(layers), 1), columns, squeeze=False, sharex=True)
    colors = {name: style["color"] for name, style in point_styles(list(layers), 1).items()}
    for row, (variant, names) in enumerate(layers.items()):
        steps = records[variant]["activations/steps"]
        color = colors[variant]  # a sweep: one colour per variant, whatever its values
        for column in range(columns):
            ax = axes[row, column]
            if column >= len(names):
                ax.set_axis_off()
                continue
            stats = records[variant][names[column]].astype(np.float64)  # (seeds, n, 7)
            mean = finite_mean(stats)
            where = names[column].removeprefix("activations/").removesuffix("/layer")
            ax.set_title(panel_title(f"{variant}: {where}", 3.6, 9), fontsize=9)
            if not np.isfinite(mean).any():  # an empty panel says why
                ax.text(0.5, 0.5, "every seed diverged\nbefore its first record",
                        transform=ax.transAxes, ha="center", va="center", fontsize=8,
                        color="0.4")
                ax.tick_params(axis="y", left=False, labelleft=False)
                continue
            ax.fill_between(steps, mean[:, 0], mean[:, 2], color=color, alpha=0.3,
                            linewidth=0, label="15th–85th percentile")
            ax.plot(steps, mean[:, 1], color=color, label="median")
            ax.plot(steps, mean[:, 3], color=color, linestyle=":", linewidth=0.8,
                    label="min, max")
            ax.plot(steps, mean[:, 4], color=color, linestyle=":", linewidth=0.8)
            ax.grid(alpha=0.3)
            if row == len(layers) - 1:
                ax.set_xlabel("training step")
    first = next((ax for ax in axes.ravel() if ax.has_data()), None)
    if first is not None:
        first.legend(fontsize=7, loc="best")
    seeds = next((len(records[v][names[0]]) for v, names in layers.items()), 0)
    figure.suptitle(f"{title + chr(10) if title else ''}input of each hidden nonlinearity on "
                    f"the probe batch,\nall units pooled (mean over {seeds} seed(s))",
                    fontsize=10)
    return figure


def figure1(records: Mapping[str, Records], title: str = "") -> InlineFigure:
    """Ioffe & Szegedy's Figure 1 from a run: (a) test accuracy against training steps, one
    line per variant (needs ``test_each_epoch``); then for each variant, the 15th, 50th and
    85th percentiles of one unit's input to the last hidden nonlinearity (unit 0 of the first
    seed that trained: the unit 0 of two seeds are unrelated units, so they are not
    averaged), with the 15th–85th percentiles of all its layer's units (means over seeds)
    as a grey band."""
    variants = list(records)
    figure = InlineFigure(figsize=(4.2 * (1 + len(variants)), 3.6), layout="constrained")
    axes = figure.subplots(1, 1 + len(variants), squeeze=False)[0]
    ax = axes[0]
    for index, (variant, record) in enumerate(records.items()):
        if "test/accuracy" in record:
            _line(ax, record["test/steps"], record["test/accuracy"], index, variant)
    ax.set_title("(a) test accuracy", fontsize=10)
    ax.set_xlabel("training step")
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend(fontsize=8, loc="lower right")
    for panel, (variant, record) in enumerate(records.items(), start=1):
        ax = axes[panel]
        name = last_hidden_input(record)
        if name is None:
            ax.set_axis_off()
            continue
        steps = record["activations/steps"]
        layer = finite_mean(record[f"{name}/layer"].astype(np.float64))
        units = record[f"{name}/units"][:, :, 0, :].astype(np.float64)  # (seeds, n, 3)
        trained = np.flatnonzero(np.isfinite(units[:, 0, 1]))
        unit = units[trained[0] if trained.size else 0]
        ax.fill_between(steps, layer[:, 0], layer[:, 2], color="0.85", linewidth=0,
                        label="all units, 15th–85th")
        for column, (percentile, look) in enumerate((("15th", ":"), ("50th", "-"),
                                                     ("85th", "--"))):
            ax.plot(steps, unit[:, column], color=f"C{panel - 1}", linestyle=look,
                    label=f"unit 0, {percentile}")
        letter = chr(ord("a") + panel)
        ax.set_title(panel_title(f"({letter}) {variant}: {name.removeprefix('activations/')}",
                                 3.8, 10), fontsize=10)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    seeds = next((len(r["test/accuracy"]) for r in records.values() if "test/accuracy" in r),
                 None)
    spread = ("one seed" if not seeds or seeds < 2 else
              f"(a) the mean of {seeds} seeds, "
              + ("thin lines: each seed" if seeds <= FEW_SEEDS else "band = 95% CI")
              + "; unit 0 of the first seed, the layer's band the mean over seeds")
    figure.suptitle(f"{title + chr(10) if title else ''}Figure 1 of Ioffe & Szegedy (2015): "
                    f"{spread}", fontsize=10)
    return figure


def measures_figure(records: Mapping[str, Records], title: str = "") -> InlineFigure:
    """Santurkar et al.'s measures over training, one line per variant: effective
    β-smoothness, the gradient change and the loss variation along the gradient (log
    scales), and per Dense layer the internal covariate shift ‖G − G′‖ and cos∠(G, G′)."""
    variants = [v for v, r in records.items() if "measures/steps" in r]
    dense_layers = list(dict.fromkeys(n.removeprefix("measures/ics/") for v in variants
                                      for n in records[v] if n.startswith("measures/ics/")))
    labels = ["effective β-smoothness",
              "gradient change ‖∇L(θ) − ∇L(θ − ηg)‖, max over η",
              "loss variation along the gradient (max − min over η)"]
    for layer in dense_layers:
        labels += [f"ICS ‖G − G′‖ of {layer}", f"cos∠(G, G′) of {layer}"]
    panels, columns = len(labels), 3
    rows = -(-panels // columns)
    figure = InlineFigure(figsize=(12, 3 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, sharex=True).ravel()
    for ax, label in zip(axes, labels, strict=False):
        ax.set_title(panel_title(label, 3.4, 9), fontsize=9)
    seeds = max((len(records[v]["measures/loss"]) for v in variants), default=0)
    for index, variant in enumerate(variants):
        record = records[variant]
        steps = record["measures/steps"]
        along = record["measures/loss_along"].astype(np.float64)
        curves = [beta_smoothness(record), record["measures/grad_change"].max(axis=-1),
                  along.max(-1) - along.min(-1)]
        for layer in dense_layers:
            shift = record.get(f"measures/ics/{layer}")
            if shift is not None and np.all(shift == 0):  # nothing below it: no shift
                shift = None
            curves += [shift, None if shift is None
                       else record.get(f"measures/ics_cosine/{layer}")]
        for ax, label, values in zip(axes[:panels], labels, curves, strict=True):
            if values is None:  # a variant without this layer, or nothing below it
                continue
            positive = not label.startswith("cos") and np.nanmin(values) > 0
            _line(ax, steps, values, index, variant, log=positive,
                  within=(-1.0, 1.0) if label.startswith("cos") else None)
            if positive:
                ax.set_yscale("log")
    for ax in axes[panels:]:
        ax.set_axis_off()
    for ax, label in zip(axes[:panels], labels, strict=True):
        ax.grid(alpha=0.3)
        if ax.get_yscale() == "linear":  # 0.99999 as it is, not "1e-5 + 9.9999e-1"
            ax.ticklabel_format(axis="y", useOffset=False)
        if not ax.has_data():  # an empty panel says why
            ax.text(0.5, 0.5, "zero for every variant:\nno trained layer below it shifts its "
                    "input" if label.startswith("ICS") else "undefined: no shift to compare",
                    transform=ax.transAxes, ha="center", va="center", fontsize=8,
                    color="0.4")
            ax.tick_params(axis="y", left=False, labelleft=False)
    for ax in axes[max(0, panels - columns):panels]:
        ax.set_xlabel("training step")
    measured = np.unique(np.concatenate([records[v]["measures/steps"] for v in variants]
                                        or [np.zeros(0)]))
    if len(measured) == 1:  # one step measured: its tick, not ±0.04 around it
        axes[0].set_xticks(measured)  # the axes share x
    if variants and axes[0].has_data():
        axes[0].legend(fontsize=8, loc="best")
    spread = ("thin lines: each seed" if 1 < seeds <= FEW_SEEDS else
              "95% band" if seeds > FEW_SEEDS else "one seed")
    figure.suptitle(f"{title + chr(10) if title else ''}Santurkar et al. (2018): the loss "
                    "landscape and internal covariate shift over training\n(geometric mean over "
                    f"seeds on log axes, mean on the others; {spread})", fontsize=10)
    return figure
