"""Reading a run folder back: every file checked by its digest or its form, damage gathered,
never raised.

``load_run`` reads each variant's record (``store.record``: its checkpoint, digest checked),
the experiment (``config.json``, or a record's copy of it), and checks every other file
against what the records say: the derived files and TensorBoard files by the digests the
records hold, ``summary.json`` by its own digest and the records it names, the figures by
the digests in it, the JSON copies by equality. Nothing is recomputed to be compared. It
returns the ``Run`` with a list of ``Damage``; only a run whose config can be read from
nowhere is an error (``UnreadableRun``). ``list_runs`` reads every run under a folder, and
``find_resumable`` picks the one a ``--resume`` continues.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bnlab.config.experiment import ExperimentConfig
from bnlab.config.files import experiment_from_json
from bnlab.data.datasets import Splits
from bnlab.errors import BnlabError, ConfigError
from bnlab.io import parse_json
from bnlab.store.checks import environment_problem, text_problem
from bnlab.store.derived import derived_damage
from bnlab.store.event_files import event_damage
from bnlab.store.provenance import data_fingerprint, same_data
from bnlab.store.record import FORMAT, VariantRecord, json_copy_damage, read_record
from bnlab.store.runs import Damage, Run, UnreadableRun, is_run_folder
from bnlab.store.summary import (
    VariantSummary,
    figure_damage,
    read_summary,
    summary_damage,
    summary_figures,
)
from bnlab.train.checkpoint import CheckpointError


def load_run(run_dir: Path | str) -> Run:
    """Read and check a run folder (JSON, CSV and safetensors only). Damaged files are
    gathered in ``Run.damage``; a folder whose config cannot be recovered from anywhere is
    an ``UnreadableRun`` error naming the file."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise BnlabError(f"{run_dir} does not exist; give the path of a run folder")
    if not is_run_folder(run_dir):
        raise BnlabError(f"{run_dir} is not a bnlab run folder (no config.json); give a "
                         "folder <runs dir>/<experiment>-<timestamp> that a run wrote")
    return _RunReader(run_dir).read()


def run_config(run_dir: Path | str) -> ExperimentConfig:
    """A run's experiment from its ``config.json`` alone, without reading its records (one
    that cannot be read: from the records' copies, as ``load_run`` recovers it)."""
    run_dir = Path(run_dir)
    problem, config, _ = _config_from(run_dir / "config.json")
    return config if problem is None else load_run(run_dir).config


class _RunReader:
    """The checks of ``load_run``, one method per kind of file."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.damage: list[Damage] = []

    def note(self, file: Path | str, problem: str, variant: str | None = None) -> None:
        path = Path(file)
        relative = path.relative_to(self.run_dir) if path.is_relative_to(self.run_dir) else path
        self.damage.append(Damage(str(relative), problem, variant))

    def read(self) -> Run:
        records = self.read_records()
        config = self.read_config(records)
        for name in set(records) - {p.name for p in config.points}:
            self.note(f"{name}/checkpoint.safetensors", "belongs to no variant of the config")
            del records[name]
        environment = self.read_environment(config, records)
        for point in config.points:
            if point.name in records:
                self.check_variant(config, records, point.name)
            elif (self.run_dir / point.name).exists() or (self.run_dir / "summary.json").exists():
                self.note(f"{point.name}/checkpoint.safetensors",
                          "is missing (the variant's trained state and its record)", point.name)
        summary, figures = self.read_summary(config, records)
        histories = {name: record.history for name, record in records.items()}
        return Run(self.run_dir, config, environment, summary, histories, tuple(self.damage),
                   records, figures)

    def read_records(self) -> dict[str, VariantRecord]:
        """Every variant's record whose checkpoint is sound, by variant folder."""
        records = {}
        for path in sorted(self.run_dir.glob("*/checkpoint.safetensors")):
            name = path.parent.name
            try:
                records[name] = read_record(path.parent)[1]
            except CheckpointError as err:
                self.note(path, err.problem, name)
        return records

    def read_config(self, records: Mapping[str, VariantRecord]) -> ExperimentConfig:
        """``config.json``, checked against the records' copy; when it is damaged, the
        first readable copy in a record."""
        path = self.run_dir / "config.json"
        problem, config, data = _config_from(path)
        copies = [r.run["config"] for r in records.values() if "config" in r.run]
        if problem is None and copies and copies[0] != data:
            problem = "does not agree with the copy in the checkpoints"
        if problem is None:
            return config
        self.note(path, problem)
        for copy in copies:
            try:
                return experiment_from_json(copy, source="a checkpoint's copy of config.json")
            except ConfigError:
                continue
        raise UnreadableRun(f"{path} {problem}, and no checkpoint of the run holds a readable "
                            "copy of it, so the run cannot be read; rerun the experiment (this "
                            "folder is left as it is)")

    def read_environment(self, config: ExperimentConfig,
                         records: Mapping[str, VariantRecord]) -> dict[str, Any]:
        """``environment.json``; when it is damaged, the records' copy."""
        path = self.run_dir / "environment.json"
        copies = [r.run["environment"] for r in records.values()
                  if environment_problem(r.run.get("environment")) is None]
        text, problem = text_problem(path)
        environment: Any = None
        if problem is None:
            try:
                environment = parse_json(text)
            except ValueError as err:
                problem = f"is not valid JSON ({err})"
        if problem is None:
            problem = environment_problem(environment)
        if problem is None:
            if environment.get("seeds", list(config.seed_list)) != list(config.seed_list):
                problem = "records other seeds than config.json"
            elif copies and _without_resumes(environment) != _without_resumes(copies[0]):
                problem = "does not agree with the copy in the checkpoints"
        if problem is None:
            return environment
        self.note(path, problem)
        return dict(copies[0]) if copies else {}

    def check_variant(self, config: ExperimentConfig, records: dict[str, VariantRecord],
                      name: str) -> None:
        """A variant's record against the config, and the files derived from it."""
        record, folder = records[name], self.run_dir / name
        if record.seeds != config.seed_list or record.epoch > config.epochs:
            self.note(f"{name}/checkpoint.safetensors",
                      "records other seeds or more epochs than config.json", name)
            del records[name]
            return
        if problem := json_copy_damage(folder, record):
            self.note(f"{name}/checkpoint.json", problem, name)
        for file, problem in derived_damage(folder, record.derived):
            self.note(folder / file, problem, name)
        for file, problem in event_damage(self.run_dir / "tensorboard" / name,
                                                record.tensorboard,
                                                finished=record.finished(config.epochs)):
            self.note(self.run_dir / "tensorboard" / name / file, problem, name)

    def read_summary(self, config: ExperimentConfig, records: Mapping[str, VariantRecord]
                     ) -> tuple[dict[str, VariantSummary] | None, tuple[str, ...]]:
        """Each variant's outcome once every one has finished: from the records, or, for a
        run of the old format, from ``summary.json``; that file and its figures checked
        (the sound figures returned with it)."""
        names = [p.name for p in config.points]
        legacy = any(r.format < FORMAT for r in records.values())
        done = all(n in records and records[n].finished(config.epochs)
                   and records[n].test_accuracy is not None for n in names)
        path = self.run_dir / "summary.json"
        if not path.exists():
            if done or (legacy and all(n in records and records[n].finished(config.epochs)
                                       for n in names)):
                self.note(path, "is missing, though every variant has finished")
            return ({n: VariantSummary.of(records[n]) for n in names} if done else None), ()
        text, problem = text_problem(path)
        data: Any = None
        if problem is None:
            try:
                data = parse_json(text)
                legacy_summary = read_summary(data, names) if legacy else None
                figures = summary_figures(data)
            except ValueError as err:
                problem = f"is not a bnlab summary ({err})"
        if problem is None and not legacy:
            problem = summary_damage(data, records)
        sound: tuple[str, ...] = ()
        if problem is None:
            damaged = dict(figure_damage(self.run_dir, figures))
            for figure, why in damaged.items():
                self.note(figure, why)
            sound = tuple(f for f in figures if f not in damaged)
        else:
            self.note(path, problem)
        if legacy:
            return (legacy_summary if problem is None else None), sound
        return ({n: VariantSummary.of(records[n]) for n in names} if done else None), sound


def _config_from(path: Path) -> tuple[str | None, ExperimentConfig | None, Any]:
    """``(problem, config, parsed JSON)`` of a run's ``config.json``."""
    text, problem = text_problem(path)
    if problem:
        return problem, None, None
    try:
        data = parse_json(text)
    except ValueError as err:
        return f"is not valid JSON ({err})", None, None
    try:
        return None, experiment_from_json(data, source="config.json"), data
    except ConfigError as err:
        return f"is not a bnlab experiment ({err})", None, data


def _without_resumes(environment: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in environment.items() if k != "resumes"}


def list_runs(runs_dir: Path | str) -> tuple[list[Run], list[tuple[Path, str]]]:
    """Every readable run folder under ``runs_dir``, oldest first, and each folder that
    cannot be read at all with why (one damaged run never hides the others)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return [], []
    folders = sorted((p for p in runs_dir.iterdir() if is_run_folder(p)),
                     key=lambda p: (_started(p), p.name))
    runs, unreadable = [], []
    for folder in folders:
        try:
            runs.append(load_run(folder))
        except BnlabError as err:
            unreadable.append((folder, str(err)))
        except OSError as err:  # a folder that cannot be listed, a name too long, …
            unreadable.append((folder, f"{folder} cannot be read ({err.strerror})"))
    return runs, unreadable


def _started(folder: Path) -> float:
    try:
        return (folder / "config.json").stat().st_mtime
    except OSError:
        return folder.stat().st_mtime


def find_resumable(runs_dir: Path, config: ExperimentConfig, splits: Splits, *,
                   retry_diverged: bool = False) -> Path:
    """The newest run of exactly this ``config`` on exactly these ``splits`` under
    ``runs_dir`` that is unfinished or damaged (or has a diverged variant, with
    ``retry_diverged``)."""
    fingerprint = data_fingerprint(splits)
    candidates = [r for r in list_runs(runs_dir)[0] if r.config == config
                  and same_data(r.environment, fingerprint, config.dataset)]
    wanted = [r for r in candidates
              if not r.complete or (retry_diverged and r.diverged)]
    if not wanted:
        state = ("is already complete" + ("" if retry_diverged or not any(
            r.diverged for r in candidates) else " (add {retry_diverged} to retrain its "
            "diverged variants)") if candidates else "was not found")
        raise BnlabError(f"an unfinished run of {config.name!r} with this configuration "
                         f"(same file and overrides) and data ({fingerprint['train']:,} "
                         f"training rows) {state} under {runs_dir}; run again without "
                         "{resume=True}")
    return wanted[-1].path
