"""Learning-curve figures: every model's line stays distinguishable, even where curves
coincide, and the figure renders without pyplot."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba

from bnlab.report.plots import (
    LINE_STYLES,
    MARKERS,
    figure_bytes,
    gap_figure,
    learning_curves,
    line_style,
)
from tests.report.canvas import texts_outside


def history(seeds: int = 1, epochs: int = 10) -> dict[str, np.ndarray]:
    """One run's metrics, ``(seeds, epochs)`` each: a falling loss, a rising accuracy."""
    t = np.linspace(0.0, 1.0, epochs)[None, :] + 0.01 * np.arange(seeds)[:, None]
    return {"loss": 1.0 - 0.5 * t, "accuracy": 0.5 + 0.4 * t,
            "val_loss": 1.1 - 0.5 * t, "val_accuracy": 0.45 + 0.4 * t}


def line_looks(line) -> tuple:
    """What tells a line apart on the page: colour, dash pattern, marker."""
    return (to_rgba(line.get_color()), line.get_linestyle(), line.get_marker())


def test_identical_histories_give_lines_with_different_styles_and_markers():
    same = history()
    figure = learning_curves({"bn_keras": same, "bn_pytorch": dict(same)})
    for ax in figure.axes:
        first, second = ax.get_lines()
        np.testing.assert_array_equal(first.get_ydata(), second.get_ydata())  # they coincide
        assert first.get_label() == "bn_keras" and second.get_label() == "bn_pytorch"
        assert first.get_linestyle() != second.get_linestyle()
        assert first.get_marker() != second.get_marker()
        assert to_rgba(first.get_color()) != to_rgba(second.get_color())  # colours kept too
        (start1, step1), (start2, step2) = first.get_markevery(), second.get_markevery()
        marked1, marked2 = set(range(start1, 10, step1)), set(range(start2, 10, step2))
        assert marked1 and marked2 and marked1.isdisjoint(marked2)  # on different epochs
    legend = figure.axes[3].get_legend()
    assert [line_looks(handle) for handle in legend.legend_handles] == [
        line_looks(line) for line in figure.axes[3].get_lines()]  # the legend shows the styles
    assert figure_bytes(figure, "png").startswith(b"\x89PNG")


def test_each_of_28_models_has_its_own_style_and_marker_and_colours_cycle():
    figure = learning_curves({f"m{i}": history(epochs=3) for i in range(28)})
    lines = figure.axes[0].get_lines()
    assert len({(line.get_linestyle(), line.get_marker()) for line in lines}) == 28
    assert [line.get_color() for line in lines[:3]] == ["C0", "C1", "C2"]
    assert len(LINE_STYLES) * len(MARKERS) == 28


@pytest.mark.parametrize(("epochs", "most"), [(1, 1), (8, 8), (10, 5), (100, 8), (1000, 8)])
def test_markers_stay_sparse_however_many_epochs(epochs, most):
    for index in range(4):
        start, step = line_style(index, epochs)["markevery"]
        assert 1 <= len(range(start, epochs, step)) <= most


def test_several_seeds_draw_a_band_in_each_lines_colour_within_what_the_quantity_can_be():
    spread = history(seeds=5)
    spread["accuracy"] = spread["accuracy"] + np.array([0.0, 0.0, 0.0, 0.0, 0.3])[:, None]
    figure = learning_curves({"a": spread, "b": history(seeds=5)})
    ax = figure.axes[0]
    bands = ax.collections
    assert len(bands) == 2
    assert [to_rgba(band.get_facecolor()[0])[:3] for band in bands] == [
        to_rgba(line.get_color())[:3] for line in ax.get_lines()]
    top = max(band.get_paths()[0].vertices[:, 1].max() for band in figure.axes[2].collections)
    assert top == pytest.approx(1.0)  # the accuracy's band stops at 1 (it reached past it)
    assert "band = 95% confidence interval" in figure._suptitle.get_text()


def test_two_or_three_seeds_are_drawn_as_thin_lines_not_a_band():
    figure = learning_curves({"a": history(seeds=2), "b": history(seeds=3)})
    ax = figure.axes[0]
    assert not ax.collections  # no t-band of one or two degrees of freedom
    thin = [line for line in ax.get_lines() if line.get_linewidth() < 1]
    assert len(thin) == 2 + 3 and len(ax.get_lines()) == 2 + 2 + 3
    assert "thin lines = each seed" in figure._suptitle.get_text()


def test_validation_panels_draw_a_bn_models_batch_statistics_dotted_in_its_colour():
    rng = np.random.default_rng(3)
    with_bn = {m: rng.uniform(0.3, 0.9, (5, 4)) for m in (
        "loss", "accuracy", "val_loss", "val_accuracy", "val_batchstats_loss",
        "val_batchstats_accuracy")}
    plain = {m: with_bn[m] for m in ("loss", "accuracy", "val_loss", "val_accuracy")}
    figure = learning_curves({"bn": with_bn, "plain": plain})
    train_loss, val_loss, train_accuracy, val_accuracy = figure.axes
    assert len(train_loss.get_lines()) == len(train_accuracy.get_lines()) == 2
    for ax, metric in ((val_loss, "val_batchstats_loss"),
                       (val_accuracy, "val_batchstats_accuracy")):
        dotted = [line for line in ax.get_lines() if line.get_marker() in (None, "None")]
        assert len(ax.get_lines()) == 3 and len(dotted) == 1
        np.testing.assert_allclose(dotted[0].get_ydata(), with_bn[metric].mean(axis=0))
        assert dotted[0].get_color() == ax.get_lines()[0].get_color()  # bn's own colour
    assert "dotted: validation with batch statistics" in figure._suptitle.get_text()


def test_a_sweeps_points_read_as_variants_by_colour_and_values_by_style_beside_the_panels():
    """Six points of a learning-rate sweep: one colour per variant, one line style and marker
    per rate, the legend below the panels (over none of them), and a point with nothing to
    draw (it diverged at once) says so in the legend."""
    nan = {key: np.full_like(values, np.nan) for key, values in history(epochs=3).items()}
    points = {f"{variant}@learning_rate={rate}": (nan if (variant, rate) == ("a", 1.0)
                                                  else history(epochs=3))
              for variant in ("a", "b", "c") for rate in (0.01, 1.0)}
    figure = learning_curves(points)
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()
             if not line.get_label().startswith("_")}
    for name, line in lines.items():
        variant, rate = name.split(" ")[0].split("@")
        same_variant = [other for key, other in lines.items() if key.startswith(variant + "@")]
        same_rate = [other for key, other in lines.items() if rate in key]
        assert {to_rgba(other.get_color()) for other in same_variant} == {
            to_rgba(line.get_color())}
        assert {(o.get_linestyle(), o.get_marker()) for o in same_rate} == {
            (line.get_linestyle(), line.get_marker())}
    assert len({to_rgba(line.get_color()) for line in lines.values()}) == 3
    assert not any(ax.get_legend() for ax in figure.axes)
    (legend,) = figure.legends
    texts = [text.get_text() for text in legend.get_texts()]
    assert "a@learning_rate=1.0 (diverged at once: not drawn)" in texts and len(texts) == 6
    canvas = FigureCanvasAgg(figure)  # laid out: the legend's box below every panel's
    canvas.draw()
    renderer = canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    assert all(box.y1 <= ax.get_tightbbox(renderer).y0 + 1 for ax in figure.axes)


@pytest.mark.parametrize("seeds", [2, 5])
def test_every_text_of_the_curves_and_gap_figures_of_a_21_point_sweep_is_inside_its_canvas(
        seeds):
    rng = np.random.default_rng(seeds)
    points = {f"{variant}@learning_rate={rate}": history(seeds=seeds, epochs=3) | {
        f"val_batchstats_{m}": rng.uniform(0.3, 0.9, (seeds, 3)) for m in ("loss", "accuracy")}
        for variant in ("baseline", "bn_after", "bn_before")
        for rate in (0.001, 0.00316, 0.01, 0.0316, 0.1, 0.316, 1.0)}
    assert texts_outside(learning_curves(points, title="lr-robustness-20261207-120000")) == []
    assert texts_outside(gap_figure(points, title="lr-robustness-20261207-120000")) == []


def test_the_gap_of_few_seeds_is_thin_lines_and_of_more_a_band_within_100_points():
    from matplotlib.collections import PolyCollection

    rng = np.random.default_rng(0)
    for seeds, lines, bands in ((2, 3, 0), (5, 1, 1)):
        bn = history(seeds=seeds, epochs=4) | {
            "val_batchstats_accuracy": rng.uniform(0.0, 1.0, (seeds, 4)),
            "val_batchstats_loss": rng.uniform(0.3, 0.9, (seeds, 4))}
        _, gap = gap_figure({"bn": bn}).axes
        assert len(gap.get_lines()) == lines + 1  # and the zero line
        polygons = [c for c in gap.collections if isinstance(c, PolyCollection)]
        assert len(polygons) == bands
        for polygon in polygons:
            assert np.abs(polygon.get_paths()[0].vertices[:, 1]).max() <= 100


@pytest.mark.parametrize("seeds", [2, 5])
def test_every_text_of_a_sweeps_accuracy_figure_is_inside_its_canvas(seeds):
    """The lr-robustness preset's 21 points, one diverged in every seed and one in some."""
    from bnlab.analysis.sweep import SweepPoint
    from bnlab.config.files import load_experiment
    from bnlab.report.plots import sweep_figure

    config = load_experiment("lr-robustness")
    points = [SweepPoint(p.name, p.variant, dict(p.values)) for p in config.points]
    rng = np.random.default_rng(seeds)
    finals = {p.name: rng.uniform(0.6, 0.9, seeds) for p in points}
    finals[points[-1].name][:] = np.nan
    finals[points[-2].name][0] = np.nan
    figure = sweep_figure(points, finals, "optimizer.learning_rate",  # as a run titles it
                          title="lr-robustness (lr-robustness-20261207-120000)")
    assert texts_outside(figure) == []
    (ax,) = figure.axes
    spread = "thin lines = each seed" if seeds <= 3 else "band = 95% confidence interval"
    assert spread in figure.get_suptitle()
    assert len(ax.get_lines()) == 3 * (1 + (seeds if seeds <= 3 else 0)) + 2  # and two ✕
