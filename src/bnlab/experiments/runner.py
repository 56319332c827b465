"""Run an experiment into the run store: every point (variant, or sweep point) × seed.

    records = run_experiment(config, splits, run_dir, observer=observer)

The points train program by program (``experiments.sweep.programs``: one compiled program
per shape, the seeds and scalar axis values as data), here one after another or elsewhere
through an ``Executor`` (``experiments.ray_cluster``); each program writes its points'
records and files as it trains (``experiments.training``). A run holds its folder's lock
(``store.lock``) meanwhile. It writes ``config.json`` and ``environment.json`` first and,
once every point has finished, its figures and ``summary.json``, derived from the records.

A run killed at any moment resumes from its records (``resume=True``) to the numbers of an
uninterrupted run; a resume is also the repair of a damaged run (``experiments.resume``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bnlab.config.experiment import ExperimentConfig
from bnlab.data.datasets import Splits
from bnlab.experiments.observer import SILENT, Observer, RunStarted
from bnlab.experiments.resume import VariantPlan, move_aside, prepare_resume, rewrite_derived
from bnlab.experiments.sweep import Program, programs
from bnlab.experiments.training import train_program
from bnlab.store.lock import RunLock
from bnlab.store.provenance import devices_label, write_environment
from bnlab.store.record import VariantRecord
from bnlab.store.runs import write_config
from bnlab.store.summary import listed_figures, write_summary

# Trains programs elsewhere: (programs, config, splits, run folder, the run's config and
# environment) → each program's records as ``train_job`` gives them, in any order.
Executor = Callable[[list[Program], ExperimentConfig, Splits, Path, Mapping[str, Any]],
                    Iterable[list[VariantRecord]]]
# Draws a finished run's figures into its folder: (run folder, histories, probe records per
# point[, only=file names: those figures alone]) → the paths written
# (``report.figures.run_figures``).
Figures = Callable[..., Sequence[Path]]


def train_job(program: Program, config: ExperimentConfig, splits: Splits, run_dir: Path,
              run: Mapping[str, Any], *,
              compiler_options: Mapping[str, bool | int | str] | None = None,
              observer: Observer = SILENT) -> list[VariantRecord]:
    """One program into the run folder ``run_dir``, each point resuming from its record where
    it has one (``run_experiment`` moved aside those to retrain, so on a first attempt this
    is the resume plan; on a retry after a lost worker, the progress that attempt saved).
    What ``run_experiment`` runs for each program, here or as a Ray task."""
    return train_program(program, config, splits, run_dir=run_dir, run=run,
                         compiler_options=compiler_options, observer=observer)


def run_experiment(config: ExperimentConfig, splits: Splits, run_dir: Path, *,
                   resume: bool = False, retry_diverged: bool = False,
                   compiler_options: Mapping[str, bool | int | str] | None = None,
                   observer: Observer = SILENT, figures: Figures | None = None,
                   command: Sequence[str] | None = None, executor: Executor | None = None,
                   executor_name: str = "local") -> list[VariantRecord]:
    """Train every point × seed of ``config`` into ``run_dir`` (module docstring) and return
    each point's final record, in the config's order.

    With ``resume`` the run folder is read (``load_run``) and repaired as
    ``experiments.resume.resume_plan`` says; ``retry_diverged`` retrains the points that
    diverged. ``observer`` hears the start, the plan, each compile and epoch (not those of
    an ``executor``'s programs, which it hears done) and how a resumed run's environment
    differs. ``command``: the shell command that started a new run, kept in
    ``environment.json``. ``figures`` draws the finished run's figures, which
    ``summary.json`` lists with their digests."""
    for point in config.points:  # optax takes each optimizer, before anything is written
        point.optimizer.build()
    with RunLock(run_dir) as lock:
        observer.started(RunStarted(config, run_dir, resume, devices_label(),
                                    programs(config), executor_name))
        damaged: set[str] = set()
        if resume:
            plans, started, before = prepare_resume(run_dir, config, splits, retry_diverged,
                                                    observer, lock.took_over)
            damaged = {d.file for d in before.damage if d.variant is None}
        else:
            plans = {p.name: VariantPlan("train", "new run") for p in config.points}
            write_config(run_dir, config)
            started = write_environment(run_dir, config.seed_list, splits, command=command)
        by_name = {p.name: rewrite_derived(run_dir, p.name) for p in config.points
                   if plans[p.name].action == "rewrite"}
        jobs = _jobs(config, plans, run_dir)
        run = {"config": config.to_dict(), "environment": started}
        if executor is None:
            done = (train_job(job, config, splits, run_dir, run,
                              compiler_options=compiler_options, observer=observer)
                    for job in jobs)
        else:
            done = executor(jobs, config, splits, run_dir, run)
        by_name |= {record.name: record for records in done for record in records}
        records = [by_name[p.name] for p in config.points]
        changed = resume and any(name not in before.records or before.records[name].sha256
                                 != record.sha256 for name, record in by_name.items())
        if jobs or damaged or changed or not resume:  # summary.json derived again
            whole = (jobs or not resume or "summary.json" in damaged
                     or not listed_figures(run_dir))
            _finish(run_dir, config, by_name, figures, redraw=None if whole else damaged)
    return records


def _finish(run_dir: Path, config: ExperimentConfig, records: Mapping[str, VariantRecord],
            figures: Figures | None, *, redraw: Collection[str] | None) -> None:
    """The run's figures and its ``summary.json``, derived from ``records``: every figure
    drawn when ``redraw`` is ``None``; else those ``summary.json`` lists, of which those with
    a file named in ``redraw`` (damaged ones) are drawn again. Without ``figures`` the
    summary lists those it listed."""
    histories = {n: r.history for n, r in records.items()}
    probes = {n: r.probes for n, r in records.items()}
    if figures is None:
        names = listed_figures(run_dir)
    elif redraw is None:
        names = [str(Path(p).relative_to(run_dir)) for p in figures(run_dir, histories, probes)]
    else:
        names = listed_figures(run_dir)
        if set(redraw) & set(names):
            figures(run_dir, histories, probes, only=redraw)
    write_summary(run_dir, config, records, figures=names)


def _jobs(config: ExperimentConfig, plans: Mapping[str, VariantPlan],
          run_dir: Path) -> list[Program]:
    """The programs to run: the points to train apart from those only evaluated again (a
    program of their own, not trained); the old files of a point to retrain moved aside.
    A point whose derived files are only rewritten runs in none."""
    jobs = []
    for program in programs(config):
        for point in program.points:
            if plans[point.name].action == "retrain":
                move_aside(run_dir, point.name)
        actions = {p.name: plans[p.name].action for p in program.points}
        jobs += [part for part in (
            program.subset([p for p in program.points if actions[p.name] not in (
                "keep", "rewrite")]),
            program.subset([p for p in program.points if actions[p.name] == "keep"]))
            if part.points]
    return jobs
