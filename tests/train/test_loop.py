"""The epoch loop yields one record per epoch and writes nothing; History keeps Keras's keys;
a seed that diverges is recorded at its step while the others train on."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from bnlab.errors import ConfigError
from bnlab.nn.layers import Dense, Flatten
from bnlab.nn.model import Sequential
from bnlab.train.engine import TrainState
from bnlab.train.history import GAP_METRICS, METRICS, Divergence, History
from bnlab.train.loop import train_epochs
from bnlab.train.trainer import SeedBatchTrainer
from tests.synthetic import tiny_model, tiny_splits


def compiled_trainer(model=None, optimizer=None, seeds=(1, 2), validation=True):
    splits = tiny_splits()
    trainer = SeedBatchTrainer(
        model or tiny_model(), optimizer or optax.sgd(0.1), batch_size=32,
        x_train=splits.x_train, y_train=splits.y_train, seeds=seeds,
        evaluation={"val": (splits.x_val, splits.y_val)} if validation else {})
    state = trainer.init_state()
    trainer.compile(state)
    return trainer, state


def test_records_count_epochs_from_the_start_epoch_and_write_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer, state = compiled_trainer()
    records = []
    for record in train_epochs(trainer, state, epochs=4, start_epoch=1):
        records.append((record.epoch, record.epochs, record.steps, sorted(record.metrics)))
        assert all(v.shape == (2,) and v.dtype == np.float64 for v in record.metrics.values())
        assert record.seconds > 0
    # The tiny model has BatchNorm: its validation set is scored with batch statistics too.
    assert records == [(e, 4, 3, sorted(METRICS + GAP_METRICS)) for e in (2, 3, 4)]
    assert list(tmp_path.iterdir()) == []


def test_without_validation_a_record_has_only_the_training_metrics():
    trainer, state = compiled_trainer(validation=False)
    (record,) = train_epochs(trainer, state, epochs=1, validation=None)
    assert sorted(record.metrics) == ["accuracy", "loss"]
    with pytest.raises(ConfigError, match="no evaluation data named 'val' to validate on"):
        next(train_epochs(trainer, state, epochs=1))  # before any epoch trains


def test_history_is_keras_history_per_epoch_and_keeps_every_seed():
    trainer, state = compiled_trainer(seeds=(1, 2, 3))
    history = History(trainer.seeds)
    for record in train_epochs(trainer, state, epochs=2):
        history.append(record)
    assert list(history.history) == list(METRICS) and history.epoch == [0, 1]
    assert history.per_seed["val_loss"].shape == (3, 2)
    np.testing.assert_allclose(history.history["loss"], history.per_seed["loss"].mean(axis=0))
    assert history.final("accuracy").shape == (3,) and len(history.epoch_seconds) == 2
    assert repr(history).startswith("History(2 epochs, 3 seeds, means: loss ")


def test_a_nan_pixel_diverges_every_seed_at_the_step_whose_batch_holds_it():
    splits = tiny_splits()
    x = splits.x_train.astype(np.float32) / 255
    x[17, 2, 1] = np.nan  # row 17: each seed meets it at the step its shuffle puts it in
    trainer = SeedBatchTrainer(tiny_model(), optax.sgd(0.1), batch_size=8, x_train=x,
                               y_train=splits.y_train, seeds=(1, 2, 3),
                               evaluation={"val": (splits.x_val, splits.y_val)})
    state = trainer.init_state()
    trainer.compile(state)
    (record,) = train_epochs(trainer, state, epochs=3)  # every seed gone: the loop ends
    # Independently: the 1-based step of row 17 in each seed's epoch-0 permutation.
    shuffle, _ = trainer.epoch_keys(0)
    expected = {seed: int(np.flatnonzero(np.asarray(jax.random.permutation(key, 70)) == 17)[0])
                // 8 + 1 for seed, key in zip((1, 2, 3), shuffle, strict=False)}
    assert record.diverged == {member: expected[seed] for member, seed in enumerate((1, 2, 3))}
    assert len(set(expected.values())) > 1
    assert all(np.isnan(values).all() for values in record.metrics.values())
    history = History(trainer.seeds)
    history.append(record)
    assert history.diverged == {seed: Divergence(1, step) for seed, step in expected.items()}
    assert "seed 1 diverged at epoch 1, step" in repr(history)


def test_a_diverged_seed_leaves_the_other_seeds_numbers_as_if_it_trained_alone():
    model = Sequential((Flatten(), Dense(3, activation="softmax")), input_shape=(4, 4))
    together, state = compiled_trainer(model=model, seeds=(4, 5))
    poisoned = TrainState(*jax.tree_util.tree_map(
        lambda a: np.asarray(a).copy(), tuple(state)))
    poisoned.params[1]["kernel"][0, 0, 0] = np.nan  # seed 4 starts from a NaN weight
    alone, alone_state = compiled_trainer(model=model, seeds=(5,))
    records = list(train_epochs(together, poisoned, epochs=3))
    solo = list(train_epochs(alone, alone_state, epochs=3))
    assert records[0].diverged == {0: 1} and all(not r.diverged for r in records[1:])
    for record, single in zip(records, solo, strict=True):
        for metric, values in record.metrics.items():
            assert np.isnan(values[0])
            np.testing.assert_allclose(values[1], single.metrics[metric][0], rtol=1e-6)


def test_a_diverged_history_resumes_without_training_its_lost_seeds_again():
    trainer, state = compiled_trainer(seeds=(1, 2))
    records = list(train_epochs(trainer, state, epochs=3, start_epoch=1,
                                diverged=[0, 1]))
    assert records == []  # every seed had diverged: nothing left to train


def test_a_diverged_seeds_records_are_nan_from_the_state_that_gave_the_non_finite_loss():
    from bnlab.train.probes import ProbePlan

    splits = tiny_splits()
    x = splits.x_train.astype(np.float32) / 255
    x[17, 2, 1] = np.nan
    trainer = SeedBatchTrainer(tiny_model(), optax.sgd(0.1), batch_size=8, x_train=x,
                               y_train=splits.y_train, seeds=(1, 2, 3),
                               evaluation={"val": (splits.x_val, splits.y_val)},
                               probe=ProbePlan(every=1, rows=8, units=2, measures_every=1),
                               probe_images=splits.x_val[:8].astype(np.float32) / 255)
    state = trainer.init_state()
    trainer.compile(state)
    (record,) = train_epochs(trainer, state, epochs=2)
    layer, _ = record.probes["activations"]["dense/pre_activation"]  # (members, 9 steps, 7)
    for member, step in record.diverged.items():  # 1-based: step - 1 gave the NaN loss
        assert np.isfinite(layer[member, :step - 1]).all()
        assert np.isnan(layer[member, step - 1:]).all()
        assert np.isnan(record.probes["measures"]["grad_norm"][member, step - 1:]).all()
        assert np.isfinite(record.probes["measures"]["grad_norm"][member, :step - 1]).all()
