"""``bnlab run``, ``seed`` and ``sweep``: train an experiment into the run store, with live
progress, then print its results, verdicts and saved files (``train_and_report``, which
``bnlab probe`` shares)."""

from __future__ import annotations

import argparse
import shlex
import time
from typing import TYPE_CHECKING

from rich.markup import escape

from bnlab.cli.commands import print_verdicts
from bnlab.cli.session import (
    console,
    error_console,
    load_splits,
    print_recalibrations,
    program,
    session,
    without_resume,
)
from bnlab.errors import BnlabError

if TYPE_CHECKING:  # the command imports the library only when it runs (a fast --help)
    from bnlab.config.experiment import ExperimentConfig
    from bnlab.store.runs import Run


def cmd_run(args: argparse.Namespace) -> int:
    from bnlab.api import configure_jax

    configure_jax(cache_dir=args.cache_dir)  # before anything runs JAX (validation does)
    from bnlab.config.experiment import load_experiment, with_overrides

    if args.retry_diverged and not args.resume:
        raise BnlabError("--retry-diverged retrains the diverged variants of a run being "
                         "resumed; add --resume")
    config = with_overrides(load_experiment(args.experiment, args.settings), seeds=args.seeds,
                            epochs=args.epochs)
    if getattr(args, "needs_sweep", False) and not config.sweep:
        raise BnlabError(f"{args.experiment} has no [sweep] table; add one (docs/sweeps.md), "
                         "give axes with --set 'sweep.\"optimizer.learning_rate\"=[0.01, 0.1]', "
                         "or train it with `bnlab run`")
    train_and_report(args, config)
    return 0


def train_and_report(args: argparse.Namespace, config: ExperimentConfig) -> Run:
    """Train ``config`` into a new run folder under ``args.runs_dir`` (or resume the newest
    unfinished one with ``args.resume``), showing progress, then print its results,
    verdicts, findings and files; returns the run as read back."""
    from bnlab.config.small_batch import small_batch_warnings

    splits = load_splits(args, config.dataset)
    for line in small_batch_warnings(config, len(splits.y_train)):
        error_console.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from bnlab.experiments.runner import run_experiment
    from bnlab.experiments.sweep import programs
    from bnlab.report.console import divergence_lines, epoch_line, results_table
    from bnlab.report.figures import run_figures
    from bnlab.report.progress import SweepTiming
    from bnlab.store.provenance import devices_label
    from bnlab.store.reader import find_resumable, load_run
    from bnlab.store.runs import new_run_dir
    from bnlab.store.summary import sweep_points

    if args.resume:
        run_dir = find_resumable(args.runs_dir, config, splits,
                                 retry_diverged=args.retry_diverged)
    else:
        run_dir = new_run_dir(args.runs_dir, config.name)
    session.run_dir = run_dir
    seeds = ", ".join(map(str, config.seed_list))
    plan = programs(config)
    what = (f"{len(config.points)} points" if config.sweep else
            f"{len(config.variants)} models")
    console.print(f"[bold]{config.name}[/]: {what} × {config.seeds} "
                  f"seed(s) ({seeds}) × {config.epochs} epochs → {escape(str(run_dir))}"
                  + (" (resuming)" if args.resume else "") + f" on {escape(devices_label())}")
    if config.sweep:
        console.print(f"{len(plan)} program{'s' * (len(plan) != 1)}, "
                      f"{sum(len(p.members) for p in plan)} members:", markup=False)
        for number, program_ in enumerate(plan, 1):
            console.print(f"  program {number}: {program_.describe()}", markup=False)
    timing = SweepTiming(plan, config.epochs) if config.sweep else None
    started = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("training", total=len(config.points) * config.epochs)

        def on_compiled(name: str, seconds: float) -> None:
            progress.update(task, description=f"training {name}")
            progress.console.print(f"[bold]{escape(name)}[/]: compiling… {seconds:.1f} s")

        def on_epoch(name: str, record) -> None:
            if timing is None:
                progress.console.print(f"Epoch {record.epoch}/{record.epochs}\n"
                                       f"{epoch_line(record)}")
            else:
                progress.console.print(f"{name} epoch {record.epoch}/{record.epochs}: "
                                       f"{epoch_line(record)}", markup=False)
                if estimate := timing.after_epoch(name, record):
                    progress.console.print(estimate, markup=False, style="bold")
            for line in divergence_lines(name, record):
                progress.console.print(line, markup=False, style="bold red")
            progress.advance(task)

        def on_plan(plans, repaired: list[str]) -> None:
            for line in repaired:
                progress.console.print(f"repair: {escape(line)}")
            for name, plan in plans.items():
                progress.console.print(f"{escape(name)}: {escape(plan.reason)}", markup=False)
                if plan.action == "keep":
                    progress.advance(task, config.epochs)
                elif plan.action == "continue":
                    progress.advance(task, plan.from_epoch)

        def on_resume(changes: list[str]) -> None:
            for change in changes:
                progress.console.print(f"[yellow]note:[/] resuming with {escape(change)}; the "
                                       "finished epochs were trained in the other environment "
                                       "(environment.json records both)")

        executor = None
        if getattr(args, "ray", None):
            from bnlab.experiments.ray_cluster import ray_executor

            def on_done(program_, results) -> None:
                progress.console.print(f"done on the Ray cluster: {program_.describe()}",
                                       markup=False)
                progress.advance(task, len(results) * config.epochs)

            executor = ray_executor(args.ray, on_done=on_done)
            progress.console.print(f"sending {len(plan)} programs to the Ray cluster at "
                                   f"{args.ray}", markup=False)
        run_experiment(config, splits, run_dir, resume=args.resume, executor=executor,
                       retry_diverged=args.retry_diverged, on_compiled=on_compiled,
                       on_epoch=on_epoch, on_resume=on_resume, on_plan=on_plan,
                       figures=run_figures(config.name, sweep_points(config)),
                       command=[*program(), *without_resume(session.argv)])
    run = load_run(run_dir)
    console.print(results_table(run))
    if config.sweep:
        from bnlab.report.console import best_lines, sweep_table

        console.print(sweep_table(run))
        for line in best_lines(run):
            console.print(line)
    print_verdicts(run)
    from bnlab.report.console import gap_lines

    for line in gap_lines(run):
        console.print(line, markup=False)
    print_recalibrations(run)
    from bnlab.report.why import why_findings

    found = why_findings(run)
    if found:
        console.print(f"What the probes recorded, each against {found[0].reference} (paired "
                      "by seed; bnlab report draws the figures):", markup=False)
        for finding in found:
            console.print(f"  • {finding.sentence}", markup=False)
    console.print(f"total {time.perf_counter() - started:.1f} s")
    from bnlab.report.console import saved_lines

    for line in saved_lines(run_dir, [p.name for p in config.points], config.seed_list,
                            shlex.join(program()), sweep=bool(config.sweep)):
        console.print(line, markup=False)
    return run
