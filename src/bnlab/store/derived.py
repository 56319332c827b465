"""The files derived from a variant's record (``store.record``): per-seed history CSVs in
Keras's ``CSVLogger`` format and per-epoch statistics over seeds.

    <variant>/seed-<s>/history.csv    epoch,accuracy,loss,val_accuracy,val_loss (0-based epoch)
                                      [,val_batchstats_accuracy,val_batchstats_loss]
    <variant>/statistics.csv          epoch,seeds,<metric>_mean,<metric>_ci95,…
                                      [,bn_gap_accuracy_mean,bn_gap_accuracy_ci95,…]

Their bytes are a function of the record's history (``derived_files``), so the record holds
their SHA-256 digests (written with it, every epoch) and reading a run checks a file by its
digest (``derived_damage``), never by recomputing it; a damaged one is rewritten from the
record by a resume.

A model with BatchNorm also has the validation set normalized with batch statistics
(``train.loop.GAP_METRICS``); its statistics add BatchNorm's train/inference gap, seed by
seed: ``bn_gap_accuracy = val_accuracy − val_batchstats_accuracy`` and ``bn_gap_loss =
val_loss − val_batchstats_loss`` (inference minus training-mode normalization).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bnlab.analysis.stats import summarize_over_seeds
from bnlab.io import atomic_write_bytes
from bnlab.store.checks import file_digest_problem
from bnlab.train.history import History

CSV_COLUMNS = ("epoch", "accuracy", "loss", "val_accuracy", "val_loss")
METRIC_COLUMNS = CSV_COLUMNS[1:]
GAP_COLUMNS = ("val_batchstats_accuracy", "val_batchstats_loss")
GAPS = {"bn_gap_accuracy": ("val_accuracy", "val_batchstats_accuracy"),
        "bn_gap_loss": ("val_loss", "val_batchstats_loss")}


def metric_columns(history: Mapping[str, object]) -> tuple[str, ...]:
    """The CSV metric columns of a history with these metrics: Keras's, and the
    batch-statistics ones where it has them."""
    return METRIC_COLUMNS + (GAP_COLUMNS if set(GAP_COLUMNS) <= set(history) else ())


def history_csv(history: Mapping[str, Sequence[float]]) -> str:
    """Keras CSVLogger format: 0-based ``epoch`` first, then metrics in sorted order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = metric_columns(history)
    writer.writerow(("epoch", *columns))
    for epoch in range(len(history["loss"])):
        writer.writerow([epoch] + [repr(float(history[c][epoch])) for c in columns])
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


def derived_files(history: History) -> dict[str, bytes]:
    """``{path relative to the variant's folder: bytes}`` of the files derived from
    ``history``: each seed's ``seed-<s>/history.csv`` and, once an epoch is done,
    ``statistics.csv``."""
    per_seed = history.per_seed
    files = {}
    for i, seed in enumerate(history.seeds):
        rows = {m: per_seed[m][i] for m in metric_columns(per_seed)}
        files[f"seed-{seed}/history.csv"] = history_csv(rows).encode()
    if history.epochs:
        files["statistics.csv"] = statistics_csv(per_seed).encode()
    return files


def digests(files: Mapping[str, bytes]) -> dict[str, str]:
    """The SHA-256 of each file's bytes, as a record keeps them."""
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def write_derived(variant_dir: Path, files: Mapping[str, bytes]) -> None:
    """Write ``derived_files`` into the variant's folder, each atomically."""
    for name, data in files.items():
        atomic_write_bytes(variant_dir / name, data)


def derived_damage(variant_dir: Path, recorded: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(file relative to the variant's folder, what is wrong)`` for each file the record
    lists (``recorded``: their digests) that is missing or holds other bytes."""
    return [(name, problem) for name, sha256 in recorded.items()
            if (problem := file_digest_problem(variant_dir / name, sha256, "its record"))]


def statistics_csv(per_seed: Mapping[str, np.ndarray], confidence: float = 0.95) -> str:
    """Per-epoch statistics over seeds of ``per_seed[metric]: (seeds, epochs)``: for each
    metric its mean and the half-width of the Student-t confidence interval (NaN for one
    seed), columns ``epoch, seeds, <metric>_mean, <metric>_ci95, …``. ``seeds`` counts the
    seeds with finite values that epoch: a diverged seed (NaN from its epoch on) is left
    out of the statistics from then on, and an epoch no seed finished is NaN."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = {c: np.asarray(per_seed[c]) for c in metric_columns(per_seed)}
    if set(GAP_COLUMNS) <= set(columns):
        columns.update({gap: columns[inference] - columns[training]
                        for gap, (inference, training) in GAPS.items()})
    writer.writerow(["epoch", "seeds"] + [f"{c}_{part}" for c in columns
                                          for part in ("mean", "ci95")])
    loss = np.asarray(per_seed["loss"])
    for epoch in range(loss.shape[1]):
        alive = np.isfinite(loss[:, epoch])
        row = []
        for table in columns.values():
            values = table[alive, epoch]
            if values.size and np.isfinite(values).all():
                summary = summarize_over_seeds(values, confidence)
                row += [float(summary.mean), float(summary.ci_half_width)]
            else:
                row += [float("nan")] * 2
        writer.writerow([epoch, int(alive.sum())] + [repr(v) for v in row])
    return out.getvalue()
