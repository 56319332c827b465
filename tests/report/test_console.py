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
