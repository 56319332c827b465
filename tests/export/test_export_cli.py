"""``bnlab export``: a stored run's member written as ONNX only after onnxruntime agrees with
bnlab on the real test images; what the command cannot do is one line, exit 2."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime
import pytest

from bnlab.cli import main
from bnlab.store.reader import list_runs

SMALL = """
name = "small"
epochs = 1
seeds = 2
batch_size = 500
[optimizer]
name = "sgd"
learning_rate = 0.1
[[variants]]
name = "plain"
model = "baseline"
[[variants]]
name = "bn"
layers = [{ type = "flatten" }, { type = "batch_norm" },
          { type = "dense", units = 32, use_bias = false }, { type = "batch_norm" },
          { type = "activation", name = "relu" },
          { type = "dense", units = 10, activation = "softmax" }]
"""


def assert_same_top_class_but_near_ties(printed: str) -> None:
    """The printed check: the same top class on every test image but near ties (whose top
    two logits lie within rounding of each other, so another CPU may order them otherwise)."""
    found = re.search(r"same top class on ([\d,]+) of 10,000(?: \(([\d,]+) rows? (?:is a near "
                      r"tie|are near ties) within rounding\))?\n", printed)
    assert found, printed
    same, ties = (int((group or "0").replace(",", "")) for group in found.groups())
    assert same >= 10_000 - ties, printed


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, fashion_mnist):
    del fashion_mnist  # on disk: the command finds it
    root = tmp_path_factory.mktemp("export")
    (root / "small.toml").write_text(SMALL)
    assert main(["run", str(root / "small.toml"), "--runs-dir", str(root / "runs"),
                 "--no-download"]) == 0
    (run,) = list_runs(root / "runs")[0]
    return run


@pytest.mark.realdata
def test_export_folds_checks_and_writes_a_model_that_onnxruntime_runs(small_run, capsys,
                                                                      fashion_mnist):
    capsys.readouterr()
    out = small_run.path / "bn.onnx"
    assert main(["export", str(small_run.path), "--fold", "--seed", "43", "--out", str(out),
                 "--no-download"]) == 0
    printed = capsys.readouterr().out
    assert "bn, seed 43, after 1 epochs" in printed
    assert "folded batch_normalization into dense (the Dense after it)" in printed
    assert "folded batch_normalization_1 into dense (the Dense before it)" in printed
    assert "folded: 25,450 parameters" in printed  # 784·32 + 32 + 32·10 + 10
    assert_same_top_class_but_near_ties(printed)
    proto = onnx.load(out)
    assert [n.op_type for n in proto.graph.node].count("BatchNormalization") == 0
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {
        "images": fashion_mnist.x_test[:500].astype(np.float32) / 255.0})
    # The exported member is a trained one: far better than chance on the test images.
    assert (probabilities.argmax(1) == fashion_mnist.y_test[:500]).mean() > 0.6


@pytest.mark.realdata
@pytest.mark.parametrize("argv, message", [
    (["--variant", "nope"], "has no variant 'nope'; it has plain, bn"),
    (["--seed", "7"], "has no seed 7; it has 42, 43"),
    (["--recalibrated"], "recalibrated.safetensors is missing"),
])
def test_what_cannot_be_exported_is_one_line(small_run, capsys, argv, message):
    capsys.readouterr()
    assert main(["export", str(small_run.path), *argv, "--no-download"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.realdata
def test_predict_by_the_run_and_by_its_onnx_file_agree_and_name_the_classes(
        small_run, capsys, tmp_path, fashion_mnist):
    from PIL import Image

    onnx_file = tmp_path / "bn.onnx"
    assert main(["export", str(small_run.path), "--out", str(onnx_file), "--no-download"]) == 0
    images = []
    for i in range(3):  # test images, one of them 5× larger as a JPEG
        path = tmp_path / (f"test{i}.png" if i else "test0.jpg")
        picture = Image.fromarray(fashion_mnist.x_test[i])
        (picture.resize((140, 140)) if i == 0 else picture).save(path)
        images.append(str(path))
    capsys.readouterr()
    assert main(["predict", str(small_run.path), *images, "--no-download"]) == 0
    said, *by_run = capsys.readouterr().out.splitlines()
    assert said == f"by {small_run.path.name} bn seed 42"  # which model: the defaults
    assert main(["predict", str(onnx_file), *images, "--no-download"]) == 0
    said, *by_onnx = capsys.readouterr().out.splitlines()
    assert said == "by bn.onnx"
    names = fashion_mnist.class_names
    assert len(by_run) == len(by_onnx) == 3
    for run_line, onnx_line, image in zip(by_run, by_onnx, images, strict=True):
        assert run_line.startswith(f"{image}: ") and onnx_line.startswith(f"{image}: ")
        assert run_line.split(": ")[1].split(" ")[0] == onnx_line.split(": ")[1].split(" ")[0]
        assert run_line.count(" · ") == 2 and any(name in run_line for name in names)
    grid = tmp_path / "grid.png"
    assert main(["predict", str(onnx_file), "--test", "16", "--out", str(grid),
                 "--no-download"]) == 0
    assert "of 16 test images right; wrote" in capsys.readouterr().out
    with Image.open(grid) as drawn:
        assert drawn.size[0] > 500
    # --out names a file that exists: written over with --force only; a run's own, never
    before = grid.read_bytes()
    for argv, code in ((["--out", str(grid)], 2), (["--out", str(grid), "--force"], 0),
                       (["--out", str(small_run.path / "curves.png"), "--force"], 2)):
        assert main(["predict", str(onnx_file), "--test", "4", *argv, "--no-download"]) == code
    err = capsys.readouterr().err
    assert f"{grid} exists; choose another --out, or overwrite it --force" in err
    assert "curves.png: it is a figure of" in err and "never writes over a run's own" in err
    assert grid.read_bytes() != before  # the --force one: a grid of 4
    assert main(["export", str(small_run.path), "--out", str(onnx_file), "--no-download"]) == 2
    assert f"{onnx_file} exists" in capsys.readouterr().err


@pytest.mark.realdata
def test_predict_names_each_unusable_file_on_one_line_and_exits_nonzero(small_run, capsys,
                                                                        tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    (tmp_path / "empty.jpg").write_bytes(b"")
    capsys.readouterr()
    code = main(["predict", str(small_run.path), str(tmp_path / "notes.png"),
                 str(tmp_path / "empty.jpg"), "--no-download"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "notes.png: not an image Pillow can read" in err
    assert "empty.jpg: the file is empty" in err
    for argv, message in [
            (["--test", "0"], "--test 0: the grid draws 1 to 400 test images"),
            (["--test", "20000"], "--test 20000: the grid draws 1 to 400 test images"),
            (["--test", "4", "--out", str(tmp_path / "grid.txt")],
             "grid.txt: the grid is written as .png, .svg, .pdf; name such a file"),
            (["--test", "4", "--out", str(tmp_path)], "the grid is written as")]:
        assert main(["predict", str(small_run.path), *argv, "--no-download"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    (tmp_path / "model.safetensors").write_bytes(b"{}")
    assert main(["predict", str(tmp_path / "model.safetensors"), "--test", "4"]) == 2
    assert ("model.safetensors: give a run folder, a .onnx or a .keras file (a PyTorch "
            "export runs in PyTorch") in capsys.readouterr().err
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07garbage")
    assert main(["predict", str(tmp_path / "broken.onnx"), "--seed", "3", "--test", "4"]) == 2
    assert "--variant and --seed choose a run's model" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "broken.onnx"), str(tmp_path / "notes.png")]) == 2
    assert "broken.onnx: not a readable ONNX model" in capsys.readouterr().err


@pytest.mark.realdata
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_export_to_keras_and_pytorch_writes_files_those_frameworks_load(small_run, capsys,
                                                                        tmp_path, keras,
                                                                        torch):
    from safetensors.torch import load_file

    capsys.readouterr()
    assert main(["export", str(small_run.path), "--format", "keras", "--out",
                 str(tmp_path / "m.keras"), "--no-download"]) == 0
    assert "no convention needed converting" in capsys.readouterr().out
    assert main(["export", str(small_run.path), "--variant", "plain", "--fold", "--format",
                 "keras", "--out", str(tmp_path / "p.keras"), "--no-download"]) == 0
    assert "no BatchNorm layer: nothing to fold" in capsys.readouterr().out
    assert len(keras.models.load_model(tmp_path / "m.keras").layers) == 6
    assert main(["export", str(small_run.path), "--format", "torch", "--out",
                 str(tmp_path / "m.safetensors"), "--no-download"]) == 0
    printed = capsys.readouterr().out
    assert "momentum 0.99 on the old value (Keras) is PyTorch's 0.01" in printed
    assert (tmp_path / "m.py").exists()
    assert "0.running_mean" not in load_file(tmp_path / "m.safetensors")  # 0 is Flatten
    assert load_file(tmp_path / "m.safetensors")["1.running_mean"].shape == (784,)


@pytest.mark.realdata
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_predict_with_a_keras_file_gives_the_runs_own_predictions(small_run, capsys,
                                                                  tmp_path):
    capsys.readouterr()
    assert main(["export", str(small_run.path), "--format", "keras", "--out",
                 str(tmp_path / "m.keras"), "--no-download"]) == 0
    for number, source in enumerate((str(tmp_path / "m.keras"), str(small_run.path))):
        assert main(["predict", source, "--test", "8", "--out", str(tmp_path / f"g{number}.png"),
                     "--no-download"]) == 0
    lines = [line.split("; wrote")[0] for line in capsys.readouterr().out.splitlines()
             if "test images right" in line]
    assert len(lines) == 2 and lines[0] == lines[1]


@pytest.mark.realdata
def test_a_run_being_trained_is_not_exported_or_predicted_from(small_run, capsys, tmp_path):
    from bnlab.store.lock import RunLock

    capsys.readouterr()
    with RunLock(small_run.path):  # as a training process holds it
        assert main(["export", str(small_run.path), "--no-download"]) == 2
        assert main(["predict", str(small_run.path), "--test", "4", "--no-download"]) == 2
    err = capsys.readouterr().err
    assert err.count("is being trained or recalibrated now") == 2 and "Traceback" not in err
    assert not (small_run.path / "bn-seed42.onnx").exists()  # the default name: not written


def test_predict_reads_a_foreign_onnx_file_and_says_how(tmp_path, capsys):
    from PIL import Image

    from bnlab.data.datasets import DATASETS
    from tests.export.test_onnx import foreign_file

    path, x, want = foreign_file(tmp_path, input_shape=(784,))
    image = tmp_path / "item.png"
    Image.fromarray((x[0] * 255).round().astype(np.uint8)).save(image)
    capsys.readouterr()
    assert main(["predict", str(path), str(image)]) == 0
    out = capsys.readouterr().out
    assert ("foreign.onnx: not written by bnlab; read as input x ['n', 784], output out as "
            "logits") in out
    names = DATASETS["fashion_mnist"].class_names  # the file has none: the dataset's
    assert f"{image}: {names[int(np.argmax(want[0]))]} {want[0].max():.3f} · " in out


@pytest.mark.realdata
def test_the_python_api_exports_as_the_command_does(small_run, tmp_path, fashion_mnist):
    import bnlab

    exported = bnlab.export_model(small_run, tmp_path / "api.onnx", seed=43, fold=True,
                                  data=fashion_mnist)
    assert isinstance(exported, bnlab.Exported) and exported.paths == (tmp_path / "api.onnx",)
    assert (exported.member.variant, exported.member.seed) == ("bn", 43)
    assert exported.exported_parameters == 25_450 < exported.parameters
    check = exported.verification
    assert check.rows == 10_000 and check.same_top_class >= check.rows - check.near_ties
    assert exported.verification.max_probability_error <= 1e-5
    ported = bnlab.export_model(small_run, format="torch", variant="plain")
    assert ported.paths == (small_run.path / "plain-seed42.safetensors",
                            small_run.path / "plain-seed42.py")
    assert all(path.exists() for path in ported.paths)
    with pytest.raises(bnlab.ConfigError, match=r"m\.keras: onnx exports are \.onnx files; "
                                                "name it so"):
        bnlab.export_model(small_run, tmp_path / "m.keras", data=fashion_mnist)
    for out in (tmp_path / "m.tflite", None):  # with or without a file named
        with pytest.raises(bnlab.ConfigError, match="export format 'tflite': choose one of "
                                                    "onnx, keras, torch"):
            bnlab.export_model(small_run, out, format="tflite")
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.realdata
def test_an_export_onnxruntime_disagrees_with_writes_nothing_and_says_what_it_measured(
        small_run, capsys, monkeypatch, tmp_path):
    from bnlab.export import exporter

    monkeypatch.setattr(exporter, "TOLERANCE", 0.0)  # float rounding alone now fails the gate
    out = tmp_path / "gated.onnx"
    capsys.readouterr()
    assert main(["export", str(small_run.path), "--fold", "--out", str(out),
                 "--no-download"]) == 1
    printed = capsys.readouterr()
    assert "folded: 25,450 parameters" in printed.out
    assert_same_top_class_but_near_ties(printed.out)
    assert "error: onnxruntime differs from bnlab by " in printed.err
    assert "> 0 in probability; nothing written" in printed.err
    assert not out.exists()
