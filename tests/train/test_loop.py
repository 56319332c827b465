"""The epoch loop yields one record per epoch and writes nothing; History keeps Keras's keys."""

from __future__ import annotations

import numpy as np
import optax
import pytest

from bnlab.errors import ConfigError, DivergenceError
from bnlab.nn.layers import Dense, Flatten
from bnlab.nn.model import Sequential
from bnlab.train.loop import METRICS, History, train_epochs
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
    assert records == [(e, 4, 3, sorted(METRICS)) for e in (2, 3, 4)]
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


def test_a_non_finite_loss_stops_the_loop_before_its_epoch_is_yielded():
    model = Sequential((Flatten(), Dense(3, activation="softmax")), input_shape=(4, 4))
    trainer, state = compiled_trainer(model=model, optimizer=optax.sgd(1e38), seeds=(4, 5))
    yielded = []
    with pytest.raises(DivergenceError, match="learning rate") as err:
        for record in train_epochs(trainer, state, epochs=3):
            yielded.append(record.epoch)
    assert err.value.seeds == (4, 5) and err.value.epoch == len(yielded) + 1
    assert "\n" not in str(err.value)
