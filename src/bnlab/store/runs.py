"""The run store: one folder per run of an experiment, read back as a ``Run``.

    runs/<experiment>-<YYYYmmdd-HHMMSS>/
        config.json              the resolved experiment (config.experiment, file form)
        environment.json         versions, device, seeds; "resumes" (store.provenance)
        summary.json             final metrics and verdicts, written last (store.summary)
        <variant>/statistics.csv per-epoch mean and 95% CI over seeds (store.histories)
        <variant>/seed-<s>/history.csv   Keras CSVLogger columns, after every epoch
        <variant>/checkpoint.safetensors (+ .json copy of its metadata)  train.checkpoint
        tensorboard/<variant>/seed-<s>/{train,validation}   event files (store.tensorboard)
        curves.png, curves.svg   learning curves

Every file is written atomically (``bnlab.io``) and nothing is pickled. Reading a run checks
it: its config goes through the experiment checks, its CSVs and summary through their
formats, and a damaged folder is one line naming what is wrong.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnlab.analysis.stats import PairedComparison, compare_final_accuracy
from bnlab.config.experiment import ExperimentConfig, experiment_from_json
from bnlab.data.datasets import Splits
from bnlab.errors import BnlabError, ConfigError
from bnlab.io import atomic_write_json, read_json
from bnlab.store.histories import METRIC_COLUMNS, read_history_csv
from bnlab.store.provenance import data_fingerprint, same_data
from bnlab.store.summary import VariantSummary, read_summary
from bnlab.train.loop import History

DAMAGED_FIX = "delete it or rerun the experiment"


@dataclass(frozen=True, eq=False)
class Run:
    """A run folder read back.

    config: the experiment as run; environment: ``environment.json``; summary: per variant,
    ``None`` while the run is unfinished; histories: per started variant, its ``History``
    of the epochs every seed finished (``per_seed[metric]: (seeds, epochs)``).
    """

    path: Path
    config: ExperimentConfig
    environment: dict[str, Any]
    summary: dict[str, VariantSummary] | None
    histories: dict[str, History]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def complete(self) -> bool:
        return self.summary is not None

    @property
    def epochs_per_variant(self) -> list[int]:
        """Epochs finished by each variant, in the config's order (0 if not started)."""
        return [self.histories[v.name].epochs if v.name in self.histories else 0
                for v in self.config.variants]

    def comparisons(self) -> list[PairedComparison]:
        """The seed-paired verdicts on the final validation accuracy (every pair of
        variants, Holm-adjusted), as ``bnlab show`` prints them; a ``BnlabError`` while the
        run is unfinished."""
        if not self.complete:
            raise BnlabError(f"{self.path} is unfinished: its verdicts come when every "
                             "variant has finished (resume it with {resume=True})")
        return compare_final_accuracy({n: h.per_seed for n, h in self.histories.items()},
                                      self.config.epochs)

    def __repr__(self) -> str:
        status = "complete" if self.complete else "unfinished"
        return (f"Run({str(self.path)!r}: {self.config.name!r}, "
                f"{len(self.config.variants)} variants × {self.config.seeds} seed(s), "
                f"{self.config.epochs} epochs, {status})")


def load_run(run_dir: Path | str) -> Run:
    """Read a run folder (JSON and CSV only); a damaged one is a one-line ``BnlabError``."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise BnlabError(f"{run_dir} does not exist; give the path of a run folder")
    if not (run_dir / "config.json").is_file():
        raise BnlabError(f"{run_dir} is not a bnlab run folder (no config.json); give a "
                         "folder <runs dir>/<experiment>-<timestamp> that a run wrote")
    fix = f"the run may be damaged; {DAMAGED_FIX}"
    raw_config = read_json(run_dir / "config.json", fix=fix)
    environment = read_json(run_dir / "environment.json", fix=fix)
    summary_path = run_dir / "summary.json"
    raw_summary = read_json(summary_path, fix=fix) if summary_path.exists() else None
    try:
        config = experiment_from_json(raw_config, source="config.json")
    except ConfigError as err:
        raise BnlabError(f"{run_dir} is damaged ({err}); {DAMAGED_FIX}") from None
    try:
        if not isinstance(environment, dict):
            raise ValueError("environment.json is not a JSON object")
        histories = {}
        for variant in config.variants:
            files = sorted((run_dir / variant.name).glob("seed-*/history.csv"),
                           key=lambda p: int(p.parent.name.removeprefix("seed-")))
            per_seed = [read_history_csv(p) for p in files]
            epochs = min((len(h["loss"]) for h in per_seed), default=0)
            if epochs:
                histories[variant.name] = History(
                    tuple(int(p.parent.name.removeprefix("seed-")) for p in files),
                    {m: [h[m][:epochs] for h in per_seed] for m in METRIC_COLUMNS})
        summary = (None if raw_summary is None
                   else read_summary(raw_summary, [v.name for v in config.variants]))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise BnlabError(f"{run_dir} is damaged ({type(err).__name__}: {err}); "
                         f"{DAMAGED_FIX}") from None
    return Run(run_dir, config, environment, summary, histories)


def list_runs(runs_dir: Path | str) -> tuple[list[Run], list[str]]:
    """Every readable run folder under ``runs_dir``, oldest first, and one message per
    damaged folder (a damaged run never hides the others)."""
    runs_dir = Path(runs_dir)
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


def write_config(run_dir: Path, config: ExperimentConfig) -> None:
    """A new run's ``config.json``: the experiment in its file form (read back by
    ``load_run`` through ``experiment_from_json``)."""
    atomic_write_json(run_dir / "config.json", config.to_dict())


def find_resumable(runs_dir: Path, config: ExperimentConfig, splits: Splits) -> Path:
    """The newest unfinished run of exactly this ``config`` on exactly these ``splits``
    under ``runs_dir``."""
    fingerprint = data_fingerprint(splits)
    candidates = [r for r in list_runs(runs_dir)[0] if r.config == config
                  and same_data(r.environment, fingerprint, config.dataset)]
    unfinished = [r for r in candidates if not r.complete]
    if not unfinished:
        state = "is already complete" if candidates else "was not found"
        raise BnlabError(f"an unfinished run of {config.name!r} with this configuration "
                         f"(same file and overrides) and data ({fingerprint['train']:,} "
                         f"training rows) {state} under {runs_dir}; run again without "
                         "{resume=True}")
    return unfinished[-1].path


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
