"""BatchNorm's train/inference gap, seed by seed.

In training a BatchNorm layer normalizes with the statistics of the batch; in inference with
its moving statistics. A model's gap is the difference between what it scores in the two
modes on the same validation set (``train.loop.GAP_METRICS``: batches of the training batch
size, no dropout):

    gap = val_accuracy (inference, moving statistics) − val_batchstats_accuracy

per seed, compared as a seed-paired t-test (``analysis.stats.compare_paired``), the variants'
tests Holm-adjusted together. A negative gap is the familiar complaint — accuracy that drops
at evaluation — from moving statistics that lag the weights (a momentum too high for the
number of steps) or batches too small for their statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from bnlab.analysis.stats import PairedComparison, compare_paired, holm

INFERENCE, BATCH = "val_accuracy", "val_batchstats_accuracy"


@dataclass(frozen=True)
class Gap:
    """One variant's final gap: ``inference`` and ``batch`` ``(seeds,)`` (the seeds that
    did not diverge) and their paired comparison (``comparison.mean_difference`` is the
    mean gap, inference minus batch statistics)."""

    variant: str
    inference: np.ndarray
    batch: np.ndarray
    comparison: PairedComparison

    @property
    def sentence(self) -> str:
        """The comparison as one sentence, from the numbers."""
        return self.comparison.verdict


def final_gaps(histories: Mapping[str, Mapping[str, np.ndarray]],
               epochs: int | None = None) -> list[Gap]:
    """The gap of every variant whose ``histories[variant]`` (``{metric: (seeds, epochs)}``)
    has the batch-statistics metric, at its last epoch, over the seeds with finite values
    (a variant with none is left out); Holm-adjusted over the variants."""
    gaps = []
    for name, history in histories.items():
        if BATCH not in history or INFERENCE not in history:
            continue
        inference = np.asarray(history[INFERENCE], np.float64)[:, -1]
        batch = np.asarray(history[BATCH], np.float64)[:, -1]
        finite = np.isfinite(inference) & np.isfinite(batch)
        if not finite.any():
            continue
        comparison = compare_paired(
            inference[finite], batch[finite], name_a=f"{name} in inference mode",
            name_b=f"{name} with batch statistics", metric="validation accuracy",
            epochs=epochs)
        gaps.append(Gap(name, inference[finite], batch[finite], comparison))
    if len(gaps) > 1 and all(g.comparison.n > 1 for g in gaps):
        family = holm([g.comparison.p_value for g in gaps])
        gaps = [replace(g, comparison=compare_paired(
            g.inference, g.batch, name_a=g.comparison.name_a, name_b=g.comparison.name_b,
            metric="validation accuracy", epochs=epochs, holm=adjusted))
            for g, adjusted in zip(gaps, family, strict=True)]
    return gaps
