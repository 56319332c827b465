"""Per-seed history CSVs in Keras's ``CSVLogger`` format, and per-epoch statistics over seeds.

    <variant>/seed-<s>/history.csv    epoch,accuracy,loss,val_accuracy,val_loss (0-based epoch)
    <variant>/statistics.csv          epoch,seeds,<metric>_mean,<metric>_ci95,…
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bnlab.analysis.stats import summarize_over_seeds
from bnlab.io import atomic_write_bytes

CSV_COLUMNS = ("epoch", "accuracy", "loss", "val_accuracy", "val_loss")
METRIC_COLUMNS = CSV_COLUMNS[1:]


def history_csv(history: Mapping[str, Sequence[float]]) -> str:
    """Keras CSVLogger format: 0-based ``epoch`` first, then metrics in sorted order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for epoch in range(len(history["loss"])):
        writer.writerow([epoch] + [repr(float(history[c][epoch])) for c in METRIC_COLUMNS])
    return out.getvalue()


def read_history_csv(path: Path) -> dict[str, np.ndarray]:
    """Inverse of ``history_csv``: ``{metric: (epochs,)}``; a malformed file is a
    ``ValueError`` naming it."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    try:
        return {c: np.array([float(r[c]) for r in rows]) for c in METRIC_COLUMNS}
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path.name} is not a Keras-style history ({err})") from None


def write_histories(variant_dir: Path, seeds: Sequence[int],
                    per_seed: Mapping[str, np.ndarray]) -> None:
    """Each seed's ``history.csv`` from ``per_seed[metric]: (seeds, epochs)``."""
    for i, seed in enumerate(seeds):
        rows = {m: per_seed[m][i] for m in METRIC_COLUMNS}
        atomic_write_bytes(variant_dir / f"seed-{seed}" / "history.csv",
                           history_csv(rows).encode())


def statistics_csv(per_seed: Mapping[str, np.ndarray], confidence: float = 0.95) -> str:
    """Per-epoch statistics over seeds of ``per_seed[metric]: (seeds, epochs)``: for each
    metric its mean and the half-width of the Student-t confidence interval (NaN for one
    seed), columns ``epoch, seeds, <metric>_mean, <metric>_ci95, …``."""
    summaries = {c: summarize_over_seeds(np.asarray(per_seed[c]), confidence)
                 for c in METRIC_COLUMNS}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", "seeds"] + [f"{c}_{part}" for c in METRIC_COLUMNS
                                          for part in ("mean", "ci95")])
    for epoch in range(len(summaries["loss"].mean)):
        writer.writerow([epoch, summaries["loss"].n] + [
            repr(float(getattr(summaries[c], part)[epoch]))
            for c in METRIC_COLUMNS for part in ("mean", "ci_half_width")])
    return out.getvalue()
