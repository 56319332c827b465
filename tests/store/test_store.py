"""Run folders: atomic writes, Keras CSVLogger format, listing, loading and resuming lookups."""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import numpy as np
import pytest

from bnlab.config.experiment import experiment_from_json
from bnlab.errors import BnlabError
from bnlab.io import atomic_write_bytes, atomic_write_json
from bnlab.store.histories import history_csv, read_history_csv, statistics_csv
from bnlab.store.provenance import data_fingerprint, same_data
from bnlab.store.runs import find_resumable, list_runs, load_run, new_run_dir
from tests.synthetic import tiny_splits


def test_history_csv_has_keras_csvlogger_columns_and_round_trips(tmp_path):
    history = {"loss": [1.5, 0.75], "accuracy": [0.5, 0.625], "val_loss": [1.25, 0.5],
               "val_accuracy": [0.5, 0.75]}
    text = history_csv(history)
    assert text.splitlines()[0] == "epoch,accuracy,loss,val_accuracy,val_loss"
    assert text.splitlines()[1] == "0,0.5,1.5,0.5,1.25"
    (tmp_path / "h.csv").write_text(text)
    back = read_history_csv(tmp_path / "h.csv")
    for key, values in history.items():
        np.testing.assert_array_equal(back[key], values)


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    atomic_write_json(target, {"v": 1})

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_text().strip() == '{\n  "v": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def write_run(runs, name, *, complete: bool, seeds=(1,), data=None):
    """A run folder as bnlab wrote them before config.json held the file form (optimizer
    arguments under "args", variants with both "model" and "layers") and before
    environment.json recorded the data (unless ``data``): still readable."""
    run = new_run_dir(runs, name)
    config = {"name": name, "dataset": "fashion_mnist", "epochs": 2, "batch_size": 32,
              "seed": seeds[0], "seeds": len(seeds),
              "optimizer": {"name": "sgd", "learning_rate": 0.001, "args": {}},
              "variants": [{"name": "v", "model": "baseline", "layers": []}]}
    atomic_write_json(run / "config.json", config)
    atomic_write_json(run / "environment.json", {"seeds": list(seeds),
                                                 **({"data": data} if data else {})})
    for seed in seeds:
        atomic_write_bytes(run / "v" / f"seed-{seed}" / "history.csv", history_csv(
            {"loss": [1.0], "accuracy": [0.5], "val_loss": [1.0], "val_accuracy": [0.5]}
        ).encode())
    if complete:
        atomic_write_json(run / "summary.json", {"v": {
            "seeds": list(seeds), "final": {"val_accuracy": [0.5] * len(seeds)},
            "test_loss": [1.0] * len(seeds), "test_accuracy": [0.5] * len(seeds)}})
    return run, config


def test_listing_loading_and_finding_the_run_to_resume(tmp_path):
    done, config = write_run(tmp_path, "exp", complete=True)
    unfinished, _ = write_run(tmp_path, "exp", complete=False, seeds=(1, 2))
    runs, damaged = list_runs(tmp_path)
    assert [r.path for r in runs] == [done, unfinished] and damaged == []
    record = load_run(unfinished)
    assert not record.complete and record.epochs_per_variant == [1]
    assert record.histories["v"].per_seed["loss"].shape == (2, 1)
    assert record.config.optimizer.learning_rate == 0.001 and record.config.optimizer.args == {}
    config = experiment_from_json(config, source="config.json")
    data = tiny_splits()  # recorded as the data of neither run, both from before it was recorded
    with pytest.raises(BnlabError, match=r"and data \(70 training rows\) was not found"):
        find_resumable(tmp_path, dataclasses.replace(config, seeds=2), data)
    tiny = write_run(tmp_path, "exp", complete=False, seeds=(1, 2),
                     data=data_fingerprint(data))[0]
    assert find_resumable(tmp_path, dataclasses.replace(config, seeds=2), data) == tiny
    with pytest.raises(BnlabError, match="was not found"):  # other data: not this run
        find_resumable(tmp_path, dataclasses.replace(config, seeds=2), data.subset(train=60))
    write_run(tmp_path, "exp", complete=True, data=data_fingerprint(data))
    with pytest.raises(BnlabError, match="already complete"):
        find_resumable(tmp_path, config, data)
    other_labels = dataclasses.replace(data, y_train=data.y_train[::-1])  # same sizes
    assert data_fingerprint(other_labels) != data_fingerprint(data)


def test_an_old_config_with_layers_and_optimizer_arguments_reads_back_as_a_file_would():
    old = {"name": "x", "description": "", "dataset": "fashion_mnist", "epochs": 3,
           "batch_size": 32, "seed": 1, "seeds": 2,
           "optimizer": {"name": "adam", "learning_rate": 0.01, "args": {"b1": 0.8}},
           "variants": [{"name": "v", "model": None, "layers": [
               {"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"}]},
               {"name": "b", "model": "baseline", "layers": []}]}
    config = experiment_from_json(old, source="config.json")
    assert config.optimizer.args == {"b1": 0.8} and config.optimizer.to_dict()["b1"] == 0.8
    assert config.variants[0].model is None and len(config.variants[0].layers) == 2
    assert config.variants[1].model == "baseline" and config.variants[1].layers == ()
    assert experiment_from_json(config.to_dict(), source="config.json") == config


def test_a_run_from_before_the_data_was_recorded_trained_on_the_whole_dataset():
    whole = {"train": 55_000, "val": 5_000, "test": 10_000, "sha256": "x"}
    assert same_data({}, whole, "fashion_mnist")
    assert not same_data({}, {**whole, "train": 6_424}, "fashion_mnist")
    assert not same_data({"data": {**whole, "sha256": "y"}}, whole, "fashion_mnist")


def test_loading_a_folder_that_is_not_a_run_says_so(tmp_path):
    with pytest.raises(BnlabError, match="is not a bnlab run folder"):
        load_run(tmp_path)


def test_statistics_csv_gives_per_epoch_mean_and_t_interval_over_seeds(tmp_path):
    from scipy import stats

    rng = np.random.default_rng(0)
    history = {m: rng.random((4, 3)) for m in ("loss", "accuracy", "val_loss", "val_accuracy")}
    (tmp_path / "s.csv").write_text(statistics_csv(history))

    with (tmp_path / "s.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and rows[0]["seeds"] == "4"
    for epoch, row in enumerate(rows):
        values = history["val_accuracy"][:, epoch]
        low, high = stats.t.interval(0.95, 3, loc=values.mean(), scale=stats.sem(values))
        assert float(row["val_accuracy_mean"]) == pytest.approx(values.mean(), rel=1e-12)
        assert float(row["val_accuracy_ci95"]) == pytest.approx((high - low) / 2, rel=1e-9)


def test_a_damaged_run_is_reported_and_never_hides_the_others(tmp_path):
    good, _ = write_run(tmp_path, "exp", complete=True)
    bad, _ = write_run(tmp_path, "exp", complete=False)
    (bad / "v" / "seed-1" / "history.csv").write_text("epoch,accuracy\n0,xx\n")
    runs, damaged = list_runs(tmp_path)
    assert [r.path for r in runs] == [good]
    assert len(damaged) == 1 and "is damaged" in damaged[0] and "\n" not in damaged[0]
    (bad / "config.json").write_text("[]")
    with pytest.raises(BnlabError, match="is damaged"):
        load_run(bad)


@pytest.mark.parametrize(("file", "edit", "named"), [
    ("config.json", lambda d: d.pop("optimizer"),
     "config.json: optimizer: missing; a stored config holds every key"),
    ("config.json", lambda d: d.update(epochs="2"), "config.json: epochs: must be int, got '2'"),
    ("config.json", lambda d: d["variants"][0].pop("name"),
     "config.json: variants[0].name: missing"),
    ("config.json", lambda d: d["optimizer"].update(learning_rate=float("inf")),
     "config.json: optimizer.learning_rate: must be a finite positive number, got inf"),
    ("summary.json", lambda d: d["v"].pop("test_accuracy"),
     "ValueError: summary.json['v'] lacks 'test_accuracy'"),
    ("summary.json", lambda d: d.pop("v"), "ValueError: summary.json['v'] is not a JSON object"),
    ("summary.json", lambda d: d["v"].update(test_loss=[1.0, 2.0]),
     "ValueError: summary.json['v'] test_loss holds (2,) values for 1 seeds"),
])
def test_a_hand_edited_run_is_one_line_naming_the_damaged_field(tmp_path, file, edit, named):
    run, _ = write_run(tmp_path, "exp", complete=True)
    data = json.loads((run / file).read_text())
    edit(data)
    (run / file).write_text(json.dumps(data))
    with pytest.raises(BnlabError) as err:
        load_run(run)
    assert str(err.value) == f"{run} is damaged ({named}); delete it or rerun the experiment"


def test_a_run_config_is_read_back_through_the_experiment_checks(tmp_path):
    # A config.json written today is the file form, read back by the experiment checks (the
    # synthetic splits have 3 classes; a 10-unit output takes their labels as well).
    from bnlab.config.experiment import load_experiment
    from bnlab.experiments.runner import run_experiment
    from tests.synthetic import tiny_splits

    text = """name = "rt"
epochs = 1
seeds = 2
[optimizer]
name = "adam"
learning_rate = 0.01
b1 = 0.8
[[variants]]
name = "plain"
layers = [{ type = "flatten" }, { type = "dense", units = 10, activation = "softmax" }]
"""
    (tmp_path / "rt.toml").write_text(text)
    config = load_experiment(tmp_path / "rt.toml")
    run_dir = tmp_path / "run"
    run_experiment(config, tiny_splits(), run_dir)
    stored = json.loads((run_dir / "config.json").read_text())
    assert stored["optimizer"] == {"name": "adam", "learning_rate": 0.01, "b1": 0.8}
    assert stored["variants"] == [{"name": "plain", "layers": [
        {"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"}]}]
    assert load_run(run_dir).config == config


def test_epochs_per_variant_counts_a_variant_that_has_not_started_as_zero(tmp_path):
    run, config = write_run(tmp_path, "exp", complete=False)
    config["variants"].append({"name": "later", "model": "baseline", "layers": []})
    atomic_write_json(run / "config.json", config)
    assert load_run(run).epochs_per_variant == [1, 0]


def test_a_config_json_of_random_bytes_is_one_line_and_hides_no_other_run(tmp_path):
    good, _ = write_run(tmp_path, "exp", complete=True)
    bad, _ = write_run(tmp_path, "exp", complete=True)
    (bad / "config.json").write_bytes(bytes(range(256)))
    runs, damaged = list_runs(tmp_path)
    assert [r.path for r in runs] == [good]
    assert len(damaged) == 1 and "is not UTF-8 text" in damaged[0]
