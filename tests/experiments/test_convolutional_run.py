"""A convolutional experiment through the CLI on a small slice of the real data: conv layers,
BN over (N, H, W), a residual block with its own BatchNorms and GroupNorm train on cropped and
flipped images, and every command that reads a run takes it (``show``, ``recalibrate``,
``predict``, TensorBoard); a run stopped after an epoch, or with a damaged checkpoint, resumes
to the same numbers; ``export`` says in one line that it does not write conv layers yet. One
run, shared."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

import bnlab
from bnlab.cli import main
from bnlab.nn.conv import Conv2D
from bnlab.store.reader import list_runs, load_run
from bnlab.train.checkpoint import read_checkpoint
from tests.synthetic import damage, run_stopped_after_one_epoch

pytestmark = pytest.mark.realdata

CONVOLUTIONAL = """
name = "conv"
epochs = 2
seeds = 1
batch_size = 64
[probe]
every = 0
[optimizer]
name = "sgd"
learning_rate = 0.05
momentum = 0.9
[augment]
crop_padding = 2
flip = true
[[variants]]
name = "bn"
layers = [{ type = "reshape", target_shape = [28, 28, 1] },
          { type = "conv2d", filters = 6, kernel_size = 3, padding = "same", use_bias = false },
          { type = "batch_norm" }, { type = "activation", name = "relu" },
          { type = "max_pool2d" },
          { type = "residual", branch = [
              { type = "conv2d", filters = 6, kernel_size = 3, padding = "same", use_bias = false },
              { type = "batch_norm" }] },
          { type = "flatten" }, { type = "dense", units = 10, activation = "softmax" }]
[[variants]]
name = "gn"
layers = [{ type = "reshape", target_shape = [28, 28, 1] },
          { type = "conv2d", filters = 6, kernel_size = 3, strides = 2, padding = "same" },
          { type = "group_norm", groups = 3 }, { type = "activation", name = "relu" },
          { type = "average_pool2d" }, { type = "flatten" },
          { type = "dense", units = 10, activation = "softmax" }]
"""


ROWS = 1280


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory, fashion_mnist):
    del fashion_mnist  # on disk: the command finds it
    root = tmp_path_factory.mktemp("conv")
    (root / "conv.toml").write_text(CONVOLUTIONAL)
    assert main(["run", str(root / "conv.toml"), "--runs-dir", str(root / "runs"),
                 "--train-rows", str(ROWS), "--no-download"]) == 0
    (run,) = list_runs(root / "runs")[0]
    return run


def test_a_convolutional_run_trains_every_variant_and_stores_its_record(conv_run):
    run = load_run(conv_run.path)
    assert run.complete, run.damage
    assert set(run.summary) == {"bn", "gn"}
    for name, history in run.histories.items():
        loss = history.per_seed["loss"]  # (seeds, epochs)
        assert np.isfinite(loss).all(), name
        # 40 steps of SGD with momentum: the training loss falls below chance's ln 10 = 2.30
        assert (loss[:, -1] < np.log(10)).all(), (name, loss)
    model = run.config.variants[0].build()
    assert any(isinstance(layer, Conv2D) for layer in model.layers)
    # Both BatchNorms, the residual block's too (layer 6), moved their per-channel moving
    # statistics away from their start (0, 1).
    arrays, _ = read_checkpoint(conv_run.path / "bn" / "checkpoint")
    for layer in (2, 6):
        mean = arrays[f".bn_state[{layer}]['moving_mean']"]
        assert mean.shape == (1, 6) and (np.abs(mean) > 0).all()


def test_tensorboard_holds_conv_pre_activation_and_normalization_histograms(conv_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for path in (conv_run.path / "tensorboard").rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(path), size_guidance={"histograms": 0})
        accumulator.Reload()
        tags |= set(accumulator.Tags()["histograms"])
    assert {"activations/conv2d/pre_activation", "activations/batch_normalization_1",
            "activations/group_normalization"} <= tags


def test_show_report_recalibrate_and_predict_take_a_convolutional_run(conv_run, capsys,
                                                                      tmp_path):
    assert main(["show", str(conv_run.path)]) == 0
    assert "bn" in capsys.readouterr().out
    assert main(["report", str(conv_run.path), "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "Conv2D" in page and "GroupNorm" in page and "Residual" not in page  # flat layers
    assert main(["recalibrate", str(conv_run.path), "--batches", "4", "--no-download"]) == 0
    printed = capsys.readouterr().out
    assert "skipped gn: no BatchNorm layer" in printed
    assert (conv_run.path / "bn" / "recalibrated.safetensors").is_file()
    image = tmp_path / "shirt.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30), np.uint8)).save(image)
    assert main(["predict", str(conv_run.path), str(image), "--variant", "gn"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    probabilities = [float(part.split()[-1]) for part in line.split(": ", 1)[1].split(" · ")]
    assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)


def test_export_of_a_convolutional_run_is_refused_in_one_line(conv_run, capsys):
    assert main(["export", str(conv_run.path), "--out", str(conv_run.path / "m.onnx"),
                 "--no-download"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "has no ONNX export" in line
    assert not (conv_run.path / "m.onnx").exists()


def same_numbers(got, want) -> None:
    """The same histories and test accuracies: the same steps on the same machine and device
    layout (1e-6: the tolerance of the fault-injection test)."""
    assert got.histories.keys() == want.histories.keys()
    for name, history in want.histories.items():
        for metric, values in history.per_seed.items():
            np.testing.assert_allclose(got.histories[name].per_seed[metric], values, rtol=0,
                                       atol=1e-6, err_msg=f"{name} {metric}")
        np.testing.assert_allclose(got.summary[name].test_accuracy,
                                   want.summary[name].test_accuracy, rtol=0, atol=1e-6)


def test_a_run_stopped_after_an_epoch_resumes_to_the_same_augmented_numbers(
        conv_run, fashion_mnist, tmp_path):
    """Crops and flips are drawn from the run's keys by step: the resumed second epoch trains
    on the images the uninterrupted one trained on, so both runs end on the same numbers."""
    want = load_run(conv_run.path)
    splits = fashion_mnist.subset(train=ROWS)
    run_stopped_after_one_epoch(want.config, splits, tmp_path / "runs" / "conv-stopped")
    assert not load_run(tmp_path / "runs" / "conv-stopped").complete
    resumed = bnlab.run(want.config, data=splits, runs_dir=tmp_path / "runs", resume=True,
                        verbose=0)
    assert resumed.path.name == "conv-stopped" and resumed.complete
    same_numbers(resumed, want)


def test_a_damaged_conv_checkpoint_is_named_and_retrained_to_the_same_numbers(
        conv_run, tmp_path, capsys):
    """Overwritten bytes in the bn variant's checkpoint (conv kernels, per-channel BN
    statistics): ``show`` names the file, ``run --resume`` retrains that variant alone and
    the run ends on the numbers it had."""
    root = tmp_path / "copy"
    shutil.copytree(conv_run.path.parent, root / "runs")
    shutil.copy(conv_run.path.parent.parent / "conv.toml", root / "conv.toml")
    run_dir = root / "runs" / conv_run.path.name
    checkpoint = run_dir / "bn" / "checkpoint.safetensors"
    damage(checkpoint, "overwrite")
    assert main(["show", str(run_dir)]) == 0
    assert "bn/checkpoint.safetensors" in capsys.readouterr().out
    gn_checkpoint = (run_dir / "gn" / "checkpoint.safetensors").stat().st_mtime_ns
    assert main(["run", str(root / "conv.toml"), "--runs-dir", str(root / "runs"),
                 "--train-rows", str(ROWS), "--no-download", "--resume"]) == 0
    assert (run_dir / "gn" / "checkpoint.safetensors").stat().st_mtime_ns == gn_checkpoint
    repaired = load_run(run_dir)
    assert repaired.complete, repaired.damage
    same_numbers(repaired, load_run(conv_run.path))
