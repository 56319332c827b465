"""The bnlab command: summaries with Keras's counts, and user errors as one line, exit 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bnlab.cli import main


@pytest.mark.parametrize(("model", "total", "trainable", "non_trainable"), [
    ("baseline", "266,610", "266,610", "0"),
    ("bn_after", "271,346", "268,978", "2,368"),
    ("bn_before", "270,946", "268,578", "2,368"),
])
def test_summary_prints_keras_totals_and_pytorch_view(capsys, model, total, trainable,
                                                      non_trainable):
    assert main(["summary", model]) == 0
    out = capsys.readouterr().out
    assert f"Total params: {total}" in out
    assert f"Trainable params: {trainable}" in out
    assert f"Non-trainable params: {non_trainable}" in out
    assert f"PyTorch view: {trainable} parameters" in out
    if model != "baseline":
        assert "moving_variance" in out and "gamma" in out


@pytest.mark.parametrize("argv", [
    ["summary", "resnet50"],
    ["run", "no-such-experiment"],
    ["seed", "--seeds", "0"],
    ["data", "--data-dir", "EMPTY", "--no-download"],
])
def test_user_errors_exit_2_with_one_line_and_no_traceback(capsys, tmp_path, argv):
    argv = [str(tmp_path) if a == "EMPTY" else a for a in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in captured.err


def test_errors_name_the_options_as_this_command_spells_them(capsys, tmp_path):
    # The library says "data_dir=DIR" and "leave out data_dir"; the command names its flags.
    assert main(["data", "--data-dir", str(tmp_path / "none"), "--no-download"]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert err.endswith("or leave out --data-dir (and unset BNLAB_DATA_DIR)")
    assert "data_dir" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "--data-dir", str(empty), "--no-download"]) == 2
    out = capsys.readouterr().out.replace("\n", "")  # bnlab data lists every file's fix
    assert out.count("or leave out --data-dir (and unset BNLAB_DATA_DIR)") == 4
    assert "data_dir" not in out


def test_every_option_a_message_may_name_has_a_flag():
    from bnlab.cli import FLAGS
    from bnlab.errors import OPTIONS

    assert set(FLAGS) == OPTIONS


def test_error_text_with_brackets_is_printed_verbatim_not_as_markup(capsys, tmp_path):
    # Rich markup must not eat "[[variants]]" or crash on a path holding "[/]".
    no_variants = tmp_path / "novariants.toml"
    no_variants.write_text('name = "x"\n')
    assert main(["run", str(no_variants)]) == 2
    assert "needs a name and [[variants]]" in capsys.readouterr().err
    odd = tmp_path / "set[/]"
    assert main(["data", "--data-dir", str(odd), "--no-download"]) == 2
    err = capsys.readouterr().err
    assert f"the data directory {odd} does not exist" in err.replace("\n", "")


def test_data_shows_where_each_verified_file_was_found(capsys, fashion_mnist):
    # Same search as the fixture (default cache, then Debian's folder), so the same files.
    assert main(["data", "--no-download"]) == 0
    out = capsys.readouterr().out
    for source in fashion_mnist.sources:
        assert f" {source.origin} " in out and f" {source.path} " in out  # whole, on one line
    assert "each verified" in out and "c59f468a2f67…" in out  # docs/reference.md#fashion-mnist
    assert "train 55,000 · validation 5,000" in out


def test_bad_experiment_file_names_the_line_in_a_real_subprocess(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nepochs = 3\nepochs = 4\n')
    result = subprocess.run([sys.executable, "-m", "bnlab.cli", "run", str(bad), "--runs-dir",
                             str(tmp_path / "runs")], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "bad.toml: invalid TOML" in result.stderr and "line 3" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing is written for an invalid file


def test_data_reports_every_unusable_file_not_only_the_first(capsys, tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"")
    assert main(["data", "--data-dir", str(tmp_path), "--no-download"]) == 2
    captured = capsys.readouterr()
    problems = {line.split(":")[0]: line for line in captured.out.splitlines()
                if line.startswith(("train_", "test_"))}  # one whole line per unusable file
    assert "train-images-idx3-ubyte.gz" in problems["train_images"]
    assert "is empty (0 bytes)" in problems["test_labels"]
    for role in ("train_labels", "test_images"):
        assert "is missing from the data directory" in problems[role]
    errors = [line for line in captured.err.splitlines() if line.strip()]
    assert errors == ["error: 4 of 4 files are unusable (train_images, train_labels, "
                      "test_images, test_labels); each is listed above with its fix"]


def test_version_is_the_installed_distribution_version(capsys):
    import importlib.metadata

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"bnlab {importlib.metadata.version('bnlab')}"


def test_runs_of_a_runs_dir_that_does_not_exist_is_an_error(capsys, tmp_path):
    assert main(["runs", "--runs-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere does not exist" in err
    assert "--runs-dir DIR" in err and len(err.strip().splitlines()) == 1


def test_summary_of_an_experiment_file_summarises_each_variant(capsys):
    assert main(["summary", "seed"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("seed: 3 variant(s)")
    for name, total in (("baseline", "266,610"), ("bn_after", "271,346"),
                        ("bn_before", "270,946")):
        assert f"\n{name} (preset {name})\n" in out
        assert f"Total params: {total}" in out


def test_printed_commands_are_spelled_as_bnlab_was_invoked(monkeypatch, tmp_path):
    from bnlab.cli import program

    installed = tmp_path / "venv" / "bin" / "bnlab"
    installed.parent.mkdir(parents=True)
    installed.write_text("#!/bin/sh\n")
    installed.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [".venv/bin/bnlab"])
    monkeypatch.chdir(tmp_path / "venv" / "..")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the venv is not activated
    (tmp_path / ".venv").symlink_to(tmp_path / "venv")
    assert program() == [".venv/bin/bnlab"]  # pastes from where it ran
    monkeypatch.setenv("PATH", f"{installed.parent}:/usr/bin:/bin")  # activated
    assert program() == ["bnlab"]
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "x" / "__main__.py")])  # python -m bnlab
    assert program() == [sys.executable, "-m", "bnlab"]


def test_the_printed_tensorboard_command_is_the_one_installed_beside_bnlab(monkeypatch,
                                                                            tmp_path):
    from bnlab.cli.session import companion

    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "tensorboard"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the venv is not activated
    assert companion("tensorboard") == ".venv/bin/tensorboard"
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")  # activated
    assert companion("tensorboard") == "tensorboard"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert companion("tensorboard") == str(bin_dir / "tensorboard")  # outside: the whole path
    assert companion("no-such-tool") == "no-such-tool"


def test_show_and_report_name_every_resolved_layer_option_and_one_seed_the_same_way(
        capsys, tmp_path):
    from bnlab.config.experiment import ExperimentConfig, VariantConfig
    from bnlab.experiments.runner import run_experiment
    from tests.synthetic import tiny_splits

    keras = ({"type": "flatten"}, {"type": "batch_norm"},
             {"type": "dense", "units": 10, "activation": "softmax"})
    torch = ({"type": "flatten"}, {"type": "batch_norm", "momentum_on": "new",
                                   "momentum": 0.01},
             {"type": "dense", "units": 10, "activation": "softmax"})
    config = ExperimentConfig(name="conventions", epochs=1, seeds=1,
                              variants=(VariantConfig("keras", layers=keras),
                                        VariantConfig("torch", layers=torch)))
    run_experiment(config, tiny_splits(), tmp_path / "run")
    assert main(["show", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "BatchNorm(momentum=0.99, epsilon=0.001, momentum_on=old" in out
    assert "BatchNorm(momentum=0.01, epsilon=0.001, momentum_on=new" in out
    assert "No verdict (one seed)" in out
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "momentum_on=old" in page and "momentum_on=new" in page
    assert "No verdict (one seed)" in page


SLOW_BN = """
name = "slow-bn"
epochs = 1
seeds = 2
batch_size = 500
[optimizer]
name = "sgd"
learning_rate = 0.05
[[variants]]
name = "bn"
layers = [{ type = "flatten" }, { type = "batch_norm", momentum = 0.999 },
          { type = "dense", units = 32, activation = "relu" },
          { type = "batch_norm", momentum = 0.999 },
          { type = "dense", units = 10, activation = "softmax" }]
"""


@pytest.mark.realdata
def test_recalibrate_writes_a_checkpoint_beside_the_run_and_prints_before_and_after(
        capsys, tmp_path, fashion_mnist):
    from bnlab.store.reader import list_runs
    from bnlab.store.recalibrations import read_recalibrations
    from bnlab.train.checkpoint import read_checkpoint

    del fashion_mnist  # on disk: the command finds it
    (tmp_path / "slow.toml").write_text(SLOW_BN)
    runs = tmp_path / "runs"
    assert main(["run", str(tmp_path / "slow.toml"), "--runs-dir", str(runs),
                 "--no-download"]) == 0
    (run,) = list_runs(runs)[0]
    assert not (run.path / "bn" / "recalibrated.safetensors").exists()
    capsys.readouterr()
    assert main(["recalibrate", run.path.name, "--runs-dir", str(runs), "--batches", "0",
                 "--no-download"]) == 2
    assert "recalibration batches must be a whole number in 1..110" in capsys.readouterr().err
    assert main(["recalibrate", run.path.name, "--runs-dir", str(runs), "--batches", "40",
                 "--no-download"]) == 0
    out = capsys.readouterr().out
    assert "recomputed over 40 training batches" in out
    (found,), problems = read_recalibrations(run.path, run.config)
    assert problems == [] and found.seeds == (42, 43)
    # 110 steps at momentum 0.999 leave the moving statistics near their start: inference
    # was far from the batch statistics; recomputed, validation accuracy rises on both seeds.
    before = run.histories["bn"].final("val_accuracy")
    np.testing.assert_array_equal(found.before["val_accuracy"], before)
    assert (found.after["val_accuracy"] > before).all()
    for seed, old, new in zip(found.seeds, before, found.after["val_accuracy"], strict=True):
        assert f"{old:.4f}" in out and f"{new:.4f}" in out and str(seed) in out
    _, metadata = read_checkpoint(run.path / "bn" / "recalibrated")  # digest checked
    assert metadata["batches"] == 40 and metadata["epoch"] == 1
    assert main(["show", run.path.name, "--runs-dir", str(runs)]) == 0
    shown = capsys.readouterr().out
    assert "recomputed over 40 training batches" in shown
    assert "Training vs inference" in shown and "bn in inference mode" in shown
    # The run itself is as it was: complete, undamaged, its record unchanged.
    (again,) = list_runs(runs)[0]
    assert again.complete and not again.damage
