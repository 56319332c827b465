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
    from bnlab.api import recalibrate
    from bnlab.report.console import recalibration_table
    from bnlab.store.reader import load_run

    path = run_folder(Path(args.run), args.runs_dir)
    run = load_run(path)
    results = recalibrate(run, batches=args.batches, data=load_splits(args, run.config.dataset))
    console.print(recalibration_table(results))
    for result in results:
        console.print(f"saved {path / result.point / 'recalibrated.safetensors'}",
                      markup=False)
    return 0
