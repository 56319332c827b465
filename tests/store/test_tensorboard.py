"""TensorBoard logs read back with TensorBoard's own reader and HParams plugin.

Scalars are stored as float32 (``Summary.Value.simple_value``), so a value read back equals the
written float64 rounded to the nearest float32 — compared exactly after that cast. Histogram
min/max are doubles of float32 inputs (exact); their sum is compared at rtol 1e-12 (float64
summation order).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import (
    HISTOGRAMS,
    SCALARS,
    EventAccumulator,
)
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from werkzeug.test import Client

from bnlab.config.experiment import ExperimentConfig, VariantConfig
from bnlab.config.optimizer import OptimizerConfig
from bnlab.experiments.training import variant_hparams
from bnlab.store.tensorboard import TensorBoardLogger

SEEDS = (42, 43)
EPOCHS = 3
ROWS, FEATURES = 16, 5
LEARNING_RATE = 1e-3
HPARAMS = {"variant": "bn_after", "optimizer": "sgd", "learning_rate": LEARNING_RATE,
           "batch_size": 32, "epochs": EPOCHS, "batch_norm": "momentum=0.99", "center": True}
HISTOGRAM_LAYERS = ("dense/pre_activation", "batch_normalization", "batch_normalization_1",
                    "dense_1/pre_activation")
OTHER_LAYERS = ("flatten", "dense", "leaky_re_lu", "dense_1")


def write_variant(log_dir: Path, rng: np.random.Generator, hparams=HPARAMS):
    """3 epochs of random metrics and activations for 2 seeds; returns what was written."""
    metrics = {m: rng.uniform(0.1, 2.0, (len(SEEDS), EPOCHS))
               for m in ("loss", "accuracy", "val_loss", "val_accuracy")}
    activations = [{name: rng.normal(size=(len(SEEDS), ROWS, FEATURES)).astype(np.float32)
                    for name in HISTOGRAM_LAYERS + OTHER_LAYERS} for _ in range(EPOCHS)]
    with TensorBoardLogger(log_dir, SEEDS, hparams) as logger:
        for epoch in range(EPOCHS):
            logger.log_epoch(epoch, {m: v[:, epoch] for m, v in metrics.items()},
                             LEARNING_RATE, activations[epoch])
    return metrics, activations


def read(run: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run), size_guidance={SCALARS: 0, HISTOGRAMS: 0})
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("tensorboard") / "bn_after"
    metrics, activations = write_variant(log_dir, np.random.default_rng(0))
    return log_dir, metrics, activations


def test_scalars_are_keras_epoch_tags_per_seed_and_split_with_epoch_steps(logged):
    log_dir, metrics, _ = logged
    for i, seed in enumerate(SEEDS):
        train = read(log_dir / f"seed-{seed}" / "train")
        validation = read(log_dir / f"seed-{seed}" / "validation")
        assert set(train.Tags()["scalars"]) == {"epoch_loss", "epoch_accuracy",
                                                "epoch_learning_rate"}
        assert set(validation.Tags()["scalars"]) == {"epoch_loss", "epoch_accuracy"}
        expected = {
            (train, "epoch_loss"): metrics["loss"][i],
            (train, "epoch_accuracy"): metrics["accuracy"][i],
            (train, "epoch_learning_rate"): np.full(EPOCHS, LEARNING_RATE),
            (validation, "epoch_loss"): metrics["val_loss"][i],
            (validation, "epoch_accuracy"): metrics["val_accuracy"][i],
        }
        for (run, tag), values in expected.items():
            events = run.Scalars(tag)
            assert [e.step for e in events] == list(range(EPOCHS))
            np.testing.assert_array_equal([e.value for e in events], values.astype(np.float32))


def test_the_train_inference_gap_goes_to_the_validation_run_beside_its_two_scores(tmp_path):
    rng = np.random.default_rng(1)
    metrics = {m: rng.uniform(0.5, 0.9, len(SEEDS))
               for m in ("loss", "accuracy", "val_loss", "val_accuracy",
                         "val_batchstats_loss", "val_batchstats_accuracy")}
    with TensorBoardLogger(tmp_path, SEEDS, HPARAMS) as logger:
        logger.log_epoch(0, metrics, LEARNING_RATE)
    for i, seed in enumerate(SEEDS):
        validation = read(tmp_path / f"seed-{seed}" / "validation")
        assert set(validation.Tags()["scalars"]) == {
            "epoch_loss", "epoch_accuracy", "epoch_batchstats_loss", "epoch_batchstats_accuracy",
            "epoch_bn_gap_loss", "epoch_bn_gap_accuracy"}
        (gap,) = validation.Scalars("epoch_bn_gap_accuracy")
        want = metrics["val_accuracy"][i] - metrics["val_batchstats_accuracy"][i]
        assert gap.value == np.float32(want)


def test_every_normalization_layers_output_gets_a_histogram():
    from bnlab.store.tensorboard import is_histogram_layer

    for name in ("batch_normalization", "batch_normalization_2", "layer_normalization",
                 "ghost_batch_normalization_1", "batch_renormalization", "dense/pre_activation"):
        assert is_histogram_layer(name), name
    for name in ("dense", "flatten", "leaky_re_lu_1", "activation"):
        assert not is_histogram_layer(name), name


def test_histograms_hold_every_probe_value_of_dense_pre_activations_and_bn_outputs(logged):
    log_dir, _, activations = logged
    for i, seed in enumerate(SEEDS):
        train = read(log_dir / f"seed-{seed}" / "train")
        assert set(train.Tags()["histograms"]) == {f"activations/{n}" for n in HISTOGRAM_LAYERS}
        assert read(log_dir / f"seed-{seed}" / "validation").Tags()["histograms"] == []
        for name in HISTOGRAM_LAYERS:
            events = train.Histograms(f"activations/{name}")
            assert [e.step for e in events] == list(range(EPOCHS))
            for epoch, event in enumerate(events):
                values = activations[epoch][name][i]  # (rows, features)
                histogram = event.histogram_value
                assert histogram.num == ROWS * FEATURES == sum(histogram.bucket)
                assert histogram.min == values.min()
                assert histogram.max == values.max()
                np.testing.assert_allclose(histogram.sum, values.astype(np.float64).sum(),
                                           rtol=1e-12)


def session_plugin_data(log_dir: Path, seed: int) -> dict[str, bytes]:
    return read(log_dir / f"seed-{seed}").PluginTagToContent(hparams_metadata.PLUGIN_NAME)


def hparam_values(content: bytes) -> dict[str, object]:
    start = hparams_metadata.parse_session_start_info_plugin_data(content)
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}


def test_each_seed_is_an_hparams_session_with_the_variant_hyperparameters(logged):
    log_dir, _, _ = logged
    for seed in SEEDS:
        content = session_plugin_data(log_dir, seed)
        assert set(content) == {hparams_metadata.SESSION_START_INFO_TAG,
                                hparams_metadata.SESSION_END_INFO_TAG}
        assert hparam_values(content[hparams_metadata.SESSION_START_INFO_TAG]) == {
            **HPARAMS, "seed": seed}
        end = hparams_metadata.parse_session_end_info_plugin_data(
            content[hparams_metadata.SESSION_END_INFO_TAG])
        assert api_pb2.Status.Name(end.status) == "STATUS_SUCCESS"


# TensorBoard's vendored bleach warns on import; imported here to keep that out of the log.
@pytest.mark.filterwarnings("ignore:html5lib's sanitizer is deprecated:DeprecationWarning")
def test_hparams_tab_has_one_row_per_variant_and_seed_with_final_validation_metrics(tmp_path):
    from tensorboard.plugins.hparams import hparams_plugin

    rng = np.random.default_rng(1)
    written = {name: write_variant(tmp_path / name, rng, {**HPARAMS, "variant": name})[0]
               for name in ("baseline", "bn_after")}
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(tmp_path))
    multiplexer.Reload()
    plugin = hparams_plugin.HParamsPlugin(base_plugin.TBContext(
        logdir=str(tmp_path), multiplexer=multiplexer,
        data_provider=data_provider.MultiplexerDataProvider(multiplexer, str(tmp_path))))
    response = Client(plugin.get_plugin_apps()["/session_groups"]).post(json={
        "experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                            "STATUS_RUNNING"]})
    assert response.status_code == 200
    groups = {g["name"]: g for g in response.get_json()["sessionGroups"]}
    assert sorted(groups) == [f"{v}/seed-{s}" for v in written for s in SEEDS]
    for variant, metrics in written.items():
        for i, seed in enumerate(SEEDS):
            group = groups[f"{variant}/seed-{seed}"]
            assert group["hparams"]["variant"] == variant
            assert group["hparams"]["seed"] == seed
            final = {(m["name"]["group"], m["name"]["tag"]): m for m in group["metricValues"]}
            for split, tag, metric in (("validation", "epoch_accuracy", "val_accuracy"),
                                       ("validation", "epoch_loss", "val_loss"),
                                       ("train", "epoch_loss", "loss")):
                assert final[split, tag]["trainingStep"] == EPOCHS - 1
                assert final[split, tag]["value"] == np.float32(metrics[metric][i, -1])


def test_a_run_ended_by_an_exception_leaves_its_sessions_unfinished(tmp_path):
    with pytest.raises(RuntimeError), TensorBoardLogger(tmp_path, SEEDS, HPARAMS) as logger:
        logger.log_epoch(0, {"loss": np.ones(2)}, LEARNING_RATE)
        raise RuntimeError("diverged")
    assert set(session_plugin_data(tmp_path, SEEDS[0])) == {
        hparams_metadata.SESSION_START_INFO_TAG}


def test_a_killed_process_keeps_every_epoch_that_log_epoch_returned_from(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        import numpy as np
        from bnlab.store.tensorboard import TensorBoardLogger
        logger = TensorBoardLogger(Path({str(tmp_path)!r}), [7], {{"variant": "v"}})
        for epoch in range(2):
            logger.log_epoch(epoch, {{"loss": np.array([epoch + 0.5])}}, 0.1,
                             {{"batch_normalization": np.ones((1, 4, 3))}})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == -9, result.stderr
    train = read(tmp_path / "seed-7" / "train")
    assert [(e.step, e.value) for e in train.Scalars("epoch_loss")] == [(0, 0.5), (1, 1.5)]
    assert [e.step for e in train.Histograms("activations/batch_normalization")] == [0, 1]


def test_a_resumed_logger_replaces_the_epochs_a_killed_run_wrote_from_its_first_epoch_on(
        tmp_path):
    killed = TensorBoardLogger(tmp_path, [7], {"variant": "v"})
    for epoch in range(3):
        killed.log_epoch(epoch, {"loss": np.array([float(epoch)])}, 0.1)
    # no close(): the process died after epoch 2, its checkpoint holds epoch 1
    with TensorBoardLogger(tmp_path, [7], {"variant": "v"}) as resumed:
        for epoch in range(1, 4):
            resumed.log_epoch(epoch, {"loss": np.array([10.0 + epoch])}, 0.1)
    killed.close(completed=False)  # releases its file handles only; it writes nothing more
    train = read(tmp_path / "seed-7" / "train")
    assert [(e.step, e.value) for e in train.Scalars("epoch_loss")] == [
        (0, 0.0), (1, 11.0), (2, 12.0), (3, 13.0)]


def test_arrays_without_the_seed_axis_and_non_scalar_hparams_are_rejected(tmp_path):
    with pytest.raises(TypeError, match="hparam 'layers' is a list"):
        TensorBoardLogger(tmp_path / "a", SEEDS, {"layers": [300, 100]})
    with TensorBoardLogger(tmp_path / "b", SEEDS, HPARAMS) as logger:
        with pytest.raises(ValueError, match=r"loss: expected 1 axes with 2 seeds first"):
            logger.log_epoch(0, {"loss": np.ones(3)}, LEARNING_RATE)
        with pytest.raises(ValueError, match=r"batch_normalization: expected 3 axes"):
            logger.log_epoch(0, {"loss": np.ones(2)}, LEARNING_RATE,
                             {"batch_normalization": np.ones((2, 4))})


def test_variant_hparams_name_the_recipe_the_model_and_the_bn_options():
    bn_layers = ({"type": "flatten"}, {"type": "batch_norm"}, {"type": "dense", "units": 16},
                 {"type": "batch_norm", "momentum": 0.9, "momentum_on": "new"},
                 {"type": "dense", "units": 10, "activation": "softmax"})
    config = ExperimentConfig(
        name="seed", variants=(VariantConfig("baseline", "baseline"),
                               VariantConfig("bn_after", "bn_after"),
                               VariantConfig("mixed", layers=bn_layers)),
        optimizer=OptimizerConfig("sgd", 1e-3, {"momentum": 0.9, "nesterov": True}))
    baseline, bn_after, mixed = (variant_hparams(config, p) for p in config.points)
    assert baseline == {
        "experiment": "seed", "dataset": "fashion_mnist", "variant": "baseline",
        "model": "baseline", "optimizer": "sgd", "learning_rate": 1e-3, "batch_size": 32,
        "epochs": 10, "batch_norm_layers": 0, "batch_norm": "none",
        "optimizer.momentum": 0.9, "optimizer.nesterov": True}
    keras = ("momentum=0.99 epsilon=0.001 momentum_on=old stored_variance=biased "
             "moving_average=exponential center=True scale=True freeze=False freeze_affine=False")
    assert (bn_after["batch_norm_layers"], bn_after["batch_norm"]) == (3, keras)
    assert mixed["model"] == "layers"
    pytorch_like = keras.replace("0.99", "0.9").replace("old", "new")
    assert mixed["batch_norm"] == f"{keras} | {pytorch_like}"


@pytest.mark.parametrize("values", [np.full((2, ROWS, FEATURES), 1e30, np.float32),
                                    np.full((2, ROWS, FEATURES), 0.0, np.float32),
                                    np.array([-3e38, 3e38] * ROWS * FEATURES,
                                             np.float32).reshape(2, ROWS, FEATURES)])
def test_histograms_of_activations_about_to_diverge_still_count_every_value(tmp_path, values):
    """Finite but huge or constant values (a layer just before its member diverges) have a
    range NumPy cannot split into bins by itself; the histogram must still hold them all."""
    with TensorBoardLogger(tmp_path / "v", SEEDS, HPARAMS) as logger:
        logger.log_epoch(0, {"loss": np.ones(2)}, LEARNING_RATE, {"batch_normalization": values})
    event, = read(tmp_path / "v" / f"seed-{SEEDS[0]}" / "train").Histograms(
        "activations/batch_normalization")
    histogram = event.histogram_value
    assert histogram.num == sum(histogram.bucket) == ROWS * FEATURES
    assert (histogram.min, histogram.max) == (values[0].min(), values[0].max())
