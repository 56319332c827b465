"""Recalibration in the run store: an experiment's ``recalibrate_batches`` writes the
recomputed statistics when training ends; ``recalibrate_run`` refuses what it cannot do
before writing anything."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import bnlab
from bnlab.config.experiment import ExperimentConfig, VariantConfig
from bnlab.config.files import parse_experiment
from bnlab.config.optimizer import OptimizerConfig
from bnlab.errors import ConfigError
from bnlab.experiments.recalibrate import recalibrate_run
from bnlab.experiments.runner import run_experiment
from bnlab.store.reader import load_run
from bnlab.store.recalibrations import read_recalibrations
from bnlab.train.checkpoint import read_checkpoint
from tests.synthetic import TINY_LAYERS, run_stopped_after_one_epoch, tiny_splits

PLAIN = ({"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"})
CONFIG = ExperimentConfig(name="recal", epochs=2, seeds=2, batch_size=16,
                          optimizer=OptimizerConfig("sgd", 0.1),
                          variants=(VariantConfig("bn", layers=TINY_LAYERS),))


def test_the_experiment_option_writes_the_recalibrated_checkpoint_when_training_ends(tmp_path):
    config = dataclasses.replace(CONFIG, recalibrate_batches=3)
    run_experiment(config, tiny_splits(), tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert run.complete and run.config.recalibrate_batches == 3  # stored and read back
    (found,), problems = read_recalibrations(run.path, run.config)
    assert problems == [] and found.batches == 3
    np.testing.assert_array_equal(found.before["val_accuracy"],
                                  run.histories["bn"].final("val_accuracy"))
    # The same as recalibrating the finished run afterwards: one deterministic computation.
    (later,) = recalibrate_run(run.path, run.config, tiny_splits(), 3)
    np.testing.assert_allclose(later.after["val_loss"], found.after["val_loss"], rtol=1e-6)
    (from_api,) = bnlab.recalibrate(run, batches=3, data=tiny_splits())  # the same, locked
    np.testing.assert_array_equal(from_api.after["val_loss"], later.after["val_loss"])
    trained, _ = read_checkpoint(run.path / "bn" / "checkpoint")
    recalibrated, _ = read_checkpoint(run.path / "bn" / "recalibrated")
    changed = [name for name in trained if "moving" in name
               and not np.array_equal(trained[name], recalibrated[name])]
    assert changed and all(np.array_equal(trained[n], recalibrated[n]) for n in trained
                           if n.startswith(".params"))


def test_recalibrating_an_unfinished_run_or_a_model_without_bn_is_refused(tmp_path):
    run_stopped_after_one_epoch(CONFIG, tiny_splits(), tmp_path / "half")
    with pytest.raises(ConfigError, match="has trained 1 of 2 epochs; finish it first"):
        recalibrate_run(tmp_path / "half", CONFIG, tiny_splits(), 2)
    assert not (tmp_path / "half" / "bn" / "recalibrated.safetensors").exists()
    plain = dataclasses.replace(CONFIG, variants=(VariantConfig("plain", layers=PLAIN),))
    run_experiment(plain, tiny_splits(), tmp_path / "plain")
    with pytest.raises(ConfigError, match="no variant of plain has a BatchNorm layer: nothing "
                                          "to recalibrate"):
        recalibrate_run(tmp_path / "plain", plain, tiny_splits(), 2)
    # A run with BatchNorm in some variants: those are recalibrated, the others left alone.
    both = dataclasses.replace(CONFIG, variants=(VariantConfig("plain", layers=PLAIN),
                                                 *CONFIG.variants))
    run_experiment(both, tiny_splits(), tmp_path / "both")
    (result,) = recalibrate_run(tmp_path / "both", both, tiny_splits(), 2)
    assert result.point == "bn" and not (tmp_path / "both" / "plain" / "recalibrated.json").exists()


def test_the_variants_asked_for_are_recalibrated_and_a_wrong_name_is_refused_before_the_data(
        tmp_path):
    three = dataclasses.replace(CONFIG, variants=(
        VariantConfig("plain", layers=PLAIN), *CONFIG.variants,
        VariantConfig("bn2", layers=TINY_LAYERS)))
    run_experiment(three, tiny_splits(), tmp_path / "three")
    (result,) = bnlab.recalibrate(tmp_path / "three", batches=2, variant="bn2",
                                  data=tiny_splits())
    assert result.point == "bn2"
    assert (tmp_path / "three" / "bn2" / "recalibrated.safetensors").exists()
    assert not (tmp_path / "three" / "bn" / "recalibrated.safetensors").exists()
    for name, why in (("plain", "has no BatchNorm layer"), ("nope", "is not a variant")):
        with pytest.raises(ConfigError, match=f"variant '{name}' {why}.*; recalibrate one of "
                                              "bn, bn2 variant=NAME"):
            bnlab.recalibrate(tmp_path / "three", batches=2, variant=[name],
                              data_dir=tmp_path / "no-data", download=False)


@pytest.mark.parametrize("value, message", [
    (-1, r"must be in 0\.\.1,718"), (1719, r"must be in 0\.\.1,718"),
    ("3", "must be int"), (True, "must be int")])
def test_the_option_is_checked_against_the_training_batches(value, message):
    raw = {"name": "x", "recalibrate_batches": value,
           "variants": [{"name": "bn", "model": "bn_after"}]}
    with pytest.raises(ConfigError, match=message):
        parse_experiment(raw)
    raw = {"name": "x", "recalibrate_batches": 5,
           "variants": [{"name": "plain", "model": "baseline"}]}
    with pytest.raises(ConfigError, match="no variant has a BatchNorm layer"):
        parse_experiment(raw)


def test_a_run_not_trained_to_the_end_is_refused_naming_the_points_before_the_data(tmp_path):
    """``bnlab recalibrate`` of an interrupted run (here stopped after the first point's first
    epoch, the second point never started) names every point not trained to the end, before
    loading the data, rather than a missing checkpoint."""
    two = dataclasses.replace(CONFIG, variants=(*CONFIG.variants,
                                                VariantConfig("bn2", layers=TINY_LAYERS)))
    run_stopped_after_one_epoch(two, tiny_splits(), tmp_path / "half")
    with pytest.raises(ConfigError, match=r"half is unfinished: bn, bn2 not trained to the "
                                          r"run's 2 epochs; finish the run first"):
        bnlab.recalibrate(tmp_path / "half", batches=2, data_dir=tmp_path / "no-data",
                          download=False)


def test_training_rows_too_few_for_the_experiments_recalibration_are_refused_before_the_data(
        tmp_path):
    """``--train-rows`` that leave fewer full batches than ``recalibrate_batches`` asks for
    would fail once the first program has trained; they are refused before anything."""
    config = dataclasses.replace(CONFIG, recalibrate_batches=3)
    with pytest.raises(ConfigError, match=r"train_rows=32: the experiment recalibrates on 3 "
                                          r"batches, and 32 training rows hold 2 full batches"):
        bnlab.run(config, train_rows=32, runs_dir=tmp_path / "runs",
                  data_dir=tmp_path / "no-data", download=False, verbose=0)
    assert not (tmp_path / "runs").exists()
