"""A run's recalibrations (``experiments.recalibrate``), read back: each point's
``recalibrated`` checkpoint beside its trained one, whose metadata holds the batches and,
per seed, the validation and test loss and accuracy before and after.

    <run>/<variant>/recalibrated.safetensors   the state with the recomputed statistics
    <run>/<variant>/recalibrated.json          its metadata (batches, before, after)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnlab.config.experiment import ExperimentConfig
from bnlab.store.checks import json_numbers
from bnlab.train.checkpoint import CheckpointError, read_checkpoint

STEM = "recalibrated"
MEASURES = ("val_loss", "val_accuracy", "test_loss", "test_accuracy")


@dataclass(frozen=True)
class Recalibration:
    """One point's recalibration: ``before`` and ``after`` hold each of ``MEASURES`` per seed,
    ``(seeds,)`` (NaN for a seed that diverged)."""

    point: str
    seeds: tuple[int, ...]
    batches: int
    before: dict[str, np.ndarray]
    after: dict[str, np.ndarray]


def read_recalibrations(run_dir: Path, config: ExperimentConfig
                        ) -> tuple[list[Recalibration], list[str]]:
    """The recalibrations a run folder holds, in the config's point order, read from the
    checkpoints' own metadata (their digests checked), and a line for each one that is
    damaged."""
    found, problems = [], []
    for point in config.points:
        stem = run_dir / point.name / STEM
        if not stem.with_suffix(".safetensors").exists():
            continue
        try:
            _, data = read_checkpoint(stem)
            found.append(Recalibration(
                point.name, tuple(data["seeds"]), int(data["batches"]),
                {m: np.array(json_numbers(data["before"][m], m)) for m in MEASURES},
                {m: np.array(json_numbers(data["after"][m], m)) for m in MEASURES}))
        except CheckpointError as err:
            problems.append(str(err))
        except (KeyError, TypeError, ValueError) as err:
            problems.append(f"{stem.with_suffix('.safetensors')} is not a recalibration "
                            f"({err})")
    return found, problems
