"""Figures of what probes recorded: every variant drawn, whatever its layers are named, and
nothing but data in them (no empty panels with a legend, no warnings)."""

from __future__ import annotations

import numpy as np

from bnlab.report.plots import figure_bytes
from bnlab.report.probe_plots import activation_bands, figure1, measures_figure
from tests.report.canvas import texts_outside


def records(names, seeds=3, n=6, m=4, epochs=2, ics=("dense", "dense_1")):
    rng = np.random.default_rng(len(names))
    out = {"activations/steps": np.arange(n) * 100, "measures/steps": np.arange(m) * 150,
           "test/steps": np.arange(1, epochs + 1) * 300,
           "test/accuracy": rng.uniform(0.5, 0.9, (seeds, epochs)).astype(np.float32),
           "measures/grad_change": rng.uniform(1, 2, (seeds, m, 2)).astype(np.float32),
           "measures/step_sizes": np.full((seeds, m, 2), [0.1, 0.2], np.float32),
           "measures/grad_norm": rng.uniform(1, 2, (seeds, m)).astype(np.float32),
           "measures/loss_along": rng.uniform(0, 1, (seeds, m, 2)).astype(np.float32),
           "measures/loss": rng.uniform(0, 1, (seeds, m)).astype(np.float32)}
    for name in names:
        stats = np.sort(rng.normal(size=(seeds, n, 7)), axis=-1).astype(np.float32)
        out[f"activations/{name}/layer"] = stats
        out[f"activations/{name}/units"] = np.sort(rng.normal(size=(seeds, n, 4, 3)),
                                                   axis=-1).astype(np.float32)
    for k, layer in enumerate(ics):
        out[f"measures/ics/{layer}"] = (np.zeros((seeds, m)) if k == 0 else rng.uniform(
            0.1, 1, (seeds, m))).astype(np.float32)
        out[f"measures/ics_cosine/{layer}"] = np.ones((seeds, m), np.float32)
    return out


RUN = {"baseline": records(["leaky_re_lu/input", "leaky_re_lu_1/input"]),
       "bn_before": records(["activation/input", "activation_1/input"])}


def test_activation_bands_draw_every_variant_by_layer_position():
    figure = activation_bands(RUN, "t")
    drawn = [ax for ax in figure.axes if ax.has_data()]
    assert len(drawn) == 4  # 2 variants × 2 hidden layers, though their names differ
    titles = {ax.get_title() for ax in drawn}
    assert "baseline: leaky_re_lu/input" in titles and "bn_before: activation_1/input" in titles
    assert figure_bytes(figure).startswith(b"\x89PNG")


def test_figure1_has_the_papers_panels_test_accuracy_then_one_per_variant():
    figure = figure1(RUN, "t")
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[0] == "(a) test accuracy"
    assert titles[1].startswith("(b) baseline: leaky_re_lu_1/input")  # the last hidden layer
    assert titles[2].startswith("(c) bn_before: activation_1/input")
    assert figure_bytes(figure).startswith(b"\x89PNG")


def test_measures_leave_out_a_layer_with_nothing_below_it():
    figure = measures_figure(RUN, "t")
    by_title = {ax.get_title(): ax for ax in figure.axes}
    assert not by_title["ICS ‖G − G′‖ of dense"].has_data()  # ICS 0 by definition
    assert by_title["ICS ‖G − G′‖ of dense_1"].has_data()
    assert by_title["effective β-smoothness"].get_yscale() == "log"
    assert figure_bytes(figure).startswith(b"\x89PNG")


def test_a_point_whose_every_seed_diverged_draws_its_figures_without_a_warning():
    """A sweep point whose seeds all diverged records NaN from the step each diverged at:
    every figure still draws (warnings are errors in the tests), and means are over the
    finite seeds only."""
    diverged = records(["activation/input", "activation_1/input"])
    for name, values in diverged.items():
        if name.endswith(("/layer", "/units")) or (name.startswith("measures/") and (
                not name.endswith("steps"))):
            values = values.astype(np.float32)
            values[:, 2:] = np.nan  # every seed, from the third record on
            values[1] = np.nan      # one seed from the start
            diverged[name] = values
    run = {"baseline": RUN["baseline"], "bn_before@learning_rate=1.0": diverged}
    for draw in (activation_bands, figure1, measures_figure):
        assert figure_bytes(draw(run, "t")).startswith(b"\x89PNG")
    from bnlab.report.probe_plots import finite_mean

    layer = diverged["activations/activation/input/layer"]
    mean = finite_mean(layer.astype(np.float64))
    np.testing.assert_allclose(mean[:2], layer[[0, 2], :2].mean(axis=0), rtol=1e-6)
    assert np.isnan(mean[2:]).all()


def test_measures_show_few_seeds_as_lines_and_more_as_a_band_and_say_which():
    from matplotlib.collections import PolyCollection

    for seeds, lines, bands, said in ((2, 3, 0, "thin lines: each seed"),
                                      (5, 1, 1, "95% band")):
        run = {"bn": records(["activation/input"], seeds=seeds)}
        figure = measures_figure(run, "t")
        beta = next(ax for ax in figure.axes if ax.get_title() == "effective β-smoothness")
        assert len(beta.get_lines()) == lines
        assert sum(isinstance(c, PolyCollection) for c in beta.collections) == bands
        assert said in figure.get_suptitle()


def test_a_cosine_near_one_reads_as_itself_and_an_empty_panel_says_why():
    run = {"bn": records(["activation/input"], seeds=2)}
    run["bn"]["measures/ics_cosine/dense_1"] = (
        1 - np.array([[1e-6, 2e-6, 3e-6, 1e-6], [2e-6, 1e-6, 2e-6, 3e-6]])).astype(np.float32)
    figure = measures_figure(run, "t")
    figure_bytes(figure)  # drawn: tick labels and offsets are set when drawn
    by_title = {ax.get_title(): ax for ax in figure.axes}
    assert by_title["cos∠(G, G′) of dense_1"].yaxis.get_offset_text().get_text() == ""
    empty = by_title["ICS ‖G − G′‖ of dense"]
    assert not empty.has_data()
    assert "no trained layer below it" in " ".join(t.get_text() for t in empty.texts)


def test_every_text_of_every_probe_figure_is_inside_its_canvas():
    run = {"bn_before@learning_rate=0.316,batch_size=64": records(
               ["activation/input", "activation_1/input"], seeds=2),
           "baseline@learning_rate=0.316,batch_size=64": records(
               ["leaky_re_lu/input", "leaky_re_lu_1/input"], seeds=5)}
    for draw in (activation_bands, figure1, measures_figure):
        assert texts_outside(draw(run, "lr-robustness-20261207-120000")) == [], draw.__name__


def test_figure1_draws_one_seeds_unit_0_not_a_mean_of_unrelated_units():
    run = {"bn": records(["activation/input"], seeds=3)}
    units = run["bn"]["activations/activation/input/units"]
    units[0] = np.nan  # the first seed diverged at once: the second one's unit is drawn
    figure = figure1(run, "t")
    panel = figure.axes[1]
    median = next(line for line in panel.get_lines() if line.get_label() == "unit 0, 50th")
    np.testing.assert_allclose(median.get_ydata(), units[1, :, 0, 1])
    assert "unit 0 of the first seed" in figure.get_suptitle()


def test_activation_bands_colour_a_sweep_by_variant_and_say_why_a_panel_is_empty():
    diverged = records(["activation/input"], seeds=2)
    diverged["activations/activation/input/layer"][:] = np.nan  # from its first record on
    run = {"bn@learning_rate=0.01": records(["activation/input"], seeds=2),
           "bn@learning_rate=0.1": records(["activation/input"], seeds=2),
           "bn@learning_rate=1.0": diverged,
           "plain@learning_rate=0.01": records(["leaky_re_lu/input"], seeds=2)}
    first, second, empty, plain = activation_bands(run, "t").axes
    color = first.get_lines()[0].get_color()
    assert second.get_lines()[0].get_color() == color  # one colour per variant
    assert plain.get_lines()[0].get_color() != color
    assert not empty.has_data() and "every seed diverged" in empty.texts[0].get_text()


def test_measures_of_one_probed_step_tick_that_step_only():
    """A run measured once (a short run, or ``measures_every`` past its steps) shows its step
    as the one tick, not −0.04 … 0.04 around it; each seed's value is drawn."""
    run = {"bn": records(["activation/input"], m=1, ics=("dense_1",))}
    run["bn"]["measures/steps"] = np.array([150])
    figure = measures_figure(run, "t")
    figure_bytes(figure)  # drawn, so the ticks are the ones shown
    drawn = [ax for ax in figure.axes if ax.has_data()]
    assert drawn and all(list(ax.get_xticks()) == [150] for ax in drawn)
