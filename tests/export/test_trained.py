"""Only a finished model leaves a run (``export.trained``): a run that a live process is
training, a variant that has not trained every epoch and a diverged seed are refused, each
with one line that says what to do instead."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bnlab.config.experiment import ExperimentConfig, VariantConfig
from bnlab.config.optimizer import OptimizerConfig
from bnlab.errors import ConfigError
from bnlab.experiments.runner import run_experiment
from bnlab.export.trained import trained_member
from bnlab.store.lock import RunLock, training_holder
from bnlab.store.reader import load_run
from bnlab.train.checkpoint import CheckpointError
from tests.synthetic import TINY_LAYERS, run_stopped_after_one_epoch, tiny_splits

CONFIG = ExperimentConfig(name="tiny", epochs=2, seeds=2, batch_size=16,
                          optimizer=OptimizerConfig("sgd", 0.1),
                          variants=(VariantConfig("bn", layers=TINY_LAYERS),))


def test_a_run_being_trained_now_is_refused_and_exported_once_its_lock_is_free(tmp_path):
    run_experiment(CONFIG, tiny_splits(), tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert training_holder(run.path) is None
    with RunLock(run.path):  # the flock a training process holds (another open file)
        assert training_holder(run.path)["pid"] > 0
        with pytest.raises(ConfigError, match=r"is being trained or recalibrated now \(PID "
                                              r"\d+ on .*\); its models are taken only when "
                                              "it ends"):
            trained_member(run.path, run.config)
    assert training_holder(run.path) is None
    # Free again, the checkpoint is read: the tiny 4×4 model's weights then do not fit the
    # Fashion-MNIST shapes its stored config builds (real runs export in test_export_cli).
    with pytest.raises(CheckpointError, match="does not fit this experiment"):
        trained_member(run.path, run.config)


def test_a_variant_stopped_before_its_last_epoch_is_refused(tmp_path):
    run_stopped_after_one_epoch(CONFIG, tiny_splits(), tmp_path / "half")
    run = load_run(tmp_path / "half")
    with pytest.raises(ConfigError, match=r"half/bn has trained 1 of 2 epochs; a model still "
                                          r"in training is not taken: finish it first"):
        trained_member(run.path, run.config, "bn")


def test_a_diverged_seed_is_refused_and_another_is_named(tmp_path):
    splits = tiny_splits()
    as_float = {name: getattr(splits, name).astype(np.float32) / 255
                for name in ("x_train", "x_val", "x_test")}
    as_float["x_train"][5] = 1e18  # one huge image: the plain model's weights blow up
    plain = ({"type": "flatten"}, {"type": "dense", "units": 8, "activation": "relu"},
             {"type": "dense", "units": 10, "activation": "softmax"})
    config = dataclasses.replace(CONFIG, variants=(VariantConfig("plain", layers=plain),),
                                 optimizer=OptimizerConfig("sgd", 0.01), batch_size=8,
                                 seeds=3, seed=1)
    run_experiment(config, dataclasses.replace(splits, **as_float), tmp_path / "run")
    run = load_run(tmp_path / "run")
    diverged = run.diverged["plain"]
    assert diverged
    seed = min(diverged)
    finite = [s for s in run.config.seed_list if s not in diverged]
    instead = (f"choose another seed, such as {finite[0]}" if finite else
               "every seed diverged: retrain at a smaller learning rate")
    with pytest.raises(ConfigError, match=rf"seed {seed} of run/plain diverged \(epoch "
                                          rf"{diverged[seed].epoch}, step \d+\): its weights "
                                          rf"are no model; {instead}"):
        trained_member(run.path, run.config, "plain", seed)
