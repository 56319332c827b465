"""The Python API: the notebook's workflow from a script or a notebook, on the same trainer,
loop and run store as the ``bnlab`` command."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import optax
import pytest
from matplotlib.figure import Figure
from rich.console import Console

import bnlab
from bnlab.config.experiment import ExperimentConfig, VariantConfig
from bnlab.config.optimizer import OptimizerConfig
from bnlab.experiments.runner import train_program
from bnlab.experiments.sweep import programs
from tests.synthetic import TINY_LAYERS, tiny_splits

TINY = VariantConfig("tiny", layers=TINY_LAYERS)


def tiny_model():
    return TINY.build((4, 4))


def test_fit_returns_keras_history_and_the_trained_state():
    data = tiny_splits()
    history = bnlab.fit(tiny_model(), data.x_train, data.y_train, epochs=3,
                        validation_data=(data.x_val, data.y_val), verbose=0)
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert history.epoch == [0, 1, 2] and all(len(v) == 3 for v in history.history.values())
    assert all(isinstance(v, float) for v in history.history["val_accuracy"])
    assert history.seeds == (42,) and history.state.params[2]["kernel"].shape == (1, 16, 8)
    assert history.history["loss"][-1] < history.history["loss"][0]
    evaluated = history.evaluate(data.x_val, data.y_val)  # Keras's evaluate, inference mode
    assert evaluated["loss"] == pytest.approx(history.history["val_loss"][-1], rel=1e-6)
    assert evaluated["accuracy"] == pytest.approx(history.history["val_accuracy"][-1])


def test_fit_runs_the_runners_loop_so_it_gives_the_runners_numbers():
    # One loop for every caller: fit and the experiment runner train the same seeds of the
    # same model to the same numbers (bit for bit: the same compiled programs).
    data = tiny_splits()
    config = ExperimentConfig(name="same", variants=(TINY,), epochs=2, seed=7, seeds=3,
                              optimizer=OptimizerConfig("sgd", 0.05))
    (runner,) = train_program(programs(config)[0], config, data)
    history = bnlab.fit(TINY.build((4, 4)), data.x_train, data.y_train, epochs=2, seed=7,
                        seeds=3, optimizer="sgd", learning_rate=0.05,
                        validation_data=(data.x_val, data.y_val), verbose=0)
    for metric, values in runner.history.per_seed.items():
        np.testing.assert_array_equal(history.per_seed[metric], values)
    np.testing.assert_allclose(history.history["loss"],
                               runner.history.per_seed["loss"].mean(axis=0))  # Keras: means
    evaluated = history.evaluate(data.x_test, data.y_test)
    np.testing.assert_allclose(evaluated["accuracy"], runner.test_accuracy, rtol=1e-6)


def test_fit_takes_an_optax_optimizer_float_pixels_and_no_validation():
    data = tiny_splits()
    by_name = bnlab.fit(tiny_model(), data.x_train, data.y_train, epochs=2, verbose=0,
                        optimizer="adam", learning_rate=0.01)
    by_object = bnlab.fit(tiny_model(), data.x_train, data.y_train, epochs=2, verbose=0,
                          optimizer=optax.adam(0.01))
    assert list(by_name.history) == ["loss", "accuracy"]
    np.testing.assert_array_equal(by_name.per_seed["loss"], by_object.per_seed["loss"])
    # The notebook scales X / 255 itself: float inputs are used as given, within float32
    # rounding of the uint8 path (which scales on the device).
    floats = bnlab.fit(tiny_model(), (data.x_train / 255.0).astype(np.float32), data.y_train,
                       epochs=2, verbose=0, optimizer=optax.adam(0.01))
    np.testing.assert_allclose(floats.per_seed["loss"], by_object.per_seed["loss"], rtol=1e-4)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"epochs": 0}, r"fit: epochs must be an integer ≥ 1, got 0"),
    ({"seeds": 2.5}, r"fit: seeds must be an integer ≥ 1, got 2\.5"),
    ({"optimizer": "adamm"}, r"fit: optimizer\.name: 'adamm' is not an optax optimizer"),
    ({"learning_rate": float("nan")}, r"optimizer\.learning_rate: must be a finite positive "),
    ({"verbose": 3}, r"verbose must be 0 \(silent\), 1 \(a progress bar\) or 2"),
])
def test_fit_arguments_are_checked_with_one_line_each(kwargs, message):
    data = tiny_splits()
    with pytest.raises(bnlab.ConfigError, match=message):
        bnlab.fit(tiny_model(), data.x_train, data.y_train, **kwargs)


def test_arguments_of_the_wrong_kind_are_one_line_not_an_attribute_error():
    data = tiny_splits()
    assert bnlab.summary("bn_before").total == 270_946  # a preset's name is a model too
    cases = [
        (lambda: bnlab.summary(3), "summary: give a bnlab.Sequential or a preset name"),
        (lambda: bnlab.fit(tiny_model(), data.x_train, data.y_train, optimizer=42),
         "fit: optimizer must be an optax optimizer"),
        (lambda: bnlab.fit(tiny_model(), data.x_train, data.y_train,
                           validation_data=data.x_val), r"validation_data must be a pair"),
        (lambda: bnlab.compare([1, 2]), r"compare: give a Run, a run folder, a History or "),
        (lambda: bnlab.fit(tiny_model(), data.x_train, data.y_train, verbose=0).final(
            "val_accuracy"), r"no 'val_accuracy' in this history; it has loss, accuracy"),
        (lambda: bnlab.load_run("no/such/run"), r"no/such/run does not exist"),
    ]
    for call, message in cases:
        with pytest.raises(bnlab.BnlabError, match=message):
            call()


def test_fit_prints_a_keras_line_per_epoch_or_a_bar_that_ends_complete(capsys):
    data = tiny_splits()
    bnlab.fit(tiny_model(), data.x_train, data.y_train, epochs=2, verbose=2,
              validation_data=(data.x_val, data.y_val))
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "3/3 - " in out and "val_loss: " in out
    bnlab.fit(tiny_model(), data.x_train, data.y_train, epochs=2, verbose=1)
    out = capsys.readouterr().out  # not a terminal: the bar's final state, once
    assert "Epoch" not in out and "2/2 epochs" in out and "loss " in out and " · acc " in out


def test_summary_is_data_and_renders_as_text_and_html():
    summary = bnlab.summary(bnlab.model("bn_after"))
    assert (summary.total, summary.trainable, summary.non_trainable) == (271_346, 268_978, 2_368)
    assert summary.layers[1] == ("batch_normalization", "BatchNormalization", (None, 784), 3136,
                                 "", "")
    assert [(v.name, v.trainable) for v in summary.normalization_variables()[:4]] == [
        ("gamma", True), ("beta", True), ("moving_mean", False), ("moving_variance", False)]
    assert summary.pytorch_buffers == 2_368 + 3
    text = str(summary)
    assert "Total params: 271,346" in text and "dense_2 (Dense)" in text and "\x1b" not in text
    page = summary._repr_html_()
    assert "<dd>268,978</dd>" in page and "<td>moving_variance</td>" in page
    with pytest.raises(bnlab.ConfigError, match="unknown model 'resnet'; known models"):
        bnlab.model("resnet")


def test_a_sequential_of_any_layers_and_a_clear_error_for_what_is_not_a_layer():
    model = bnlab.Sequential([bnlab.Flatten(), bnlab.BatchNorm.pytorch(),
                              bnlab.Dense(10, activation="softmax")], input_shape=(4, 4))
    assert bnlab.summary(model).trainable == 16 * 2 + 16 * 10 + 10
    with pytest.raises(bnlab.ConfigError, match=r"Sequential takes bnlab layers .* got int"):
        bnlab.Sequential([bnlab.Flatten(), 3])


def test_run_stores_an_experiment_and_gives_back_its_run(tmp_path):
    config = ExperimentConfig(name="api", variants=(
        VariantConfig("plain", layers=({"type": "flatten"},
                                       {"type": "dense", "units": 10, "activation": "softmax"})),
        TINY), epochs=2, seeds=2, optimizer=OptimizerConfig("sgd", 0.1))
    run = bnlab.run(config, data=tiny_splits(), runs_dir=tmp_path, verbose=0)
    assert run.complete and run.path.parent == tmp_path and run.config == config
    assert repr(run).endswith("'api', 2 variants × 2 seed(s), 2 epochs, complete)")
    again = bnlab.load_run(run.path)
    np.testing.assert_array_equal(again.histories["tiny"].per_seed["val_accuracy"],
                                  run.histories["tiny"].per_seed["val_accuracy"])
    (comparison,) = bnlab.compare(run)
    assert comparison.n == 2 and comparison.verdict and {comparison.name_a,
                                                         comparison.name_b} == {"plain", "tiny"}
    figure = bnlab.plot_curves(run)
    assert isinstance(figure, Figure) and figure._repr_png_().startswith(b"\x89PNG")
    out = io.StringIO()
    Console(file=out, width=160).print(bnlab.show(run))
    assert "experiment 'api'" in out.getvalue() and "optimizer sgd lr 0.1" in out.getvalue()
    assert "Final metrics (mean ± sd over seeds)" in out.getvalue()
    assert "Verdicts" in out.getvalue()
    assert len(bnlab.compare(str(run.path))) == 1  # a run folder's path does too
    report = bnlab.write_report(run, tmp_path / "report.html")
    assert "bnlab report: api" in report.path.read_text(encoding="utf-8")
    with pytest.raises(bnlab.BnlabError, match=r"already complete .* without resume=True"):
        bnlab.run(config, data=tiny_splits(), runs_dir=tmp_path, resume=True, verbose=0)
    folders = sorted(tmp_path.iterdir())
    with pytest.raises(bnlab.ConfigError, match="verbose must be 0"):
        bnlab.run(config, data=tiny_splits(), runs_dir=tmp_path, verbose=3)
    with pytest.raises(bnlab.ConfigError, match=r"^layers\[0\]: dense layer needs units"):
        VariantConfig("v", layers=({"type": "dense"},))  # checked when it is built
    with pytest.raises(bnlab.ConfigError, match=r"^seeds must be in 1\.\.1,000, got 0"):
        bnlab.run(config, seeds=0, data=tiny_splits(), runs_dir=tmp_path, verbose=0)
    assert sorted(tmp_path.iterdir()) == folders  # nothing written for a bad argument


def test_compare_fit_histories_and_plot_them():
    data = tiny_splits()
    fits = {name: bnlab.fit(model, data.x_train, data.y_train, epochs=2, seeds=3, verbose=0,
                            validation_data=(data.x_val, data.y_val))
            for name, model in (("tiny", tiny_model()),
                                ("plain", bnlab.Sequential([bnlab.Flatten(), bnlab.Dense(3)],
                                                           input_shape=(4, 4))))}
    assert len(bnlab.compare(fits)) == 1
    assert len(bnlab.plot_curves(fits).axes) == 4
    legend = bnlab.plot_curves(fits["tiny"]).axes[3].get_legend()  # one history: its model
    assert [text.get_text() for text in legend.get_texts()] == ["tiny"]
    with pytest.raises(bnlab.ConfigError, match="each fitted with validation_data"):
        bnlab.compare({"a": bnlab.fit(tiny_model(), data.x_train, data.y_train, verbose=0),
                       "b": fits["tiny"]})
    other = bnlab.fit(tiny_model(), data.x_train, data.y_train, epochs=2, seeds=3, seed=7,
                      verbose=0, validation_data=(data.x_val, data.y_val))
    with pytest.raises(bnlab.ConfigError, match=r"different seeds \(tiny: \(42, 43, 44\); "
                                                r"other: \(7, 8, 9\)\)"):
        bnlab.compare({"tiny": fits["tiny"], "other": other})


def test_loading_data_names_the_python_argument_to_fix(tmp_path):
    with pytest.raises(bnlab.DataError, match=r"does not exist; .* or leave out data_dir$"):
        bnlab.load_fashion_mnist(data_dir=tmp_path / "none", download=False)


def test_every_public_name_is_what_it_says_even_after_every_submodule_is_imported():
    import importlib
    import pkgutil
    import types

    for module in pkgutil.walk_packages(bnlab.__path__, "bnlab."):
        importlib.import_module(module.name)
    for name in bnlab.__all__:
        assert not isinstance(getattr(bnlab, name), types.ModuleType), name
    assert set(bnlab.api.__all__) <= set(bnlab.__all__)


def run_python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    result = subprocess.run([sys.executable, "-c", code], env=clean | env, capture_output=True,
                            text=True, check=True, timeout=120)
    return result.stdout.strip()


SET_THEN_COUNT = """
import jax
import bnlab
{before}
print(bnlab.configure_jax(cpu_devices={devices}, compilation_cache=False), len(jax.devices("cpu")))
"""


def test_cpu_devices_are_one_per_core_when_set_before_jax_starts():
    assert run_python(SET_THEN_COUNT.format(before="", devices=3)) == "True 3"
    cores = len(os.sched_getaffinity(0))
    assert run_python(SET_THEN_COUNT.format(before="", devices=0)) == f"True {cores}"


@pytest.mark.parametrize(("before", "env", "count"), [
    ("jax.devices()", {}, 1),  # too late: JAX has started
    ("", {"JAX_NUM_CPU_DEVICES": "2"}, 2),  # the user chose
    ("", {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}, 2),  # the user chose
])
def test_cpu_device_count_is_left_alone_when_late_or_chosen(before, env, count):
    assert run_python(SET_THEN_COUNT.format(before=before, devices=3), **env) == f"False {count}"
