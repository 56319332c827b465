"""Reading a run folder back: every file checked, damage gathered, never raised.

``load_run`` checks each file a run holds (``store.runs`` lists them) against its format
and against the record it must agree with — digests, formats, and agreement between the
checkpoints, histories, statistics, summary, figures and TensorBoard files — and returns the
``Run`` with a list of ``Damage``; only a run whose config can be read from nowhere is an
error (``UnreadableRun``). ``list_runs`` reads every run under a folder, and
``find_resumable`` picks the one a ``--resume`` continues.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.config.experiment import ExperimentConfig, experiment_from_json
from bnlab.data.datasets import Splits
from bnlab.errors import BnlabError, ConfigError
from bnlab.io import parse_json
from bnlab.store.checks import (
    beyond_float32,
    checked_records,
    environment_problem,
    event_file_problem,
    figure_problem,
    json_numbers,
    parse_csv,
    text_problem,
)
from bnlab.store.histories import (
    CSV_COLUMNS,
    GAP_COLUMNS,
    METRIC_COLUMNS,
    metric_columns,
    statistics_csv,
)
from bnlab.store.provenance import data_fingerprint, same_data
from bnlab.store.runs import (
    Damage,
    Run,
    SavedVariant,
    UnreadableRun,
    is_run_folder,
    variant_finished,
    whole_history,
)
from bnlab.store.summary import (
    VariantSummary,
    divergences_from_json,
    read_summary,
    summary_figures,
    sweep_points,
    verdicts_problem,
)
from bnlab.train.checkpoint import (
    CheckpointError,
    json_copy_problem,
    read_checkpoint,
    records_of,
)
from bnlab.train.loop import History

# Checkpoint metadata written only since checkpoints carry a digest: without one, it was lost.
DIGESTED_ONLY = frozenset({"run", "diverged", "compile_seconds"})


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
        saved = self.read_checkpoints()
        config = self.read_config(saved)
        for name in set(saved) - {v.name for v in config.points}:
            self.note(f"{name}/checkpoint.safetensors", "belongs to no variant of the config")
            del saved[name]
        environment = self.read_environment(config, saved)
        histories = {}
        for variant in config.points:
            history = self.read_histories(config, variant.name, saved.get(variant.name))
            if history is not None:
                histories[variant.name] = history
        summary, figures = self.read_summary(config, histories, saved)
        finished = summary is not None
        all_done = all(v.name in saved and variant_finished(saved[v.name], config)
                       for v in config.points)
        if not (self.run_dir / "summary.json").exists() and all_done:
            self.note("summary.json", "is missing, though every variant has finished")
        for name, history in histories.items():
            # Every variant done: each wrote its statistics.csv before the next one started.
            self.check_derived(config, name, history, saved.get(name), finished or all_done)
        for figure, sha256 in figures.items():
            if problem := figure_problem(self.run_dir / figure, sha256):
                self.note(figure, problem)
        return Run(self.run_dir, config, environment, summary, histories, tuple(self.damage),
                   saved)

    # checkpoints: the verified record of each variant
    def read_checkpoints(self) -> dict[str, SavedVariant]:
        saved = {}
        for path in sorted(self.run_dir.glob("*/checkpoint.safetensors")):
            name, stem = path.parent.name, path.with_suffix("")
            try:
                arrays, metadata = read_checkpoint(stem)
                if metadata["sha256"] is None and DIGESTED_ONLY & set(metadata):
                    raise CheckpointError(path, "has lost its digest (it holds what only "
                                                "checkpoints with one hold)")
                saved[name] = saved_variant(metadata, records_of(arrays))
            except CheckpointError as err:
                self.note(path, err.problem, name)
                continue
            except (KeyError, TypeError, ValueError) as err:
                self.note(path, f"holds metadata bnlab cannot read ({err})", name)
                continue
            if problem := json_copy_problem(stem, metadata):
                self.note(stem.with_suffix(".json"), problem, name)
        return saved

    def read_config(self, saved: Mapping[str, SavedVariant]) -> ExperimentConfig:
        path = self.run_dir / "config.json"
        copies = [s.run_copy["config"] for s in saved.values() if "config" in s.run_copy]
        problem, config = self.read_config_file(path)
        if problem is None and copies and copies[0] != parse_json(path.read_text("utf-8")):
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

    @staticmethod
    def read_config_file(path: Path) -> tuple[str | None, ExperimentConfig | None]:
        text, problem = text_problem(path)
        if problem:
            return problem, None
        try:
            data = parse_json(text)
        except ValueError as err:
            return f"is not valid JSON ({err})", None
        try:
            return None, experiment_from_json(data, source="config.json")
        except ConfigError as err:
            return f"is not a bnlab experiment ({err})", None

    def read_environment(self, config: ExperimentConfig,
                         saved: Mapping[str, SavedVariant]) -> dict[str, Any]:
        path = self.run_dir / "environment.json"
        copies = [s.run_copy["environment"] for s in saved.values()
                  if environment_problem(s.run_copy.get("environment")) is None]
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
            elif copies and {k: v for k, v in environment.items() if k != "resumes"} != {
                    k: v for k, v in copies[0].items() if k != "resumes"}:
                problem = "does not agree with the copy in the checkpoints"
        if problem is None:
            return environment
        self.note(path, problem)
        return dict(copies[0]) if copies else {}

    # histories: the checkpoint's copy when it is sound, the CSV files checked against it
    def read_histories(self, config: ExperimentConfig, name: str,
                       saved: SavedVariant | None) -> History | None:
        seeds = config.seed_list
        files = {seed: self.run_dir / name / f"seed-{seed}" / "history.csv" for seed in seeds}
        started = (saved is not None or any(p.exists() for p in files.values())
                   or (self.run_dir / "summary.json").exists())  # written when all finished
        if not started:
            return None
        if saved is None and not (self.run_dir / name / "checkpoint.safetensors").exists():
            self.note(f"{name}/checkpoint.safetensors",
                      "is missing (the variant's trained state and its record)", name)
        if saved is not None and (saved.history.seeds != seeds
                                  or saved.epoch > config.epochs):
            self.note(f"{name}/checkpoint.safetensors",
                      "records other seeds or more epochs than config.json", name)
            saved = None
        tables = {}
        for seed, path in files.items():
            text, problem = text_problem(path)
            table = None
            if problem is None:
                header = ("epoch", *METRIC_COLUMNS, *GAP_COLUMNS)
                table, problem = parse_csv(text, header if text.startswith(
                    ",".join(header)) else CSV_COLUMNS)
            if problem is None and beyond_float32(np.array(list(table.values()))):
                problem = "holds a value beyond float32"
            if problem is None and saved is not None:
                problem = _disagreement(table, saved, seeds.index(seed),
                                        may_lag=not variant_finished(saved, config))
            if problem:
                self.note(path, problem, name)
            else:
                tables[seed] = table
        if saved is not None:
            return saved.history
        if len(tables) < len(seeds):
            return None  # no sound record of every seed
        epochs = min(len(t["loss"]) for t in tables.values())
        if max(len(t["loss"]) for t in tables.values()) - epochs > 1:
            self.note(f"{name}/seed-*/history.csv", "hold different numbers of epochs", name)
        if epochs == 0:
            return None
        columns = set.intersection(*(set(t) for t in tables.values())) - {"epoch"}
        return History(seeds, {m: [tables[s][m][:epochs] for s in seeds]
                               for m in METRIC_COLUMNS + GAP_COLUMNS if m in columns})

    def read_summary(self, config: ExperimentConfig, histories: dict[str, History],
                     saved: Mapping[str, SavedVariant]
                     ) -> tuple[dict[str, VariantSummary] | None, dict[str, str | None]]:
        """The summary (``None`` if there is none or it is damaged) and its figure files
        with their digests. Its verdicts are checked when every history is whole."""
        path = self.run_dir / "summary.json"
        if not path.exists():
            return None, {}
        text, problem = text_problem(path)
        if problem is None:
            try:
                raw = parse_json(text)
            except ValueError as err:
                problem = f"is not valid JSON ({err})"
        if problem is None:
            try:
                summary = read_summary(raw, [v.name for v in config.points])
                figures = summary_figures(raw)
            except (KeyError, TypeError, ValueError) as err:
                problem = f"is not a bnlab summary ({err})"
        if problem is None:
            problem = _summary_disagreement(summary, config, histories, saved)
        if problem is None:  # CSV-only histories take their divergences from the summary
            merged = {name: replace(h, diverged=h.diverged or summary[name].diverged)
                      for name, h in histories.items()}
            if all(whole_history(merged.get(v.name), config.epochs) for v in config.points):
                problem = verdicts_problem(raw, merged, config.epochs, sweep_points(config))
        if problem:
            self.note(path, problem)
            return None, {}
        for name, variant in summary.items():  # CSV-only histories learn their divergences
            if name in histories and not histories[name].diverged and variant.diverged:
                histories[name].diverged.update(variant.diverged)
        return summary, figures

    def check_derived(self, config: ExperimentConfig, name: str, history: History,
                      saved: SavedVariant | None, finished: bool) -> None:
        """statistics.csv and the TensorBoard files of a started variant."""
        done = finished or (saved is not None and variant_finished(saved, config))
        path = self.run_dir / name / "statistics.csv"
        if done and (path.exists() or finished):
            text, problem = text_problem(path)
            if problem is None:
                problem = _statistics_disagreement(text, history)
            if problem:
                self.note(path, problem, name)
        plan = config.probe
        parts = ("", "train", "validation", *(("probes",) if plan.every or plan.measures_every
                                               else ()), *(("test",) if plan.test_each_epoch
                                                           else ()))
        for seed in config.seed_list:
            for part in parts:
                folder = self.run_dir / "tensorboard" / name / f"seed-{seed}" / part
                events = sorted(folder.glob("events.out.tfevents.*"))
                if not events:
                    self.note(folder, "holds no TensorBoard event file", name)
                for i, event_file in enumerate(events):
                    newest = i == len(events) - 1
                    if problem := event_file_problem(event_file, complete=done and newest):
                        self.note(event_file, problem, name)


def saved_variant(metadata: Mapping[str, Any],
                  records: Mapping[str, np.ndarray] | None = None) -> SavedVariant:
    """A checkpoint's metadata and recorded arrays (``train.checkpoint.records_of``) as a
    ``SavedVariant``; malformed metadata or records are a ``KeyError``/``TypeError``/
    ``ValueError``."""
    epoch, seeds = int(metadata["epoch"]), metadata["seeds"]
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool)
                                              for s in seeds):
        raise ValueError("its seeds are not a list of integers")
    per_seed = {}
    for metric in metric_columns(metadata["history"]):
        rows = metadata["history"][metric]
        if not isinstance(rows, list):
            raise ValueError(f"its {metric} history is not a list")
        values = np.array([json_numbers(row, f"its {metric} history") for row in rows], np.float64)
        if beyond_float32(values):
            raise ValueError(f"its {metric} history holds a value beyond float32")
        if values.shape != (len(seeds), epoch) and not (epoch == 0 and values.size == 0):
            raise ValueError(f"its {metric} history is {values.shape}, not "
                             f"({len(seeds)}, {epoch})")
        per_seed[metric] = values.reshape(len(seeds), epoch)
    history = History(tuple(seeds), per_seed,
                      json_numbers(metadata["epoch_seconds"], "its epoch_seconds")[:epoch],
                      divergences_from_json(metadata.get("diverged", {}), "diverged"))
    run_copy = metadata.get("run", {})
    if not isinstance(run_copy, dict):
        raise ValueError("its copy of the run is not a JSON object")
    compile_seconds = json_numbers([metadata.get("compile_seconds")], "its compile_seconds")[0]
    return SavedVariant(epoch, history, compile_seconds, run_copy,
                        checked_records(records or {}, len(seeds)))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def _disagreement(table: Mapping[str, np.ndarray], saved: SavedVariant, index: int, *,
                  may_lag: bool) -> str | None:
    """How a seed's CSV history disagrees with its checkpoint's record, or ``None``. The CSV
    of a variant still training (``may_lag``) may lag the checkpoint by the epoch in which a
    process was killed; a finished variant's CSVs are rewritten whole when it finishes."""
    epochs = len(table["loss"])
    if epochs > saved.epoch:
        return f"has {epochs} epochs, more than the checkpoint's {saved.epoch}"
    columns = metric_columns(saved.history.per_seed)
    if set(table) - {"epoch"} != set(columns):
        return f"has other columns than the checkpoint's record ({', '.join(columns)})"
    for metric in columns:
        if not _same(table[metric], saved.history.per_seed[metric][index, :epochs]):
            return f"disagrees with the checkpoint's record ({metric})"
    if epochs < saved.epoch - (1 if may_lag else 0):
        return f"has {epochs} epochs, the checkpoint {saved.epoch}"
    return None


def _summary_disagreement(summary: Mapping[str, VariantSummary], config: ExperimentConfig,
                          histories: Mapping[str, History],
                          saved: Mapping[str, SavedVariant]) -> str | None:
    for name, variant in summary.items():
        history = histories.get(name)
        if variant.seeds != config.seed_list:
            return f"records other seeds for {name} than config.json"
        if history is None:
            continue  # that variant's own record is damaged (noted there)
        for metric, values in variant.final.items():
            if metric in history.per_seed and not _same(values, history.final(metric)):
                return f"disagrees with the history of {name} (final {metric})"
        if (record := saved.get(name)) is not None:
            for field_name, ours, theirs in (
                    ("epoch_seconds", variant.epoch_seconds, record.history.epoch_seconds),
                    ("compile_seconds", variant.compile_seconds, record.compile_seconds),
                    ("diverged", variant.diverged, record.history.diverged)):
                same = (dict(ours) == dict(theirs) if isinstance(ours, Mapping) else
                        _same(np.asarray(ours, np.float64), np.asarray(theirs, np.float64)))
                if not same:
                    return f"disagrees with the checkpoint of {name} ({field_name})"
    return None


def _statistics_disagreement(text: str, history: History) -> str | None:
    expected = statistics_csv(history.per_seed)
    columns = tuple(expected.splitlines()[0].split(","))
    table, problem = parse_csv(text, columns)
    if problem:
        return problem
    want, _ = parse_csv(expected, columns)
    for column in columns:
        if table[column].shape != want[column].shape or not np.allclose(
                table[column], want[column], rtol=1e-9, atol=0, equal_nan=True):
            return f"disagrees with the histories ({column})"
    return None


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
