"""``bnlab probe RUN|FILE|PRESET``: train with Santurkar et al.'s measures recorded.

Given an experiment file or preset, it trains it with ``[probe] measures_every`` set (and
the activation statistics on). Given a run folder, it trains that run's experiment again
with the measures on, into a new folder: training is deterministic, so the retrained run
follows the same trajectory, which the command checks (every history against the
original's) before printing what the measures found (``docs/why.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bnlab.cli.commands import run_folder
from bnlab.cli.run import train_and_report
from bnlab.cli.session import console

# Float32 histories of the same program agree to rounding; another device layout's may
# differ by more (docs/sweeps.md), which the message then says.
SAME = 1e-5


def cmd_probe(args: argparse.Namespace) -> int:
    from bnlab.api import configure_jax

    configure_jax(cache_dir=args.cache_dir)
    from bnlab.config.experiment import load_experiment, with_overrides, with_settings
    from bnlab.store.reader import load_run
    from bnlab.store.runs import is_run_folder
    from bnlab.train.probes import ProbePlan

    path = run_folder(Path(args.experiment), args.runs_dir)
    source = load_run(path) if is_run_folder(path) else None
    config = source.config if source is not None else load_experiment(args.experiment)
    settings = [f"probe.measures_every={args.measures_every}"]
    if not config.probe.every:
        settings.append(f"probe.every={ProbePlan().every}")
    config = with_overrides(with_settings(config, [*settings, *args.settings]),
                            seeds=args.seeds, epochs=args.epochs)
    if source is not None:
        console.print(f"retraining {source.path} with the measures every "
                      f"{config.probe.measures_every} steps", markup=False)
    run = train_and_report(args, config)
    if source is not None:
        console.print(reproduction(source, run), markup=False)
    return 0


def reproduction(source, run) -> str:
    """Whether ``run`` (retrained with probes) followed ``source``'s trajectory: the largest
    relative difference of any history value, or why they cannot be compared."""
    if (run.config.seed_list, run.config.epochs) != (source.config.seed_list,
                                                     source.config.epochs):
        return ("not compared with the original: other seeds or epochs (--seeds / --epochs "
                "changed them)")
    worst = 0.0
    for name, history in source.histories.items():
        if name not in run.histories:
            continue
        for metric, values in history.per_seed.items():
            ours = run.histories[name].per_seed[metric]
            if ours.shape != values.shape:
                return f"not compared with the original: {name} has other epochs"
            scale = np.maximum(np.abs(values), 1e-12)
            with np.errstate(invalid="ignore"):
                difference = np.abs(ours - values) / scale
            worst = max(worst, float(np.nanmax(difference, initial=0.0)))
    if worst <= SAME:
        return (f"the retrained run reproduces {source.path.name}: every history value within "
                f"{worst:.1e} relative (recording the measures changed nothing)")
    return (f"the retrained run differs from {source.path.name} by up to {worst:.1e} relative "
            "(float rounding of another device layout grows over training; "
            "JAX_NUM_CPU_DEVICES as the original run had it reproduces it)")
