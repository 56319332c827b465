"""``bnlab recalibrate RUN --batches N``: a finished run's BatchNorm statistics recomputed
over N training batches (``experiments.recalibrate``), written as ``<variant>/recalibrated``
beside its checkpoint, with the validation accuracy before and after printed per seed."""

from __future__ import annotations

import argparse
from pathlib import Path

from bnlab.cli.commands import run_folder
from bnlab.cli.session import console, load_splits


def cmd_recalibrate(args: argparse.Namespace) -> int:
    from bnlab.api import configure_jax

    configure_jax(cache_dir=args.cache_dir)
    from bnlab.experiments.recalibrate import recalibrate_run
    from bnlab.report.console import recalibration_table
    from bnlab.store.lock import RunLock
    from bnlab.store.reader import load_run

    path = run_folder(Path(args.run), args.runs_dir)
    run = load_run(path)
    splits = load_splits(args, run.config.dataset)
    with RunLock(path):
        results = recalibrate_run(path, run.config, splits, args.batches)
    console.print(recalibration_table(results))
    for result in results:
        console.print(f"saved {path / result.point / 'recalibrated.safetensors'}",
                      markup=False)
    return 0
