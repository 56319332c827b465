"""A finished run's ``summary.json``: final and test metrics per variant, and the verdicts.

    {"<variant>": {"seeds": [42, …], "final": {"loss": […], "accuracy": […], "val_loss": […],
                   "val_accuracy": […]}, "test_loss": […], "test_accuracy": […],
                   "epoch_seconds": […], "compile_seconds": 1.6,
                   "diverged": {"43": {"epoch": 3, "step": 517}}},
     …,
     "comparisons": [<PairedComparison fields>, …],      seed-paired, Holm-adjusted
     "left_out": {"<variant>": "diverged: seed 43 at epoch 3, step 517"},
     "figures": {"curves.png": "<sha256>", …}}            the figures drawn with it

NaN (a diverged seed's metrics, a one-seed test) is stored as null. A variant with a
diverged seed takes part in no verdict (``verdicts``): ``left_out`` says why. The file is
written last, so its presence marks a finished run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
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
from bnlab.io import atomic_write_json
from bnlab.store.checks import beyond_float32, json_numbers
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


def write_summary(run_dir: Path, variants: Mapping[str, VariantSummary],
                  comparisons: Sequence[PairedComparison], left_out: Mapping[str, str], *,
                  figures: Sequence[str] = ()) -> None:
    """``run_dir/summary.json`` (atomically); NaN in a comparison becomes JSON null;
    ``figures``: the figure files drawn for the run, relative to its folder, recorded with
    the SHA-256 of their bytes."""
    document: dict[str, Any] = {name: v.to_dict() for name, v in variants.items()}
    document["comparisons"] = comparisons_to_json(comparisons)
    document["left_out"] = dict(left_out)
    document["figures"] = {name: hashlib.sha256((run_dir / name).read_bytes()).hexdigest()
                           for name in figures}
    atomic_write_json(run_dir / "summary.json", document)


def comparisons_to_json(comparisons: Sequence[PairedComparison]) -> list[dict[str, Any]]:
    """The comparisons as ``summary.json`` holds them: their fields, NaN as null."""
    return [{key: (None if isinstance(value, float) and not np.isfinite(value) else value)
             for key, value in dataclasses.asdict(c).items()}
            for c in comparisons]


def verdicts_problem(data: Mapping[str, Any], histories: Mapping[str, History],
                     epochs: int, points: Sequence[SweepPoint] | None = None) -> str | None:
    """How the verdicts a parsed ``summary.json`` records differ from ``verdicts`` of
    ``histories`` (every variant's whole history), or ``None``. Numbers agree to a relative
    1e-9: a recomputation with other library versions may differ in the last digits."""
    try:
        comparisons, left_out = verdicts(histories, epochs, points)
    except BnlabError as err:  # a history with NaN where no seed diverged
        return f"records verdicts its histories cannot give ({err})"
    if data.get("left_out") != left_out:
        return "records other variants left out of the verdicts than their histories give"
    stored, wanted = data.get("comparisons"), comparisons_to_json(comparisons)
    if not isinstance(stored, list) or len(stored) != len(wanted) or not all(
            isinstance(s, dict) and s.keys() == w.keys()
            and all(_same_value(s[key], value) for key, value in w.items())
            for s, w in zip(stored, wanted, strict=False)):
        return "records other verdicts than the histories give"
    return None


def _same_value(stored: Any, wanted: Any) -> bool:
    if type(wanted) is float:
        return type(stored) is float and math.isclose(stored, wanted, rel_tol=1e-9)
    return type(stored) is type(wanted) and stored == wanted


def summary_figures(data: Any) -> dict[str, str | None]:
    """The figure files a parsed ``summary.json`` lists, each with its SHA-256 (``None`` in
    summaries from before they were recorded, which list the names only); a malformed
    entry is a ``ValueError``."""
    figures = data.get("figures", []) if isinstance(data, dict) else []
    if isinstance(figures, list):
        figures = dict.fromkeys(figures) if all(isinstance(f, str) for f in figures) else None
    if not isinstance(figures, dict) or not all(
            _figure_name(name) and (sha256 is None or _is_sha256(sha256))
            for name, sha256 in figures.items()):
        raise ValueError("summary.json 'figures' is not a list of figure files in the run "
                         "with their digests")
    return figures


def _figure_name(name: str) -> bool:
    """A figure's file name relative to the run folder: ``.png`` or ``.svg``, inside it."""
    path = Path(name) if isinstance(name, str) and "\0" not in name else None
    return (path is not None and path.suffix in (".png", ".svg") and not path.is_absolute()
            and ".." not in path.parts)


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(
        c in "0123456789abcdef" for c in value)


def read_summary(data: Any, variants: Sequence[str]) -> dict[str, VariantSummary]:
    """The variants of a parsed ``summary.json``, ``variants`` in that order; a missing one
    is a ``ValueError``."""
    if not isinstance(data, dict):
        raise ValueError("summary.json is not a JSON object")
    return {name: VariantSummary.from_dict(data.get(name), f"summary.json[{name!r}]")
            for name in variants}
