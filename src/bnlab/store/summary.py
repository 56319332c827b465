"""A finished run's ``summary.json``: final and test metrics per variant, and the verdicts.

    {"<variant>": {"seeds": [42, …], "final": {"loss": […], "accuracy": […], "val_loss": […],
                   "val_accuracy": […]}, "test_loss": […], "test_accuracy": […],
                   "epoch_seconds": […], "compile_seconds": 1.6,
                   "diverged": {"43": {"epoch": 3, "step": 517}}},
     …,
     "comparisons": [<PairedComparison fields>, …],      seed-paired, Holm-adjusted
     "left_out": {"<variant>": "diverged: seed 43 at epoch 3, step 517"},
     "figures": ["curves.png", "curves.svg"]}              the figures drawn with it

NaN (a diverged seed's metrics, a one-seed test) is stored as null. A variant with a
diverged seed takes part in no verdict (``verdicts``): ``left_out`` says why. The file is
written last, so its presence marks a finished run.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.analysis.stats import PairedComparison, compare_final_accuracy
from bnlab.io import atomic_write_json
from bnlab.train.loop import METRICS, Divergence, History


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
        seeds = tuple(int(s) for s in data["seeds"])

        def per_seed(values: Any, name: str) -> np.ndarray:
            if not isinstance(values, list):
                raise ValueError(f"{where} {name} is not a list")
            array = np.array([np.nan if v is None else v for v in values], np.float64)
            if array.shape != (len(seeds),):
                raise ValueError(f"{where} {name} holds {array.shape} values for "
                                 f"{len(seeds)} seeds")
            return array

        compile_seconds = data.get("compile_seconds")
        return cls(seeds, {m: per_seed(v, f"final.{m}") for m, v in data["final"].items()},
                   per_seed(data["test_loss"], "test_loss"),
                   per_seed(data["test_accuracy"], "test_accuracy"),
                   tuple(float(s) for s in data.get("epoch_seconds", ())),
                   float("nan") if compile_seconds is None else float(compile_seconds),
                   divergences_from_json(data.get("diverged", {}), f"{where} diverged"))


def nan_as_null(values: Any) -> Any:
    """``values`` (a number or an array) for JSON: NaN becomes ``None`` (null)."""
    array = np.asarray(values, np.float64)
    if array.ndim == 0:
        return None if np.isnan(array) else float(array)
    return [None if np.isnan(v) else float(v) for v in array]


def divergences_to_json(diverged: Mapping[int, Divergence]) -> dict[str, dict[str, int]]:
    """``{seed: Divergence}`` as ``{"43": {"epoch": 3, "step": 517}}``."""
    return {str(seed): {"epoch": d.epoch, "step": d.step} for seed, d in diverged.items()}


def divergences_from_json(data: Any, where: str) -> dict[int, Divergence]:
    """Inverse of ``divergences_to_json``; a malformed value is a ``ValueError``."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} is not a JSON object")
    diverged = {}
    for seed, value in data.items():
        if (not isinstance(value, dict) or not isinstance(value.get("epoch"), int)
                or not isinstance(value.get("step"), int | None)):
            raise ValueError(f"{where}[{seed!r}] is not {{\"epoch\": e, \"step\": s}}")
        diverged[int(seed)] = Divergence(value["epoch"], value["step"])
    return diverged


def verdicts(histories: Mapping[str, History],
             epochs: int) -> tuple[list[PairedComparison], dict[str, str]]:
    """The seed-paired verdicts on the final validation accuracy among the variants none of
    whose seeds diverged, and for each variant left out, why (``"diverged: seed 43 at epoch
    3, step 517"``): a diverged seed has no final accuracy to pair."""
    left_out = {name: "diverged: " + "; ".join(f"seed {seed} at {d}"
                                               for seed, d in sorted(h.diverged.items()))
                for name, h in histories.items() if h.diverged}
    kept = {name: h.per_seed for name, h in histories.items() if name not in left_out}
    return (compare_final_accuracy(kept, epochs) if len(kept) > 1 else []), left_out


def write_summary(run_dir: Path, variants: Mapping[str, VariantSummary],
                  comparisons: Sequence[PairedComparison], left_out: Mapping[str, str], *,
                  figures: Sequence[str] = ()) -> None:
    """``run_dir/summary.json`` (atomically); NaN in a comparison becomes JSON null;
    ``figures``: the figure files drawn for the run, relative to its folder."""
    document: dict[str, Any] = {name: v.to_dict() for name, v in variants.items()}
    document["comparisons"] = [
        {key: (None if isinstance(value, float) and not np.isfinite(value) else value)
         for key, value in dataclasses.asdict(c).items()}
        for c in comparisons]
    document["left_out"] = dict(left_out)
    document["figures"] = list(figures)
    atomic_write_json(run_dir / "summary.json", document)


def summary_figures(data: Any) -> list[str]:
    """The figure files a parsed ``summary.json`` lists; a malformed list is a
    ``ValueError``."""
    figures = data.get("figures", []) if isinstance(data, dict) else []
    if not isinstance(figures, list) or not all(
            isinstance(f, str) and f and ".." not in Path(f).parts and not Path(f).is_absolute()
            for f in figures):
        raise ValueError("summary.json 'figures' is not a list of file names in the run")
    return figures


def read_summary(data: Any, variants: Sequence[str]) -> dict[str, VariantSummary]:
    """The variants of a parsed ``summary.json``, ``variants`` in that order; a missing one
    is a ``ValueError``."""
    if not isinstance(data, dict):
        raise ValueError("summary.json is not a JSON object")
    return {name: VariantSummary.from_dict(data.get(name), f"summary.json[{name!r}]")
            for name in variants}
