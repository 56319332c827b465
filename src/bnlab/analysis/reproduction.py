"""Whether a run retrained from another followed its trajectory (``bnlab probe RUN``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# Float32 histories of the same program agree to rounding; another device layout's may
# differ by more (docs/sweeps.md), which the sentence then says.
SAME = 1e-5


@dataclass(frozen=True)
class Reproduction:
    """How far a retrained run's histories are from the original's: ``worst``, the largest
    relative difference of any value (``None`` when they cannot be compared), and the
    sentence that says it."""

    worst: float | None
    sentence: str

    @property
    def reproduces(self) -> bool:
        return self.worst is not None and self.worst <= SAME


def reproduction(original: Mapping[str, Mapping[str, np.ndarray]],
                 retrained: Mapping[str, Mapping[str, np.ndarray]], *, name: str,
                 comparable: bool = True) -> Reproduction:
    """Compare the histories (``{variant: {metric: (seeds, epochs)}}``) of ``retrained`` with
    those of the run ``name`` it retrains; ``comparable``: both have the same seeds and
    epochs."""
    if not comparable:
        return Reproduction(None, "not compared with the original: it trained other seeds "
                                  "or epochs")
    worst = 0.0
    for variant, history in original.items():
        if variant not in retrained:
            continue
        for metric, values in history.items():
            ours = np.asarray(retrained[variant].get(metric, np.array([])))
            if ours.shape != np.shape(values):
                return Reproduction(None, f"not compared with the original: {variant} has "
                                          "other epochs")
            scale = np.maximum(np.abs(values), 1e-12)
            with np.errstate(invalid="ignore"):
                difference = np.abs(ours - values) / scale
            worst = max(worst, float(np.nanmax(difference, initial=0.0)))
    if worst <= SAME:
        return Reproduction(worst, f"the retrained run reproduces {name}: every history value "
                                   f"within {worst:.1e} relative (recording the measures "
                                   "changed nothing)")
    return Reproduction(worst, f"the retrained run differs from {name} by up to {worst:.1e} "
                               "relative (float rounding of another device layout grows over "
                               "training; JAX_NUM_CPU_DEVICES as the original run had it "
                               "reproduces it)")
