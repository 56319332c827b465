"""A sweep in the run store: its points train in one program per shape, each point's numbers
equal a run of its own recipe, a diverging point changes no other point's numbers, and a
sweep stopped between two checkpoints of one program resumes to the uninterrupted numbers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bnlab.config.experiment import ExperimentConfig, VariantConfig
from bnlab.config.optimizer import OptimizerConfig
from bnlab.config.sweep import SweepAxis
from bnlab.experiments.runner import run_experiment
from bnlab.experiments.sweep import programs
from bnlab.store.reader import load_run
from bnlab.train.probes import ProbePlan
from tests.synthetic import TINY_LAYERS, Hooks, run_stopped_after_one_epoch, tiny_splits

PLAIN = ({"type": "flatten"}, {"type": "dense", "units": 8, "activation": "relu"},
         {"type": "dense", "units": 10, "activation": "softmax"})


def sweep_config(**overrides) -> ExperimentConfig:
    config = ExperimentConfig(
        name="sweep", variants=(VariantConfig("tiny", layers=TINY_LAYERS),
                                VariantConfig("plain", layers=PLAIN)),
        epochs=2, batch_size=16, seeds=2, seed=5, optimizer=OptimizerConfig("sgd", 0.05),
        probe=ProbePlan(every=0),  # the sweep is under test, not the probes
        sweep=(SweepAxis("optimizer.learning_rate", (0.05, 0.2), "optimizer",
                         option="learning_rate"),
               SweepAxis("batch_norm.momentum", (0.9, 0.99), "layer", option="momentum",
                         layer_type="batch_norm")))
    return dataclasses.replace(config, **overrides)


def assert_same(got, want) -> None:
    # 1e-5: the same float32 steps, vmapped over more or fewer members.
    for metric, values in want.history.per_seed.items():
        np.testing.assert_allclose(got.history.per_seed[metric], values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.test_accuracy, want.test_accuracy, rtol=1e-5, atol=1e-6)


def test_points_share_a_program_per_shape_and_equal_runs_of_their_own_recipe(tmp_path):
    config = sweep_config()
    plan = programs(config)
    assert [len(p.members) for p in plan] == [8, 4]  # tiny: 2 × 2 points × 2 seeds; plain
    assert [p.scalar_keys for p in plan] == [
        ("optimizer.learning_rate", "batch_norm.momentum"), ("optimizer.learning_rate",)]
    splits = tiny_splits()
    results = {r.name: r for r in run_experiment(config, splits, tmp_path / "sweep")}
    assert list(results) == [p.name for p in config.points]
    for point, (learning_rate, momentum) in (
            ("tiny@learning_rate=0.2,batch_norm.momentum=0.9", (0.2, 0.9)),
            ("tiny@learning_rate=0.05,batch_norm.momentum=0.99", (0.05, 0.99)),
            ("plain@learning_rate=0.2", (0.2, None))):
        layers = [dict(spec, momentum=momentum) if spec["type"] == "batch_norm" else spec
                  for spec in (TINY_LAYERS if momentum else PLAIN)]
        alone = ExperimentConfig(name="alone", variants=(VariantConfig("v", layers=layers),),
                                 epochs=2, batch_size=16, seeds=2, seed=5,
                                 optimizer=OptimizerConfig("sgd", learning_rate),
                                 probe=ProbePlan(every=0))
        (own,) = run_experiment(alone, splits, tmp_path / point)
        assert_same(results[point], own)
    run = load_run(tmp_path / "sweep")
    assert run.complete and not run.damage
    # Verdicts: variants at equal learning rate, and each at its best (no all-pairs table).
    pairs = {frozenset((c.name_a, c.name_b)) for c in run.comparisons()}
    assert frozenset(("plain@learning_rate=0.2",
                      "tiny@learning_rate=0.2,batch_norm.momentum=0.9")) in pairs
    assert frozenset(("plain@learning_rate=0.2", "plain@learning_rate=0.05")) not in pairs


def test_a_diverging_point_is_a_result_and_changes_no_other_points_numbers(tmp_path):
    splits = tiny_splits()
    as_float = {name: getattr(splits, name).astype(np.float32) / 255
                for name in ("x_train", "x_val", "x_test")}
    splits = dataclasses.replace(splits, **as_float)
    axis = SweepAxis("optimizer.learning_rate", (0.05, 1e30), "optimizer",
                     option="learning_rate")
    only = (VariantConfig("plain", layers=PLAIN),)
    swept = run_experiment(sweep_config(variants=only, sweep=(axis,)), splits, tmp_path / "a")
    kept = dataclasses.replace(axis, values=(0.05,))
    (alone,) = run_experiment(sweep_config(variants=only, sweep=(kept,)), splits, tmp_path / "b")
    good, bad = swept
    assert set(bad.history.diverged) == {5, 6} and not good.history.diverged
    assert all(d.epoch == 1 for d in bad.history.diverged.values())
    assert np.isnan(bad.test_accuracy).all()
    assert_same(good, alone)
    run = load_run(tmp_path / "a")
    assert run.complete and run.left_out == {bad.name: "diverged: seed 5 at epoch 1, step "
                                             f"{bad.history.diverged[5].step}; seed 6 at epoch "
                                             f"1, step {bad.history.diverged[6].step}"}


class Stop(Exception):
    pass


def test_a_sweep_stopped_between_two_checkpoints_of_a_program_resumes_to_the_same_numbers(
        tmp_path):
    config, splits = sweep_config(epochs=3), tiny_splits()
    straight = {r.name: r for r in run_experiment(config, splits, tmp_path / "straight")}
    first = config.points[0].name

    def stop(name, record):
        if name == first and record.epoch == 2:  # its epoch-2 checkpoint is written; the
            raise Stop  # other points of its program still hold epoch 1

    with pytest.raises(Stop):
        run_experiment(config, splits, tmp_path / "stopped", observer=Hooks(on_epoch=stop))
    run = load_run(tmp_path / "stopped")
    assert [run.records[p.name].epoch for p in config.points[:4]] == [2, 1, 1, 1]
    resumed = {r.name: r for r in run_experiment(config, splits, tmp_path / "stopped",
                                                 resume=True)}
    for name, result in straight.items():
        assert_same(resumed[name], result)
        assert resumed[name].history.epochs == 3
    assert load_run(tmp_path / "stopped").complete


def test_a_cosine_schedule_spans_the_run_and_resumes_where_it_stopped(tmp_path):
    """The program's optimizer decays over the run's epochs × steps per epoch (3 × ⌈70 / 16⌉
    = 15 steps), and a run stopped after its first epoch resumes to the uninterrupted
    numbers: the schedule's step count is in the checkpointed optimizer state."""
    import jax.numpy as jnp

    from bnlab.experiments.sweep import programs

    config = sweep_config(epochs=3, sweep=(), optimizer=OptimizerConfig("sgd", 0.05,
                                                                        schedule="cosine"))
    splits = tiny_splits()
    optimizer = programs(config)[0].trainer(splits, epochs=3).optimizer
    params = {"w": jnp.zeros(())}
    state, steps = optimizer.init(params), []
    for _ in range(15):
        update, state = optimizer.update({"w": jnp.ones(())}, state, params)
        steps.append(float(-update["w"]))
    np.testing.assert_allclose(steps, 0.05 * 0.5 * (1 + np.cos(np.pi * np.arange(15) / 15)),
                               rtol=1e-6, atol=1e-9)

    straight = {r.name: r for r in run_experiment(config, splits, tmp_path / "straight")}
    constant = run_experiment(dataclasses.replace(config, optimizer=OptimizerConfig(
        "sgd", 0.05)), splits, tmp_path / "constant")
    assert not np.allclose(constant[0].history.per_seed["loss"],
                           straight["tiny"].history.per_seed["loss"])
    run_stopped_after_one_epoch(config, splits, tmp_path / "stopped")
    resumed = {r.name: r for r in run_experiment(config, splits, tmp_path / "stopped",
                                                 resume=True)}
    for name, result in straight.items():
        assert_same(resumed[name], result)
