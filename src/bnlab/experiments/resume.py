"""Resuming a run is also repairing it: what to do with each variant, and the run files to
restore, before anything trains (``experiments.runner.run_experiment(resume=True)``).

A variant whose record is sound continues from it (or, finished, only has its derived files
rewritten), every file derived from it rewritten; a damaged TensorBoard event file of such a
variant is moved to ``.replaced/<time>/`` and dropped from its record (no record can rebuild
a log, and retraining a variant to regenerate its logs would cost its whole training for the
same numbers); a variant whose record is damaged or missing is retrained from the start, its
old files moved aside; damaged run files are restored from the records' copies, and
``summary.json`` and the figures are derived again.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bnlab.config.experiment import ExperimentConfig
from bnlab.data.datasets import Splits
from bnlab.errors import BnlabError
from bnlab.io import atomic_write_json, read_json
from bnlab.store.derived import derived_files, digests, write_derived
from bnlab.store.provenance import record_resume, write_environment
from bnlab.store.reader import load_run
from bnlab.store.record import (
    VariantRecord,
    json_copy_damage,
    read_record,
    rewritten_record,
    write_json_copy,
)
from bnlab.store.runs import REPAIR, Run, write_config


@dataclass(frozen=True)
class VariantPlan:
    """What a resume does with one variant: ``action`` is ``"train"`` (not started),
    ``"continue"`` (from ``from_epoch``), ``"rewrite"`` (finished and tested: its derived
    files rewritten from its record, nothing trained or evaluated), ``"keep"`` (finished, in
    a record from before records held the test metrics: evaluated again) or ``"retrain"``
    (from the start); ``reason`` says why."""

    action: str
    reason: str
    from_epoch: int = 0


# Files a resume rewrites from a sound record (or, TensorBoard's, sets aside); damage to any
# other file of a variant (its record) can only be repaired by training it again.
REWRITTEN = ("history.csv", "statistics.csv", "checkpoint.json")
LOGS = "tensorboard/"


def resume_plan(run: Run, *, retry_diverged: bool = False) -> dict[str, VariantPlan]:
    """For every variant of ``run``, what resuming it does (``VariantPlan``)."""
    plans = {}
    for point in run.config.points:
        name = point.name
        damage = [d for d in run.damage if d.variant == name]
        lost = [d for d in damage
                if not d.file.endswith(REWRITTEN) and not d.file.startswith(LOGS)]
        saved = run.records.get(name)
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
            rewritten = [d.file for d in damage if not d.file.startswith(LOGS)]
            repaired = f" ({', '.join(rewritten)} rewritten)" if rewritten else ""
            diverged = " (diverged; not retrained without {retry_diverged})" if (
                saved.history.diverged) else ""
            action = "rewrite" if saved.test_accuracy is not None else "keep"
            plans[name] = VariantPlan(action, f"finished{diverged}{repaired}", saved.epoch)
        else:
            plans[name] = VariantPlan("continue", f"continuing from epoch {saved.epoch}/"
                                                  f"{run.config.epochs}", saved.epoch)
    return plans


def prepare_resume(run_dir: Path, config: ExperimentConfig, splits: Splits,
                   retry_diverged: bool, observer,
                   took_over: Mapping[str, Any] | None
                   ) -> tuple[dict[str, VariantPlan], dict[str, Any], Run]:
    """Check the run, restore its damaged run files, record the resume; returns the plans,
    the environment the run started in and the run as it was read. ``observer``
    (``experiments.observer``) hears the plans and repairs, and a note for each way this
    environment differs from the one the run started in."""
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
        repaired.append("summary.json derived again from the records")
    repaired += set_aside_logs(run, plans)
    observer.planned(plans, repaired)
    for change in record_resume(run_dir, config.seed_list):
        observer.note(f"resuming with {change}; the finished epochs were trained in the "
                      "other environment (environment.json records both)")
    started = read_json(run_dir / "environment.json", fix=REPAIR)
    return plans, {k: v for k, v in started.items() if k != "resumes"}, run


def rewrite_derived(run_dir: Path, name: str) -> VariantRecord:
    """Point ``name``'s derived files rewritten from its record, which is returned; its
    record is rewritten too when the files it lists are not the bytes derived from it now
    (written by another version of bnlab), so that they agree again."""
    folder = run_dir / name
    arrays, record = read_record(folder)
    files = derived_files(record.history)
    write_derived(folder, files)
    if digests(files) != dict(record.derived):
        record = rewritten_record(folder, arrays, replace(record, derived=digests(files)))
    elif json_copy_damage(folder, record):
        write_json_copy(folder, record)
    return record


def set_aside_logs(run: Run, plans: Mapping[str, VariantPlan]) -> list[str]:
    """Each damaged TensorBoard event file of a variant whose record is sound (and which is
    not retrained) moved to ``.replaced/<time>/`` and dropped from its record; a line each
    for the repair report."""
    damaged: dict[str, list[str]] = {}
    for d in run.damage:
        if (d.file.startswith(LOGS) and d.variant in run.records
                and plans[d.variant].action != "retrain"):
            damaged.setdefault(d.variant, []).append(d.file)
    stamp, lines = _stamp(), []
    for name, files in damaged.items():
        folder = run.path / name
        arrays, record = read_record(folder)
        for file in files:
            if (run.path / file).exists():
                _move(run.path, Path(file), stamp)
            lines.append(f"{file} set aside in .replaced/{stamp}/ (a TensorBoard log is not "
                         f"rebuilt; the record of {name} is sound)")
        prefix = f"{LOGS}{name}/"
        kept = {k: v for k, v in record.tensorboard.items() if prefix + k not in files}
        rewritten_record(folder, arrays, replace(record, tensorboard=kept))
    return lines


def move_aside(run_dir: Path, variant: str) -> None:
    """Move a variant's old files to ``.replaced/<time>/`` before it is retrained."""
    stamp = _stamp()
    for relative in (Path(variant), Path("tensorboard") / variant):
        if (run_dir / relative).exists():
            _move(run_dir, relative, stamp)


def _stamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")


def _move(run_dir: Path, relative: Path, stamp: str) -> None:
    """``run_dir / relative`` moved to ``run_dir / .replaced / stamp / relative``."""
    destination = run_dir / ".replaced" / stamp / relative
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(run_dir / relative, destination)
