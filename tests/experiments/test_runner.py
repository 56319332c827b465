"""The runner: a variant's seeds resume from a checkpoint to the numbers of a straight run,
and a diverging seed is recorded with its epoch and step while the rest trains on."""

from __future__ import annotations

import dataclasses

import numpy as np
from safetensors import safe_open

from bnlab.config.experiment import ExperimentConfig, VariantConfig
from bnlab.config.optimizer import OptimizerConfig
from bnlab.experiments.runner import train_program
from bnlab.experiments.sweep import programs
from bnlab.train.probes import ProbePlan
from tests.synthetic import TINY_LAYERS, tiny_splits


def tiny_config(**overrides) -> ExperimentConfig:
    config = ExperimentConfig(name="tiny", variants=(VariantConfig("tiny", layers=TINY_LAYERS),),
                              epochs=3, batch_size=32, probe=ProbePlan(every=0))
    return dataclasses.replace(config, **overrides)


def test_a_resumed_padded_run_saves_the_real_seeds_and_equals_a_straight_run(tmp_path):
    # 3 seeds on the tests' two CPU devices: the trainer's state holds 4 (seed 5 twice).
    splits = tiny_splits()

    def trained(epochs, **options):
        config = tiny_config(seed=3, seeds=3, epochs=epochs)
        (result,) = train_program(programs(config)[0], config, splits, **options)
        return result

    trained(2, run_dir=tmp_path)
    stem = tmp_path / "tiny" / "checkpoint"
    with safe_open(str(stem.with_suffix(".safetensors")), framework="numpy") as saved:
        state = [name for name in saved.keys() if not name.startswith("records/")]  # noqa: SIM118
        assert {saved.get_tensor(name).shape[0] for name in state} == {3}
        assert not any(name.startswith("keys/") for name in saved.keys())  # noqa: SIM118
    resumed = trained(3, run_dir=tmp_path)
    straight = trained(3)
    for metric, values in straight.history.per_seed.items():
        np.testing.assert_allclose(resumed.history.per_seed[metric], values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(resumed.test_accuracy, straight.test_accuracy, rtol=0, atol=1e-6)
    assert len(resumed.history.epoch_seconds) == 3


def test_a_diverging_seed_is_recorded_and_the_other_seeds_and_variants_train_on(tmp_path):
    from bnlab.experiments.runner import run_experiment
    from bnlab.store.reader import load_run

    splits = tiny_splits()
    as_float = {name: getattr(splits, name).astype(np.float32) / 255
                for name in ("x_train", "x_val", "x_test")}
    as_float["x_train"][5] = 1e18  # one huge image: the plain model's weights blow up
    splits = dataclasses.replace(splits, **as_float)
    plain = ({"type": "flatten"}, {"type": "dense", "units": 8, "activation": "relu"},
             {"type": "dense", "units": 10, "activation": "softmax"})
    config = tiny_config(variants=(VariantConfig("plain", layers=plain),
                                   VariantConfig("bn", layers=TINY_LAYERS)),
                         optimizer=OptimizerConfig("sgd", 0.01), batch_size=8, seeds=3,
                         seed=1, epochs=3)
    results = run_experiment(config, splits, tmp_path)
    plain_history, bn_history = (r.history for r in results)
    assert plain_history.diverged and not bn_history.diverged
    assert np.isfinite(bn_history.per_seed["val_accuracy"]).all()  # trained after plain
    for seed, where in plain_history.diverged.items():
        row = plain_history.seeds.index(seed)
        losses = plain_history.per_seed["loss"][row]
        assert np.isfinite(losses[:where.epoch - 1]).all()
        assert np.isnan(losses[where.epoch - 1:]).all() and where.step >= 1
        assert np.isnan(results[0].test_accuracy[row])
    run = load_run(tmp_path)
    assert run.complete and run.diverged == {"plain": plain_history.diverged}
    assert run.summary["plain"].diverged == plain_history.diverged
    assert run.left_out == {"plain": "diverged: " + "; ".join(
        f"seed {s} at {d}" for s, d in sorted(plain_history.diverged.items()))}
    assert run.comparisons() == []  # one variant left: nothing to pair it with
    # --resume keeps a diverged variant unless asked to retry it.
    from bnlab.experiments.resume import resume_plan

    assert resume_plan(run)["plain"].action == "rewrite"
    assert "diverged" in resume_plan(run)["plain"].reason
    assert resume_plan(run, retry_diverged=True)["plain"].action == "retrain"
    assert resume_plan(run, retry_diverged=True)["bn"].action == "rewrite"
    # show and the report say so.
    import io

    from rich.console import Console

    from bnlab.report.console import run_overview
    from bnlab.report.html import render_report

    out = io.StringIO()
    Console(file=out, width=200).print(run_overview(run))
    shown, page = out.getvalue(), render_report([run])
    gone = len(plain_history.diverged)
    status = "diverged" if gone == 3 else f"diverged ({gone} of 3 seeds)"
    assert status in shown and status in page
    assert f"no verdict for plain ({run.left_out['plain']})" in shown
    assert f"No verdict for plain ({run.left_out['plain']})." in page
    for seed, where in plain_history.diverged.items():
        assert f"seed {seed} diverged at {where}" in page


def test_records_survive_a_resume_and_equal_a_straight_run_and_reach_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator


    splits = tiny_splits()
    plan = ProbePlan(every=2, rows=12, units=2, measures_every=3, step_scales=(1.0, 2.0),
                     test_each_epoch=True)

    def trained(epochs, **options):
        config = tiny_config(seeds=2, epochs=epochs, batch_size=8, probe=plan)
        (result,) = train_program(programs(config)[0], config, splits, **options)
        return result

    trained(2, run_dir=tmp_path)
    resumed = trained(3, run_dir=tmp_path)
    straight = trained(3)
    assert resumed.probes.keys() == straight.probes.keys()
    for name, values in straight.probes.items():
        np.testing.assert_allclose(resumed.probes[name], values, rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    # 70 rows at batch 8: 9 steps an epoch; statistics at steps 0, 2, …, 8 of each epoch.
    assert straight.probes["activations/steps"].tolist() == [
        e * 9 + k for e in range(3) for k in (0, 2, 4, 6, 8)]
    assert straight.probes["measures/steps"].tolist() == [e * 9 + k for e in range(3)
                                                           for k in (0, 3, 6)]
    assert straight.probes["test/steps"].tolist() == [9, 18, 27]
    np.testing.assert_allclose(straight.probes["test/accuracy"][:, -1],
                               straight.test_accuracy, rtol=1e-6)
    board = EventAccumulator(str(tmp_path / "tensorboard" / "tiny" / "seed-42" / "probes"),
                             size_guidance={SCALARS: 0})
    board.Reload()
    tags = set(board.Tags()["scalars"])
    assert {"activations/dense/pre_activation/p50", "ics/dense_1",
            "landscape/beta_smoothness"} <= tags
    steps = [event.step for event in board.Scalars("landscape/beta_smoothness")]
    assert sorted(set(steps)) == straight.probes["measures/steps"].tolist()
