"""BatchNorm's train/inference gap: the validation set scored with batch statistics, every
epoch, for models with BatchNorm only; it equals the model applied in training mode batch by
batch (no dropout, no state change), and the gap is inference minus it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.losses
import pytest

from bnlab.analysis.gap import final_gaps
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.layers import Dense, Dropout, Flatten
from bnlab.nn.model import Sequential
from bnlab.nn.norms import NoisyBatchNorm
from bnlab.store.derived import GAPS, history_csv, statistics_csv
from bnlab.train.engine import fixed, make_evaluate
from bnlab.train.history import GAP_METRICS, METRICS, History
from bnlab.train.loop import train_epochs
from bnlab.train.trainer import SeedBatchTrainer
from tests.synthetic import tiny_model, tiny_splits


def trainer_for(model, seeds=(1, 2, 3), batch_size=8):
    splits = tiny_splits()
    trainer = SeedBatchTrainer(model, optax.sgd(0.1), batch_size=batch_size,
                               x_train=splits.x_train, y_train=splits.y_train, seeds=seeds,
                               evaluation={"val": (splits.x_val, splits.y_val)})
    state = trainer.init_state()
    trainer.compile(state, batch_statistics=("val",))
    return trainer, state, splits


@pytest.mark.slow
def test_batch_statistics_evaluation_is_training_mode_batch_by_batch_without_noise():
    model = Sequential((Flatten(), NoisyBatchNorm(), Dense(8, activation="relu"), Dropout(0.5),
                        Dense(3, activation="softmax")), input_shape=(4, 4))
    params, state = model.init(jax.random.key(0))
    splits = tiny_splits()
    x, y = splits.x_val, splits.y_val  # 20 rows: batches of 8, 8 and a ragged 4
    loss, accuracy = jax.jit(make_evaluate(fixed(model, None), 8, batch_statistics=True))(
        params, state, {}, x, y)
    # The same network without its noise: BatchNorm for the noisy one, no Dropout.
    quiet = Sequential((Flatten(), BatchNorm(), model.layers[2], model.layers[4]),
                       input_shape=(4, 4))
    quiet_params = (params[0], params[1], params[2], params[4])
    quiet_state = (state[0], state[1], state[2], state[4])
    losses, correct = [], []
    for start in range(0, 20, 8):
        rows = slice(start, start + 8)
        logits, _ = quiet.apply(quiet_params, quiet_state,
                                jnp.asarray(x[rows], jnp.float32) / 255.0, train=True)
        losses += list(optax.losses.softmax_cross_entropy_with_integer_labels(logits, y[rows]))
        correct += list(np.argmax(logits, -1) == y[rows])
    np.testing.assert_allclose(float(loss), np.mean(losses), rtol=1e-6)
    assert round(float(accuracy) * 20) == sum(bool(c) for c in correct)
    inference_loss, _ = make_evaluate(fixed(model, None))(params, state, {}, x, y)
    assert abs(float(inference_loss) - float(loss)) > 1e-4  # the two modes really differ


@pytest.mark.slow
def test_bn_models_record_the_gap_every_epoch_and_models_without_bn_do_not():
    trainer, state, _ = trainer_for(tiny_model())
    history = History(trainer.seeds)
    for record in train_epochs(trainer, state, epochs=2):
        history.append(record)
    assert set(history.per_seed) == set(METRICS) | set(GAP_METRICS)
    assert np.isfinite(history.per_seed["val_batchstats_accuracy"]).all()
    # Keras's History keys stay Keras's.
    assert list(history.history) == list(METRICS)
    plain = Sequential((Flatten(), Dense(8, activation="relu"), Dense(3, activation="softmax")),
                       input_shape=(4, 4))
    trainer, state, _ = trainer_for(plain)
    (record,) = train_epochs(trainer, state, epochs=1)
    assert set(record.metrics) == set(METRICS)
    trainer, state, _ = trainer_for(tiny_model())
    (record,) = train_epochs(trainer, state, epochs=1, batch_statistics=False)
    assert set(record.metrics) == set(METRICS)


def test_history_csv_and_statistics_carry_the_gap_paired_by_seed():
    rng = np.random.default_rng(0)
    per_seed = {m: rng.uniform(0.5, 0.9, (4, 3)) for m in (*METRICS, *GAP_METRICS)}
    text = history_csv({m: v[0] for m, v in per_seed.items()})
    assert text.splitlines()[0] == ("epoch,accuracy,loss,val_accuracy,val_loss,"
                                    "val_batchstats_accuracy,val_batchstats_loss")
    rows = list(zip(*(line.split(",") for line in statistics_csv(per_seed).splitlines()),
                    strict=True))
    columns = {row[0]: np.array(row[1:], float) for row in rows}
    for gap, (inference, batch) in GAPS.items():
        differences = per_seed[inference] - per_seed[batch]
        np.testing.assert_allclose(columns[f"{gap}_mean"], differences.mean(axis=0))
    without = {m: per_seed[m] for m in METRICS}
    assert "bn_gap" not in statistics_csv(without) and "batchstats" not in history_csv(
        {m: v[0] for m, v in without.items()})


def test_final_gap_is_a_paired_comparison_of_the_two_modes():
    inference = np.array([[0.80, 0.85], [0.81, 0.86], [0.79, 0.84]])
    batch = inference - np.array([[0.0, 0.010], [0.0, 0.012], [0.0, 0.011]])
    (gap,) = final_gaps({"bn": {"val_accuracy": inference, "val_batchstats_accuracy": batch}},
                        epochs=2)
    assert gap.comparison.n == 3
    np.testing.assert_allclose(gap.comparison.mean_difference, 0.011)
    assert gap.sentence.startswith("bn in inference mode beats bn with batch statistics by 1.1")
    assert final_gaps({"plain": {"val_accuracy": inference}}) == []
