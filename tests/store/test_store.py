"""Run folders: atomic writes, Keras CSVLogger format, listing, loading and resuming lookups."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from bnlab.config.files import experiment_from_json
from bnlab.errors import BnlabError
from bnlab.io import atomic_write_bytes, atomic_write_json
from bnlab.store.derived import history_csv, read_history_csv, statistics_csv
from bnlab.store.provenance import data_fingerprint, same_data
from bnlab.store.reader import find_resumable, list_runs, load_run
from tests.store.conftest import CONFIG, write_interrupted
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


def test_listing_loading_and_finding_the_run_to_resume(finished_run, tmp_path):
    runs_dir = finished_run.parent
    unfinished = write_interrupted(runs_dir / "exp-20261202-000001")
    runs, unreadable = list_runs(runs_dir)
    assert [r.path for r in runs] == [finished_run, unfinished] and unreadable == []
    assert runs[0].complete and runs[0].status == "complete" and not runs[0].damage
    record = runs[1]
    assert record.status == "unfinished" and not record.damage
    assert record.epochs_per_variant == [1, 0]
    assert record.variant_status("bn") == "unfinished"
    assert record.variant_status("plain") == "not started"
    assert record.histories["bn"].per_seed["loss"].shape == (2, 1)
    data = tiny_splits()
    assert find_resumable(runs_dir, CONFIG, data) == unfinished
    with pytest.raises(BnlabError, match=r"and data \(60 training rows\) was not found"):
        find_resumable(runs_dir, CONFIG, data.subset(train=60))  # other data: not this run
    with pytest.raises(BnlabError, match="was not found"):
        find_resumable(runs_dir, dataclasses.replace(CONFIG, seeds=3), data)
    shutil.rmtree(unfinished)
    with pytest.raises(BnlabError, match="already complete"):
        find_resumable(runs_dir, CONFIG, data)
    other_labels = dataclasses.replace(data, y_train=data.y_train[::-1])  # same sizes
    assert data_fingerprint(other_labels) != data_fingerprint(data)


def test_a_resume_continues_an_interrupted_run_to_the_numbers_of_a_straight_one(
        pristine_run, tmp_path):
    from bnlab.experiments.resume import resume_plan
    from bnlab.experiments.runner import run_experiment

    run_dir = write_interrupted(tmp_path / "exp-1")
    plans = resume_plan(load_run(run_dir))
    assert {n: (p.action, p.from_epoch) for n, p in plans.items()} == {
        "bn": ("continue", 1), "plain": ("train", 0)}
    run_experiment(CONFIG, tiny_splits(), run_dir, resume=True)
    resumed, straight = load_run(run_dir), load_run(pristine_run)
    assert resumed.complete
    for name, history in straight.histories.items():
        for metric, values in history.per_seed.items():
            np.testing.assert_allclose(resumed.histories[name].per_seed[metric], values,
                                       rtol=0, atol=1e-6)
        np.testing.assert_allclose(resumed.summary[name].test_accuracy,
                                   straight.summary[name].test_accuracy, rtol=0, atol=1e-6)


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


def test_a_damaged_run_is_listed_as_damaged_and_never_hides_the_others(pristine_run, tmp_path):
    runs_dir = tmp_path / "runs"
    good = shutil.copytree(pristine_run, runs_dir / "exp-1")
    bad = shutil.copytree(pristine_run, runs_dir / "exp-2")
    (bad / "bn" / "seed-1" / "history.csv").write_text("epoch,accuracy\n0,xx\n")
    runs, unreadable = list_runs(runs_dir)
    assert [r.path for r in runs] == [good, bad] and unreadable == []
    assert runs[0].complete and not runs[1].complete and runs[1].status == "damaged"
    assert [str(d) for d in runs[1].damage] == [
        "bn/seed-1/history.csv is damaged: its bytes do not match the digest in its record"]
    # The verdicts come from the verified checkpoint's record, so they are whole and equal.
    assert runs[1].comparisons() == runs[0].comparisons()
    # A config that no file holds any more: the folder cannot be read, the others can.
    (bad / "config.json").write_text("[]")
    for checkpoint in bad.glob("*/checkpoint.safetensors"):
        checkpoint.unlink()
    runs, unreadable = list_runs(runs_dir)
    assert [r.path for r in runs] == [good] and [p for p, _ in unreadable] == [bad]
    assert "config.json is not a bnlab experiment" in unreadable[0][1]
    assert "no checkpoint of the run holds a readable copy" in unreadable[0][1]


@pytest.mark.parametrize(("file", "edit", "named"), [
    ("config.json", lambda d: d.pop("optimizer"),
     "config.json is not a bnlab experiment (config.json: optimizer: missing; a stored "
     "config holds every key)"),
    ("config.json", lambda d: d.update(epochs="2"),
     "config.json is not a bnlab experiment (config.json: epochs: must be int, got '2')"),
    ("config.json", lambda d: d["variants"][0].pop("name"),
     "config.json is not a bnlab experiment (config.json: variants[0].name: missing)"),
    ("config.json", lambda d: d["optimizer"].update(learning_rate=float("inf")),
     "config.json is not a bnlab experiment (config.json: optimizer.learning_rate: must be "
     "a finite positive number, got inf)"),
    ("config.json", lambda d: d.update(description="edited"),
     "config.json does not agree with the copy in the checkpoints"),
    ("summary.json", lambda d: d["bn"].pop("test_accuracy"),
     "summary.json is damaged: its content does not match its digest"),
    ("summary.json", lambda d: d["bn"]["final"].update(val_accuracy=[0.5, 0.5]),
     "summary.json is damaged: its content does not match its digest"),
    ("summary.json", lambda d: d.pop("bn"),
     "summary.json is damaged: its content does not match its digest"),
    ("summary.json", lambda d: d["records"].update(bn="0" * 64),
     "summary.json is damaged: its content does not match its digest"),
])
def test_a_hand_edited_run_is_damaged_naming_the_file_and_field(finished_run, file, edit,
                                                                 named):
    data = json.loads((finished_run / file).read_text())
    edit(data)
    (finished_run / file).write_text(json.dumps(data))
    run = load_run(finished_run)
    assert [str(d) for d in run.damage] == [named] and run.status == "damaged"
    assert run.config == CONFIG  # the verified checkpoints' copy
    if file == "summary.json":  # derived: the verdicts come from the records themselves
        assert run.comparisons() and run.verdict_problem() is None


def test_a_run_config_is_read_back_through_the_experiment_checks(tmp_path):
    # A config.json written today is the file form, read back by the experiment checks (the
    # synthetic splits have 3 classes; a 10-unit output takes their labels as well).
    from bnlab.config.files import load_experiment
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


def test_a_config_json_of_random_bytes_is_restored_from_the_checkpoints(finished_run):
    (finished_run / "config.json").write_bytes(bytes(range(256)))
    run = load_run(finished_run)
    assert [str(d) for d in run.damage] == ["config.json is not UTF-8 text (byte 128)"]
    assert run.config == CONFIG and run.comparisons()


def test_statistics_over_seeds_leave_a_diverged_seed_out_from_its_epoch_on():
    values = np.array([[1.0, 2.0, 3.0], [2.0, np.nan, np.nan], [4.0, 5.0, np.nan]])
    text = statistics_csv({m: values for m in ("loss", "accuracy", "val_loss",
                                               "val_accuracy")})
    rows = list(csv.DictReader(text.splitlines()))
    assert [r["seeds"] for r in rows] == ["3", "2", "1"]
    assert float(rows[1]["loss_mean"]) == 3.5 and rows[2]["loss_ci95"] == "nan"
    assert float(rows[2]["loss_mean"]) == 3.0
