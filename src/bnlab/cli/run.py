"""``bnlab run``, ``seed``, ``sweep`` and ``probe``: ``bnlab.run`` / ``sweep`` / ``probe``
with live progress, then the run's results, verdicts, findings and saved files."""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bnlab.cli.session import (
    cli_option,
    command_observer,
    companion,
    console,
    data_options,
    print_recalibrations,
    program,
    session,
    without_resume,
)

if TYPE_CHECKING:  # the command imports the library only when it runs (a fast --help)
    from bnlab.store.runs import Run


def cmd_run(args: argparse.Namespace) -> int:
    from bnlab.api import configure_jax

    configure_jax(cache_dir=args.cache_dir)  # before anything runs JAX (validation does)
    from bnlab.api import run, sweep

    if args.retry_diverged and not args.resume:
        from bnlab.errors import ConfigError

        raise ConfigError("--retry-diverged retrains the diverged variants of a run being "
                          "resumed; add --resume")
    train = sweep if getattr(args, "needs_sweep", False) else run
    started = time.perf_counter()
    with command_observer() as observer:
        stored = train(args.experiment, **run_options(args), observer=observer)
    print_run(stored, started)
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from bnlab.api import configure_jax

    configure_jax(cache_dir=args.cache_dir)
    from bnlab.api import probe

    started = time.perf_counter()
    with command_observer() as observer:
        probed = probe(Path(args.experiment), measures_every=args.measures_every,
                       variant=args.variant, **run_options(args), observer=observer)
    print_run(probed.run, started)
    if probed.reproduction is not None:
        console.print(probed.reproduction.sentence, markup=False)
    return 0


def run_options(args: argparse.Namespace) -> dict:
    """The options every training command gives ``bnlab.run``."""
    return dict(seeds=args.seeds, epochs=args.epochs, train_rows=args.train_rows,
                runs_dir=args.runs_dir,
                resume=args.resume, retry_diverged=args.retry_diverged,
                executor=getattr(args, "ray", None) or "local", settings=args.settings,
                command=[*program(), *without_resume(session.argv)], **data_options(args))


def print_run(run: Run, started: float) -> None:
    """What follows a run's training: its results, sweep answers, verdicts, gaps,
    recalibrations and probe findings, the time it took, and the files it saved."""
    from bnlab.report.console import gap_lines, results_table, saved_lines, verdict_lines
    from bnlab.report.sweep_lines import best_lines, sweep_table
    from bnlab.report.why import why_lines

    console.print(results_table(run))
    if run.config.sweep:
        console.print(sweep_table(run))
        for line in best_lines(run):
            console.print(line)
    for line in verdict_lines(run, cli_option):
        console.print(line)
    for line in gap_lines(run):
        console.print(line, markup=False)
    print_recalibrations(run)
    heading, lines = why_lines(run)
    if lines:
        console.print(heading, markup=False)
        for line in lines:
            console.print(f"  • {line}", markup=False)
    console.print(f"total {time.perf_counter() - started:.1f} s")
    config = run.config
    for line in saved_lines(run.path, [p.name for p in config.points], config.seed_list,
                            shlex.join(program()), sweep=bool(config.sweep),
                            tensorboard=shlex.quote(companion("tensorboard"))):
        console.print(line, markup=False)
