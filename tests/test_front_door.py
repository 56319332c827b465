"""One front door: each ``bnlab`` command and the ``bnlab.api`` function it calls give the same
result. The command is run in-process on a real run; the function on the same inputs."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from rich.console import Console

import bnlab
from bnlab.cli import main
from bnlab.cli.session import cli_option

pytestmark = pytest.mark.realdata

EXPERIMENT = """
name = "door"
epochs = 1
seeds = 2
batch_size = 500
[optimizer]
name = "sgd"
learning_rate = 0.1
[[variants]]
name = "bn"
layers = [{ type = "flatten" }, { type = "batch_norm" },
          { type = "dense", units = 16, activation = "relu" },
          { type = "dense", units = 10, activation = "softmax" }]
[[variants]]
name = "plain"
layers = [{ type = "flatten" }, { type = "dense", units = 10, activation = "softmax" }]
"""


def command(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.out


def rendered(value) -> str:
    out = io.StringIO()
    Console(file=out, width=120, highlight=False, soft_wrap=True).print(value)
    return out.getvalue()


@pytest.fixture(scope="module")
def runs(fashion_mnist, tmp_path_factory):
    """The experiment trained by ``bnlab run`` and by ``bnlab.run``, each in its folder."""
    del fashion_mnist  # on disk: both find it
    root = tmp_path_factory.mktemp("door")
    (root / "door.toml").write_text(EXPERIMENT)
    assert main(["run", str(root / "door.toml"), "--runs-dir", str(root / "cli"),
                 "--no-download", "--train-rows", "5000"]) == 0
    by_api = bnlab.run(root / "door.toml", runs_dir=root / "api", download=False, verbose=0,
                       train_rows=5000)
    (by_cli,) = bnlab.list_runs(root / "cli")[0]
    return root, by_cli, by_api


def test_run_trains_the_same_numbers_both_ways(runs):
    _, by_cli, by_api = runs
    assert by_cli.complete and by_api.complete and by_cli.config == by_api.config
    for name, history in by_cli.histories.items():
        for metric, values in history.per_seed.items():
            np.testing.assert_array_equal(by_api.histories[name].per_seed[metric], values)
        np.testing.assert_array_equal(by_api.summary[name].test_accuracy,
                                      by_cli.summary[name].test_accuracy)


def test_runs_and_show_print_what_the_functions_return(runs, capsys):
    root, by_cli, _ = runs
    listed = command(capsys, "runs", "--runs-dir", str(root / "cli"))
    (run,) = bnlab.list_runs(root / "cli")[0]
    assert run.path.name in listed and run.status in listed
    shown = command(capsys, "show", str(by_cli.path))
    assert shown == rendered(bnlab.show(by_cli).render(cli_option))
    assert "Verdicts" in shown and by_cli.comparisons()[0].verdict in shown.replace("\n", " ")


def test_report_writes_the_same_page_both_ways(runs, capsys, tmp_path):
    _, by_cli, _ = runs
    command(capsys, "report", str(by_cli.path), "--out", str(tmp_path / "cli.html"))
    bnlab.write_report(by_cli, tmp_path / "api.html")

    def page(name):  # the same but for the minute it was generated
        return re.sub(r"Generated [0-9: -]+", "", (tmp_path / name).read_text("utf-8"))

    assert page("cli.html") == page("api.html")


def test_export_and_predict_give_the_same_model_both_ways(runs, capsys, tmp_path,
                                                          fashion_mnist):
    from PIL import Image

    _, by_cli, _ = runs
    out = command(capsys, "export", str(by_cli.path), "--fold", "--out",
                  str(tmp_path / "cli.onnx"), "--no-download")
    exported = bnlab.export_model(by_cli, tmp_path / "api.onnx", fold=True, download=False)
    assert f"max |Δ probability| {exported.verification.max_probability_error:.1e}" in out
    assert (tmp_path / "cli.onnx").read_bytes() == (tmp_path / "api.onnx").read_bytes()
    image = tmp_path / "shoe.png"
    Image.fromarray(fashion_mnist.x_test[0]).save(image)
    said = command(capsys, "predict", str(tmp_path / "cli.onnx"), str(image), "--test", "8",
                   "--out", str(tmp_path / "cli.png"), "--no-download")
    found = bnlab.predict(tmp_path / "api.onnx", [image], test=8, out=tmp_path / "api.png",
                          download=False)
    top = " · ".join(f"{name} {p:.3f}" for name, p in found.predictions[0].top)
    assert f"{image}: {top}" in said
    assert f"{found.right} of {found.tested} test images right" in said
    # A run is a model source as its folder is (the API's every RunSource).
    by_run = bnlab.predict(by_cli, [image], download=False)
    by_folder = bnlab.predict(by_cli.path, [image], download=False)
    assert by_run.predictions == by_folder.predictions


def test_recalibrate_gives_the_same_statistics_both_ways(runs, capsys):
    _, _, by_api = runs
    out = command(capsys, "recalibrate", str(by_api.path), "--batches", "4", "--no-download")
    (first,) = bnlab.recalibrate(by_api, batches=4, download=False)  # rewrites the same file
    for i, seed in enumerate(first.seeds):
        after = first.after["val_accuracy"][i]
        assert re.search(rf"bn\s+│\s+{seed}\s+│\s+[0-9.]+\s+│\s+{after:.4f}", out), out


SWEEP = EXPERIMENT.replace('name = "door"', 'name = "door-sweep"') + """
[sweep]
"optimizer.learning_rate" = [0.05, 0.2]
"""


def test_sweep_trains_the_same_points_both_ways(fashion_mnist, tmp_path, capsys):
    del fashion_mnist
    (tmp_path / "sweep.toml").write_text(SWEEP)
    out = command(capsys, "sweep", str(tmp_path / "sweep.toml"), "--runs-dir",
                  str(tmp_path / "cli"), "--no-download", "--train-rows", "2000")
    by_api = bnlab.sweep(tmp_path / "sweep.toml", runs_dir=tmp_path / "api", download=False,
                         verbose=0, train_rows=2000)
    (by_cli,) = bnlab.list_runs(tmp_path / "cli")[0]
    assert by_cli.config == by_api.config and len(by_api.config.points) == 4
    for name, history in by_cli.histories.items():
        np.testing.assert_array_equal(by_api.histories[name].per_seed["val_accuracy"],
                                      history.per_seed["val_accuracy"])
    assert "Best per variant" in out and "bn@learning_rate=0.2" in out


def test_probe_retrains_the_same_trajectory_both_ways(runs, capsys):
    root, by_cli, _ = runs
    # Without --train-rows the retrain takes the rows the run trained on (its 5,000), as the
    # API call that names them does.
    # One variant of the two (--variant): trained as in the whole run, so it reproduces.
    out = command(capsys, "probe", str(by_cli.path), "--measures-every", "5", "--runs-dir",
                  str(root / "probe-cli"), "--no-download", "--variant", "bn")
    probed = bnlab.probe(by_cli, measures_every=5, runs_dir=root / "probe-api", variant="bn",
                         download=False, verbose=0, train_rows=5000)
    assert [v.name for v in probed.run.config.variants] == ["bn"]
    with pytest.raises(bnlab.ConfigError, match=r"'nope' is not a variant of door; probe one "
                                                r"or more of bn, plain variant=NAME"):
        bnlab.probe(by_cli, variant=["bn", "nope"], runs_dir=root / "probe-none",
                    data_dir=root / "no-data", download=False)
    assert not (root / "probe-none").exists()  # refused before anything is written
    assert probed.reproduction is not None and probed.reproduction.sentence in out
    assert f"the retrained run reproduces {by_cli.path.name}" in out.replace("\n", " ")
    (by_command,) = bnlab.list_runs(root / "probe-cli")[0]
    assert "measures/steps" not in by_cli.probes["bn"]  # the run had none; the retrain has
    assert by_command.config.probe.measures_every == 5 and by_command.complete
    assert by_command.probes["bn"]["measures/steps"].tolist() == [0, 5]  # 10 steps of 500
    assert by_command.probes["bn"]["measures/ics/dense_1"].shape == (2, 2)  # seeds × records
    for name, records in probed.run.probes.items():
        np.testing.assert_array_equal(by_command.probes[name]["measures/grad_norm"],
                                      records["measures/grad_norm"])


def test_summary_and_data_print_what_the_functions_return(fashion_mnist, capsys):
    del fashion_mnist
    assert command(capsys, "summary", "bn_after") == rendered(bnlab.summary("bn_after"))
    listed = command(capsys, "summary", "seed")
    for name, found in bnlab.summaries("seed").items():
        assert rendered(found) in listed, name
    shown = command(capsys, "data", "--no-download")
    for role, found in bnlab.check_data(download=False).items():
        assert role in shown and found.sha256[:12] in shown
