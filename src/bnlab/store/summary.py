"""A finished run's ``summary.json``, derived from its variants' records: final and test
metrics per variant, the verdicts and the figures drawn with them.

    {"<variant>": {"seeds": [42, …], "final": {"loss": […], "accuracy": […], "val_loss": […],
                   "val_accuracy": […]}, "test_loss": […], "test_accuracy": […],
                   "epoch_seconds": […], "compile_seconds": 1.6,
                   "diverged": {"43": {"epoch": 3, "step": 517}}},
     …,
     "comparisons": [<PairedComparison fields>, …],      seed-paired, Holm-adjusted
     "left_out": {"<variant>": "diverged: seed 43 at epoch 3, step 517"},
     "figures": {"curves.png": "<sha256>", …},           the figures drawn with it
     "records": {"<variant>": "<sha256>", …},            the records it was derived from
     "format": 2, "sha256": "<digest of everything above>"}

NaN (a diverged seed's metrics, a one-seed test) is stored as null. A variant with a
diverged seed takes part in no verdict (``verdicts``): ``left_out`` says why. The file is
written last. Reading it checks its own digest, that the records it names are the run's
(``summary_damage``) and the figures' digests; nothing is recomputed. Summaries of format 1
(bnlab before records held the test metrics) have no ``records``, ``format`` or ``sha256``,
and are the only copy of those runs' test metrics (``read_summary``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.analysis.stats import PairedComparison, compare_final_accuracy, compare_pairs
from bnlab.analysis.sweep import SweepPoint, best_points, point_rows, sweep_pairs
from bnlab.config.experiment import ExperimentConfig
from bnlab.errors import BnlabError
from bnlab.io import atomic_write_bytes, json_default, read_json, read_regular
from bnlab.limits import RUN_FILE_BYTES
from bnlab.store.checks import beyond_float32, file_digest_problem, is_sha256, json_numbers
from bnlab.store.record import (
    FORMAT,
    VariantRecord,
    divergences_from_json,
    divergences_to_json,
    nan_as_null,
)
from bnlab.train.history import METRICS, Divergence, History


@dataclass(frozen=True, eq=False)
class VariantSummary:
    """One variant's outcome: every array is ``(seeds,)``, ``final`` after the last epoch."""

    seeds: tuple[int, ...]
    final: Mapping[str, np.ndarray]
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    epoch_seconds: tuple[float, ...] = ()
    compile_seconds: float = float("nan")
    diverged: Mapping[int, Divergence] = dataclasses.field(default_factory=dict)

    @property
    def seconds_per_epoch(self) -> float:
        """Median seconds of the epochs after the first (all seeds together)."""
        steady = self.epoch_seconds[1:] or self.epoch_seconds
        return statistics.median(steady) if steady else float("nan")

    @classmethod
    def of(cls, record: VariantRecord) -> VariantSummary:
        """What a finished variant's record says (its ``test`` metrics are there)."""
        history, missing = record.history, np.full(len(record.seeds), np.nan)
        return cls(record.seeds, {m: history.final(m) for m in METRICS},
                   missing if record.test_loss is None else record.test_loss,
                   missing if record.test_accuracy is None else record.test_accuracy,
                   tuple(history.epoch_seconds), record.compile_seconds,
                   dict(history.diverged))

    def to_dict(self) -> dict[str, Any]:
        return {"seeds": list(self.seeds),
                "final": {m: nan_as_null(self.final[m]) for m in METRICS},
                "test_loss": nan_as_null(self.test_loss),
                "test_accuracy": nan_as_null(self.test_accuracy),
                "epoch_seconds": list(self.epoch_seconds),
                "compile_seconds": nan_as_null(self.compile_seconds),
                "diverged": divergences_to_json(self.diverged)}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> VariantSummary:
        """Read back ``to_dict``; a missing or mistyped field is a ``ValueError`` naming
        ``where`` and the field."""
        if not isinstance(data, dict):
            raise ValueError(f"{where} is not a JSON object")
        for key, kind in (("seeds", list), ("final", dict), ("test_loss", list),
                          ("test_accuracy", list)):
            if not isinstance(data.get(key), kind):
                raise ValueError(f"{where} lacks {key!r}")
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in data["seeds"]):
            raise ValueError(f"{where} seeds are not integers")
        if set(data["final"]) != set(METRICS):
            raise ValueError(f"{where} final holds other metrics than {', '.join(METRICS)}")
        seeds = tuple(data["seeds"])

        def per_seed(values: Any, name: str) -> np.ndarray:
            array = np.array(json_numbers(values, f"{where} {name}"), np.float64)
            if array.shape != (len(seeds),):
                raise ValueError(f"{where} {name} holds {array.shape} values for "
                                 f"{len(seeds)} seeds")
            if beyond_float32(array):
                raise ValueError(f"{where} {name} holds a value beyond float32")
            return array

        compile_seconds = data.get("compile_seconds")
        return cls(seeds, {m: per_seed(v, f"final.{m}") for m, v in data["final"].items()},
                   per_seed(data["test_loss"], "test_loss"),
                   per_seed(data["test_accuracy"], "test_accuracy"),
                   tuple(json_numbers(data.get("epoch_seconds", []), f"{where} epoch_seconds")),
                   json_numbers([compile_seconds], f"{where} compile_seconds")[0],
                   divergences_from_json(data.get("diverged", {}), f"{where} diverged"))


def verdicts(histories: Mapping[str, History], epochs: int,
             points: Sequence[SweepPoint] | None = None
             ) -> tuple[list[PairedComparison], dict[str, str]]:
    """The seed-paired verdicts on the final validation accuracy among the variants none of
    whose seeds diverged, and for each variant left out, why (``"diverged: seed 43 at epoch
    3, step 517"``): a diverged seed has no final accuracy to pair. Without ``points`` every
    pair is compared; with a sweep's ``points`` (``sweep_points``) the pairs of
    ``analysis.sweep.sweep_pairs``: variants at equal axis values and each at its best."""
    left_out = left_out_of_verdicts(histories)
    kept = {name: h.per_seed for name, h in histories.items() if name not in left_out}
    if len(kept) < 2:
        return [], left_out
    if points is None:
        return compare_final_accuracy(kept, epochs), left_out
    finals = {name: np.asarray(h["val_accuracy"])[:, -1] for name, h in kept.items()}
    kept_points = [p for p in points if p.name in kept]
    rows = point_rows(kept_points, finals, finals)
    best = {variant: row.point.name for variant, row in best_points(rows).items()}
    pairs = sweep_pairs(kept_points, best)
    return (compare_pairs(finals, pairs, epochs=epochs) if pairs else []), left_out


def sweep_points(config: ExperimentConfig) -> list[SweepPoint] | None:
    """``config``'s points as ``analysis.sweep`` takes them; ``None`` without a sweep."""
    if not config.sweep:
        return None
    return [SweepPoint(p.name, p.variant, dict(p.values)) for p in config.points]


def left_out_of_verdicts(histories: Mapping[str, History]) -> dict[str, str]:
    """The variants ``verdicts`` leaves out, each with why: those with a diverged seed."""
    return {name: "diverged: " + "; ".join(f"seed {seed} at {d}"
                                           for seed, d in sorted(h.diverged.items()))
            for name, h in histories.items() if h.diverged}


def write_summary(run_dir: Path, config: ExperimentConfig,
                  records: Mapping[str, VariantRecord], *, figures: Sequence[str] = ()) -> None:
    """``run_dir/summary.json`` (atomically) from the finished ``records`` of every point of
    ``config``; ``figures``: the figure files drawn for the run, relative to its folder,
    recorded with the SHA-256 of their bytes."""
    names = [p.name for p in config.points]
    histories = {name: records[name].history for name in names}
    comparisons, left_out = verdicts(histories, config.epochs, sweep_points(config))
    document: dict[str, Any] = {name: VariantSummary.of(records[name]).to_dict()
                                for name in names}
    document["comparisons"] = comparisons_to_json(comparisons)
    document["left_out"] = dict(left_out)
    document["figures"] = {name: hashlib.sha256(read_regular(run_dir / name,
                                                             limit=RUN_FILE_BYTES)).hexdigest()
                           for name in figures}
    document["records"] = {name: records[name].sha256 for name in names}
    document["format"] = FORMAT
    document = json.loads(json.dumps(document, default=json_default))  # as read back
    document["sha256"] = _document_digest(document)
    atomic_write_bytes(run_dir / "summary.json",
                       (json.dumps(document, indent=2) + "\n").encode())


def _document_digest(document: Mapping[str, Any]) -> str:
    """SHA-256 of a parsed summary without its ``sha256``, in canonical JSON."""
    body = {key: value for key, value in document.items() if key != "sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def summary_damage(data: Mapping[str, Any], records: Mapping[str, VariantRecord]
                   ) -> str | None:
    """What is wrong with a parsed summary of the current format, or ``None``: its own
    digest, and the records it was derived from against the run's ``records``."""
    if data.get("sha256") != _document_digest(data):
        return "is damaged: its content does not match its digest"
    derived_from = data.get("records")
    if not isinstance(derived_from, dict) or set(derived_from) != set(records) or any(
            derived_from[name] != record.sha256 for name, record in records.items()):
        return "was derived from other records than the run's (resume the run to rewrite it)"
    return None


def figure_damage(run_dir: Path, figures: Mapping[str, str | None]) -> list[tuple[str, str]]:
    """``(figure, what is wrong)`` for each figure a summary lists that is missing or, where
    it records a digest, holds other bytes."""
    damage = []
    for name, sha256 in figures.items():
        path = run_dir / name
        problem = (file_digest_problem(path, sha256, "summary.json") if sha256 is not None
                   else None if path.is_file() else "is missing")
        if problem:
            damage.append((name, problem))
    return damage


def listed_figures(run_dir: Path) -> list[str]:
    """The figures a run's ``summary.json`` lists (``[]`` when it cannot be read)."""
    try:
        return list(summary_figures(read_json(run_dir / "summary.json", fix="")))
    except BnlabError:
        return []


def comparisons_to_json(comparisons: Sequence[PairedComparison]) -> list[dict[str, Any]]:
    """The comparisons as ``summary.json`` holds them: their fields, NaN as null."""
    return [{key: (None if isinstance(value, float) and not np.isfinite(value) else value)
             for key, value in dataclasses.asdict(c).items()}
            for c in comparisons]


def summary_figures(data: Any) -> dict[str, str | None]:
    """The figure files a parsed ``summary.json`` lists, each with its SHA-256 (``None`` in
    summaries from before they were recorded, which list the names only); a malformed
    entry is a ``ValueError``."""
    figures = data.get("figures", []) if isinstance(data, dict) else []
    if isinstance(figures, list):
        figures = dict.fromkeys(figures) if all(isinstance(f, str) for f in figures) else None
    if not isinstance(figures, dict) or not all(
            _figure_name(name) and (sha256 is None or is_sha256(sha256))
            for name, sha256 in figures.items()):
        raise ValueError("summary.json 'figures' is not a list of figure files in the run "
                         "with their digests")
    return figures


def _figure_name(name: str) -> bool:
    """A figure's file name relative to the run folder: ``.png`` or ``.svg``, inside it."""
    path = Path(name) if isinstance(name, str) and "\0" not in name else None
    return (path is not None and path.suffix in (".png", ".svg") and not path.is_absolute()
            and ".." not in path.parts)


def read_summary(data: Any, variants: Sequence[str]) -> dict[str, VariantSummary]:
    """The variants of a parsed ``summary.json``, ``variants`` in that order; a missing one
    is a ``ValueError``."""
    if not isinstance(data, dict):
        raise ValueError("summary.json is not a JSON object")
    return {name: VariantSummary.from_dict(data.get(name), f"summary.json[{name!r}]")
            for name in variants}
