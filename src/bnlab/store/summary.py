"""A finished run's ``summary.json``: final and test metrics per variant, and the verdicts.

    {"<variant>": {"seeds": [42, …], "final": {"loss": […], "accuracy": […], "val_loss": […],
                   "val_accuracy": […]}, "test_loss": […], "test_accuracy": […],
                   "epoch_seconds": […], "compile_seconds": 1.6},
     …,
     "comparisons": [<PairedComparison fields>, …]}      seed-paired, Holm-adjusted; NaN → null

It is written last, so its presence marks a complete run.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.analysis.stats import PairedComparison
from bnlab.io import atomic_write_json
from bnlab.train.loop import METRICS


@dataclass(frozen=True, eq=False)
class VariantSummary:
    """One variant's outcome: every array is ``(seeds,)``, ``final`` after the last epoch."""

    seeds: tuple[int, ...]
    final: Mapping[str, np.ndarray]
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    epoch_seconds: tuple[float, ...] = ()
    compile_seconds: float = float("nan")

    @property
    def seconds_per_epoch(self) -> float:
        """Median seconds of the epochs after the first (all seeds together)."""
        steady = self.epoch_seconds[1:] or self.epoch_seconds
        return statistics.median(steady) if steady else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"seeds": list(self.seeds), "final": {m: self.final[m] for m in METRICS},
                "test_loss": self.test_loss, "test_accuracy": self.test_accuracy,
                "epoch_seconds": list(self.epoch_seconds),
                "compile_seconds": self.compile_seconds}

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
        seeds = tuple(int(s) for s in data["seeds"])

        def per_seed(values: Any, name: str) -> np.ndarray:
            array = np.asarray(values, np.float64)
            if array.shape != (len(seeds),):
                raise ValueError(f"{where} {name} holds {array.shape} values for "
                                 f"{len(seeds)} seeds")
            return array

        return cls(seeds, {m: per_seed(v, f"final.{m}") for m, v in data["final"].items()},
                   per_seed(data["test_loss"], "test_loss"),
                   per_seed(data["test_accuracy"], "test_accuracy"),
                   tuple(float(s) for s in data.get("epoch_seconds", ())),
                   float(data.get("compile_seconds", float("nan"))))


def write_summary(run_dir: Path, variants: Mapping[str, VariantSummary],
                  comparisons: Sequence[PairedComparison]) -> None:
    """``run_dir/summary.json`` (atomically); NaN in a comparison becomes JSON null."""
    document: dict[str, Any] = {name: v.to_dict() for name, v in variants.items()}
    document["comparisons"] = [
        {key: (None if isinstance(value, float) and not np.isfinite(value) else value)
         for key, value in dataclasses.asdict(c).items()}
        for c in comparisons]
    atomic_write_json(run_dir / "summary.json", document)


def read_summary(data: Any, variants: Sequence[str]) -> dict[str, VariantSummary]:
    """The variants of a parsed ``summary.json``, ``variants`` in that order; a missing one
    is a ``ValueError``."""
    if not isinstance(data, dict):
        raise ValueError("summary.json is not a JSON object")
    return {name: VariantSummary.from_dict(data.get(name), f"summary.json[{name!r}]")
            for name in variants}
