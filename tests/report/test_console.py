"""Lines the console prints that are computed from a record: a divergence says whether any
seed is still training."""

from __future__ import annotations

import numpy as np

from bnlab.report.console import divergence_lines
from bnlab.train.loop import EpochRecord


def record(losses: list[float], diverged: dict[int, int]) -> EpochRecord:
    return EpochRecord(epoch=1, epochs=3, steps=10, seconds=1.0,
                       metrics={"loss": np.array(losses)}, state=None, diverged=diverged,
                       seeds=(42, 43))


def test_a_divergence_says_the_other_seeds_train_on_only_when_one_does():
    (line,) = divergence_lines("bn@lr=1.0", record([np.nan, 0.5], {0: 7}))
    assert line == ("bn@lr=1.0: seed 42 diverged at epoch 1, step 7 (the training loss is not "
                    "finite); it stops there, the other seeds train on")
    both = divergence_lines("bn@lr=1.0", record([np.nan, np.nan], {0: 7, 1: 9}))
    assert [line.rsplit("; ", 1)[1] for line in both] == [
        "it stops there, no seed of bn@lr=1.0 is left training"] * 2


def test_the_sweep_estimate_counts_the_epochs_and_the_compiles_still_to_come():
    from types import SimpleNamespace

    from bnlab.report.progress import SweepTiming

    plan = [SimpleNamespace(points=[SimpleNamespace(name=f"v{i}@lr={lr}", variant=f"v{i}",
                                                    batch_size=32) for lr in (1, 2)],
                            members=range(4))
            for i in range(3)]  # 3 programs × 4 members
    timing = SweepTiming(plan, epochs=2, clock=lambda: 0.0)
    timing.compiled(10.0)
    line = timing.after_epoch("v0@lr=1", EpochRecord(
        epoch=1, epochs=2, steps=10, seconds=4.0, metrics={}, state=None, seeds=(42, 43)))
    # 1 s per member-epoch: 4 member-epochs left here, 8 + 8 in the two programs to come,
    # each compiling for the 10 s measured so far.
    assert line.endswith("about 40 s of training left in this sweep, then its figures"), line
    assert timing.after_epoch("v0@lr=2", EpochRecord(
        epoch=1, epochs=2, steps=10, seconds=4.0, metrics={}, state=None)) is None



def test_the_sweep_estimate_uses_the_wall_time_between_epochs_and_programs_per_variant():
    """Wall-clock time beyond the epochs' own (evaluation, files; finishing one program and
    starting the next) counts, and a program still to come is priced by the measured
    programs most like it: its variant at its batch size, else its batch size, else all."""
    from types import SimpleNamespace

    from bnlab.report.progress import SweepTiming

    def program(variant, batch):
        return SimpleNamespace(points=[SimpleNamespace(name=f"{variant}@batch={batch}",
                                                       variant=variant, batch_size=batch)],
                               members=range(2))

    plan = [program("plain", 8), program("bn", 8), program("bn", 8 * 16), program("bn", 16)]
    now = [0.0]
    timing = SweepTiming(plan, epochs=3, clock=lambda: now[0])

    def epoch(point, number, seconds, at):
        now[0] = at
        return timing.after_epoch(point, EpochRecord(
            epoch=number, epochs=3, steps=10, seconds=seconds, metrics={}, state=None,
            seeds=(42, 43)))

    timing.compiled(2.0)
    first = epoch("plain@batch=8", 1, 2.0, at=4.0)  # 1 s per member-epoch
    # Left: 2 epochs here (4 s), then 3 programs × (2 s compiling + 3 epochs × 2 s).
    assert first.endswith("about 28 s of training left in this sweep, then its figures")
    assert epoch("plain@batch=8", 2, 2.0, at=6.5) is None  # 0.5 s between epochs
    assert epoch("plain@batch=8", 3, 2.0, at=9.0) is None
    # bn: 2 s per member-epoch; 3 s from plain's last epoch to bn's first beyond its own 4 s.
    second = epoch("bn@batch=8", 1, 4.0, at=16.0)
    # Left: 2 epochs here, 2 × (4 + 0.5) = 9 s; bn@128 (no program of batch 128 measured,
    # so all of them: 1.5 s per member-epoch): 3 s to start + 3 × (3 + 0.5) = 13.5 s;
    # bn@16 (none of batch 16 either): 13.5 s. 36 s in all.
    assert second.endswith("about 36 s of training left in this sweep, then its figures")
    epoch("bn@batch=8", 2, 4.0, at=20.5)  # bn@8's last epochs, then bn@128's first
    epoch("bn@batch=8", 3, 4.0, at=25.0)
    third = epoch("bn@batch=128", 1, 1.2, at=29.2)  # 0.6 s per member-epoch, 3 s to start
    # 2 × (1.2 + 0.5) = 3.4 s here; bn@16 priced by all three (mean 1.2 s per member-epoch),
    # starting in 3 s: 3 + 3 × (2.4 + 0.5) = 11.7 s. 15.1 s in all.
    assert third.endswith("about 15 s of training left in this sweep, then its figures")

def test_recalibrate_names_the_points_it_skipped_once_per_reason_in_one_line(tmp_path):
    """A learning-rate sweep of a plain and a BN model: twelve points, six recalibrated. The
    six skipped are one line (three named, the count of the rest), not six; the saved files
    one line, not six."""
    from types import SimpleNamespace

    from bnlab.config.files import parse_experiment
    from bnlab.report.console import recalibration_outcome
    from bnlab.store.runs import Run

    rates = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]
    config = parse_experiment({
        "name": "sweep", "variants": [{"name": "plain", "model": "baseline"},
                                      {"name": "bn", "model": "bn_after"}],
        "sweep": {"optimizer.learning_rate": rates}})
    run = Run(path=tmp_path, config=config, environment={}, summary=None, histories={})
    done = [SimpleNamespace(point=p.name) for p in config.points if p.name.startswith("bn")]
    assert len(config.points) == 12 and len(done) == 6
    assert recalibration_outcome(run, done, variants_asked=False) == [
        "skipped plain@learning_rate=0.001, plain@learning_rate=0.003, "
        "plain@learning_rate=0.01 and 3 more: no BatchNorm layer, nothing to recalibrate",
        f"saved recalibrated.safetensors beside the checkpoint of each of 6 points in {tmp_path}"]
    one = [SimpleNamespace(point="bn@learning_rate=0.1")]
    skipped_plain, skipped_bn, saved = recalibration_outcome(run, one, variants_asked=True)
    assert skipped_plain.endswith("and 3 more: no BatchNorm layer, nothing to recalibrate")
    assert skipped_bn == ("skipped bn@learning_rate=0.001, bn@learning_rate=0.003, "
                          "bn@learning_rate=0.01 and 2 more: not asked for (--variant)")
    assert saved == f"saved {tmp_path / 'bn@learning_rate=0.1' / 'recalibrated.safetensors'}"
