"""Resuming a run is also repairing it: what to do with each variant, and the run files to
restore, before anything trains (``experiments.runner.run_experiment(resume=True)``).

A variant whose verified checkpoint is sound continues from it (or, finished, is only
evaluated again), its CSV files rewritten from the checkpoint's record; a variant whose
checkpoint or TensorBoard files are damaged or missing is retrained from the start, its old
files moved to ``.replaced/<time>/``; damaged run files are restored from the checkpoints'
copies.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnlab.config.experiment import ExperimentConfig
from bnlab.data.datasets import Splits
from bnlab.errors import BnlabError
from bnlab.io import atomic_write_json, read_json
from bnlab.store.provenance import record_resume, write_environment
from bnlab.store.reader import load_run
from bnlab.store.runs import REPAIR, Run, write_config


@dataclass(frozen=True)
class VariantPlan:
    """What a resume does with one variant: ``action`` is ``"train"`` (not started),
    ``"continue"`` (from ``from_epoch``), ``"keep"`` (finished and sound: evaluated again,
    its derived files rewritten) or ``"retrain"`` (from the start); ``reason`` says why."""

    action: str
    reason: str
    from_epoch: int = 0


# Files a resume rewrites from a sound checkpoint; damage elsewhere in a variant's record
# (its checkpoint, its TensorBoard files) can only be repaired by training it again.
REWRITTEN = ("history.csv", "statistics.csv", "checkpoint.json")


def resume_plan(run: Run, *, retry_diverged: bool = False) -> dict[str, VariantPlan]:
    """For every variant of ``run``, what resuming it does (``VariantPlan``)."""
    plans = {}
    for point in run.config.points:
        name = point.name
        damage = [d for d in run.damage if d.variant == name]
        lost = [d for d in damage if not d.file.endswith(REWRITTEN)]
        saved = run.saved.get(name)
        if lost:
            plans[name] = VariantPlan("retrain", f"{lost[0]}; retraining it from epoch 0")
        elif saved is None:
            started = (run.path / name).exists()
            plans[name] = (VariantPlan("retrain", "its record is damaged; retraining it from "
                                                  "epoch 0") if started
                           else VariantPlan("train", "not started"))
        elif saved.history.diverged and retry_diverged:
            plans[name] = VariantPlan("retrain", "diverged; retrying it from epoch 0 as asked")
        elif saved.epoch == run.config.epochs or (
                saved.history.diverged and set(saved.history.diverged) >= set(
                    saved.history.seeds)):
            repaired = f" ({', '.join(d.file for d in damage)} rewritten)" if damage else ""
            diverged = " (diverged; not retrained without {retry_diverged})" if (
                saved.history.diverged) else ""
            plans[name] = VariantPlan("keep", f"finished{diverged}{repaired}", saved.epoch)
        else:
            plans[name] = VariantPlan("continue", f"continuing from epoch {saved.epoch}/"
                                                  f"{run.config.epochs}", saved.epoch)
    return plans


def prepare_resume(run_dir: Path, config: ExperimentConfig, splits: Splits,
                    retry_diverged: bool, on_plan, on_resume,
                    took_over: Mapping[str, Any] | None) -> tuple[dict[str, VariantPlan],
                                                                 dict[str, Any]]:
    """Check the run, restore its damaged run files, record the resume; returns the plans
    and the environment the run started in."""
    run = load_run(run_dir)
    if run.config != config:
        raise BnlabError(f"{run_dir} is a run of another configuration; resume it with the "
                         "file and overrides it was started with")
    plans = resume_plan(run, retry_diverged=retry_diverged)
    repaired = []
    if took_over is not None:
        repaired.append(f"took over the lock of PID {took_over.get('pid', '?')} on "
                        f"{took_over.get('host', '?')} (since {took_over.get('since', '?')}), "
                        "which was stopped without releasing it")
    own = {d.file for d in run.damage if d.variant is None}
    if "config.json" in own:
        write_config(run_dir, config)
        repaired.append("config.json restored from the checkpoints' copy")
    if "environment.json" in own:
        if run.environment:
            atomic_write_json(run_dir / "environment.json", run.environment)
            repaired.append("environment.json restored from the checkpoints' copy")
        else:
            write_environment(run_dir, config.seed_list, splits,
                              note="environment.json was damaged and no copy survived: the "
                                   "environment the run started in is unknown")
            repaired.append("environment.json rewritten (the start environment is lost)")
    if "summary.json" in own:
        repaired.append("summary.json recomputed")
    if on_plan:
        on_plan(plans, repaired)
    changes = record_resume(run_dir, config.seed_list)
    if on_resume:
        on_resume(changes)
    started = read_json(run_dir / "environment.json", fix=REPAIR)
    return plans, {k: v for k, v in started.items() if k != "resumes"}


def move_aside(run_dir: Path, variant: str) -> None:
    """Move a variant's old files to ``.replaced/<time>/`` before it is retrained."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    for source, target in ((run_dir / variant, Path(variant)),
                           (run_dir / "tensorboard" / variant, Path("tensorboard") / variant)):
        if source.exists():
            destination = run_dir / ".replaced" / stamp / target
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, destination)
