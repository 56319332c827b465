"""Run directories on disk: atomic writes, Keras-compatible history CSVs, JSON metadata.

Layout of one run (one invocation of an experiment)::

    runs/<experiment>-<YYYYmmdd-HHMMSS>/
        config.json              the resolved experiment config
        environment.json         package versions, device, seeds; "resumes": one entry per resume
        summary.json             final metrics per variant and seed (written last)
        <variant>/statistics.csv per-epoch mean and 95% CI over seeds of every metric
        <variant>/seed-<s>/history.csv   Keras CSVLogger columns (epoch, accuracy, loss, …)
        <variant>/checkpoint.safetensors (+ .json copy of its metadata)  see train/checkpoint.py
        tensorboard/<variant>/seed-<s>/{train,validation}   TensorBoard event files
        curves.png, curves.svg   learning curves

Every file is written to a temporary name in the same folder, fsynced, then renamed: a
crash leaves either the old file or the new one, never half of one. Nothing is pickled.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.analysis.stats import summarize_over_seeds
from bnlab.errors import BnlabError

_UMASK = os.umask(0)
os.umask(_UMASK)
CSV_COLUMNS = ("epoch", "accuracy", "loss", "val_accuracy", "val_loss")


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically (temp file + fsync + ``os.replace``)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:  # name the file the caller asked for, not the temporary one
        raise OSError(err.errno, err.strerror, str(path)) from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=json_default) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BnlabError(f"{path} is missing; is this a bnlab run directory?") from None
    except json.JSONDecodeError as err:
        raise BnlabError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); "
                         "the run may be damaged, delete it or rerun") from None


def history_csv(history: Mapping[str, Sequence[float]]) -> str:
    """Keras CSVLogger format: 0-based ``epoch`` first, then metrics in sorted order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for epoch in range(len(history["loss"])):
        writer.writerow([epoch] + [repr(float(history[c][epoch])) for c in CSV_COLUMNS[1:]])
    return out.getvalue()


def statistics_csv(history: Mapping[str, np.ndarray], confidence: float = 0.95) -> str:
    """Per-epoch statistics over seeds of ``history[metric]: (seeds, epochs)``: for each
    metric its mean and the half-width of the Student-t confidence interval (NaN for one
    seed), columns ``epoch, seeds, <metric>_mean, <metric>_ci95, …``."""
    summaries = {c: summarize_over_seeds(np.asarray(history[c]), confidence)
                 for c in CSV_COLUMNS[1:]}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", "seeds"] + [f"{c}_{part}" for c in CSV_COLUMNS[1:]
                                          for part in ("mean", "ci95")])
    for epoch in range(len(summaries["loss"].mean)):
        writer.writerow([epoch, summaries["loss"].n] + [
            repr(float(getattr(summaries[c], part)[epoch]))
            for c in CSV_COLUMNS[1:] for part in ("mean", "ci_half_width")])
    return out.getvalue()


def read_history_csv(path: Path) -> dict[str, np.ndarray]:
    """Inverse of ``history_csv``: ``{metric: (epochs,)}``."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    try:
        return {c: np.array([float(r[c]) for r in rows]) for c in CSV_COLUMNS[1:]}
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path.name} is not a Keras-style history ({err})") from None


def new_run_dir(runs_dir: Path, experiment: str) -> Path:
    """Create and return a fresh ``<runs_dir>/<experiment>-<timestamp>[-n]`` folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = runs_dir / (f"{experiment}-{stamp}" + (f"-{n}" if n else ""))
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise BnlabError(f"cannot create a run folder under {runs_dir}; clean it up")


def json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


@dataclass(frozen=True)
class RunRecord:
    """A run folder read back: ``histories[variant][metric]: (seeds, epochs_done)``."""

    path: Path
    config: dict[str, Any]
    environment: dict[str, Any]
    summary: dict[str, Any] | None  # None while the run is unfinished
    histories: dict[str, dict[str, np.ndarray]]

    @property
    def complete(self) -> bool:
        return self.summary is not None

    @property
    def epochs_per_variant(self) -> list[int]:
        """Epochs finished by each variant, in the config's order (0 if not started)."""
        return [self.histories[v["name"]]["loss"].shape[1] if v["name"] in self.histories
                else 0 for v in self.config["variants"]]

    @property
    def epochs_done(self) -> int:
        """Epochs finished by every variant (0 while a variant has not started)."""
        return min(self.epochs_per_variant, default=0)


def load_run(run_dir: Path) -> RunRecord:
    """Read a run folder (JSON and CSV only); a damaged one is a one-line BnlabError."""
    if not (run_dir / "config.json").is_file():
        raise BnlabError(f"{run_dir} is not a bnlab run folder (no config.json); "
                         "`bnlab runs` lists the runs")
    config = read_json(run_dir / "config.json")
    environment = read_json(run_dir / "environment.json")
    summary_path = run_dir / "summary.json"
    summary = read_json(summary_path) if summary_path.exists() else None
    try:
        _check_config(config, environment)
        histories = {}
        for variant in config["variants"]:
            files = sorted((run_dir / variant["name"]).glob("seed-*/history.csv"),
                           key=lambda p: int(p.parent.name.removeprefix("seed-")))
            per_seed = [read_history_csv(p) for p in files]
            epochs = min((len(h["loss"]) for h in per_seed), default=0)
            if epochs:
                histories[variant["name"]] = {m: np.stack([h[m][:epochs] for h in per_seed])
                                              for m in CSV_COLUMNS[1:]}
        if summary is not None:
            for name in histories:
                _need(summary.get(name), _SUMMARY_FIELDS, f"summary.json[{name!r}]")
        record = RunRecord(run_dir, config, environment, summary, histories)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise BnlabError(f"{run_dir} is damaged ({type(err).__name__}: {err}); delete it "
                         "or rerun the experiment") from None
    return record


# What `bnlab runs`, `show` and `report` read from a run's JSON files.
_CONFIG_FIELDS = {"name": str, "epochs": int, "batch_size": int, "seed": int, "seeds": int,
                  "dataset": str, "optimizer": dict, "variants": list}
_SUMMARY_FIELDS = {"seeds": list, "final": dict, "test_loss": list, "test_accuracy": list}


def _need(data: Any, fields: dict[str, Any], where: str) -> None:
    """Raise ValueError naming the first field of ``fields`` missing from ``data`` or of
    another type than the one given."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} is not a JSON object")
    for key, kind in fields.items():
        if not isinstance(data.get(key), kind):
            raise ValueError(f"{where} lacks {key!r}")


def _check_config(config: Any, environment: Any) -> None:
    _need(config, _CONFIG_FIELDS, "config.json")
    _need(config["optimizer"], {"name": str, "learning_rate": float | int},
          "config.json optimizer")
    for variant in config["variants"]:
        _need(variant, {"name": str}, "config.json variant")
    _need(environment, {}, "environment.json")


def list_runs(runs_dir: Path) -> tuple[list[RunRecord], list[str]]:
    """Every readable run folder under ``runs_dir``, oldest first, and one message per
    damaged folder (a damaged run never hides the others)."""
    if not runs_dir.is_dir():
        return [], []
    folders = sorted((p for p in runs_dir.iterdir() if (p / "config.json").is_file()),
                     key=lambda p: ((p / "config.json").stat().st_mtime, p.name))
    runs, damaged = [], []
    for folder in folders:
        try:
            runs.append(load_run(folder))
        except BnlabError as err:
            damaged.append(str(err))
    return runs, damaged


def find_resumable(runs_dir: Path, config: dict[str, Any]) -> Path:
    """The newest unfinished run of exactly this resolved ``config``."""
    same = json.loads(json.dumps(config, default=json_default))
    candidates = [r for r in list_runs(runs_dir)[0] if r.config == same]
    unfinished = [r for r in candidates if not r.complete]
    if not unfinished:
        state = "is already complete" if candidates else "was not found"
        raise BnlabError(f"an unfinished run of {config['name']!r} with this configuration "
                         f"(same file and overrides) {state} under {runs_dir}; run again "
                         "without --resume")
    return unfinished[-1].path
