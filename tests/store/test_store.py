"""Run folders: atomic writes, Keras CSVLogger format, listing and resuming lookups."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from bnlab.errors import BnlabError
from bnlab.store import (
    atomic_write_bytes,
    atomic_write_json,
    find_resumable,
    history_csv,
    list_runs,
    load_run,
    new_run_dir,
    read_history_csv,
    statistics_csv,
)


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


def write_run(runs, name, *, complete: bool, seeds=(1,)):
    run = new_run_dir(runs, name)
    config = {"name": name, "dataset": "fashion_mnist", "epochs": 2, "batch_size": 32,
              "seed": seeds[0], "seeds": len(seeds),
              "optimizer": {"name": "sgd", "learning_rate": 0.001, "args": {}},
              "variants": [{"name": "v", "model": "baseline", "layers": []}]}
    atomic_write_json(run / "config.json", config)
    atomic_write_json(run / "environment.json", {"seeds": list(seeds)})
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
    assert not record.complete and record.epochs_done == 1
    assert record.histories["v"]["loss"].shape == (2, 1)
    assert find_resumable(tmp_path, {**config, "seeds": 2}) == unfinished
    with pytest.raises(BnlabError, match="already complete"):
        find_resumable(tmp_path, config)


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
    ("config.json", lambda d: d.pop("optimizer"), "config.json lacks 'optimizer'"),
    ("config.json", lambda d: d.update(epochs="2"), "config.json lacks 'epochs'"),
    ("config.json", lambda d: d["variants"][0].pop("name"), "config.json variant lacks 'name'"),
    ("summary.json", lambda d: d["v"].pop("test_accuracy"),
     "summary.json['v'] lacks 'test_accuracy'"),
    ("summary.json", lambda d: d.pop("v"), "summary.json['v'] is not a JSON object"),
])
def test_a_hand_edited_run_is_one_line_naming_the_missing_field(tmp_path, file, edit, named):
    run, _ = write_run(tmp_path, "exp", complete=True)
    data = json.loads((run / file).read_text())
    edit(data)
    atomic_write_json(run / file, data)
    with pytest.raises(BnlabError) as err:
        load_run(run)
    assert str(err.value) == (f"{run} is damaged (ValueError: {named}); delete it or rerun "
                              "the experiment")


def test_epochs_done_counts_a_variant_that_has_not_started_as_zero(tmp_path):
    run, config = write_run(tmp_path, "exp", complete=False)
    config["variants"].append({"name": "later", "model": "baseline", "layers": []})
    atomic_write_json(run / "config.json", config)
    assert load_run(run).epochs_done == 0
    assert load_run(run).epochs_per_variant == [1, 0]
