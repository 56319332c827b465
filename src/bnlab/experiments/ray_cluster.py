"""Sweeps past one machine: each program of a run as a Ray task on an existing cluster.

    executor = ray_executor("auto")          # or "10.0.0.5:6379", as `ray start` printed
    run_experiment(config, splits, run_dir, executor=executor, executor_name="auto")

The driver (``bnlab sweep FILE --ray ADDRESS``) keeps the run's lock and writes its
summary; each task runs ``runner.train_job`` for one program and writes that program's
points into the same run folder, which must therefore be the same path on every node (a
shared file system, e.g. NFS, on a multi-node cluster; nothing to do on one node). The data
go to the cluster once (``ray.put``). A task whose worker dies is retried by Ray
(``max_retries``) and its retry resumes each point from the checkpoint the lost attempt
last saved, so the numbers equal an uninterrupted run's.

Ray is an optional dependency (``pip install "bnlab[ray]"``), imported only here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bnlab.config.experiment import ExperimentConfig
from bnlab.data.datasets import Splits
from bnlab.errors import BnlabError
from bnlab.experiments.observer import SILENT, Observer
from bnlab.experiments.runner import Executor, train_job
from bnlab.experiments.sweep import Program
from bnlab.store.record import VariantRecord

MAX_RETRIES = 3  # Ray's default for tasks, stated: a program survives three lost workers


def ray_executor(address: str = "auto", *, cpus_per_program: float = 1,
                 observer: Observer = SILENT) -> Executor:
    """An ``Executor`` sending each program to the Ray cluster at ``address`` (``"auto"``:
    the one this machine's ``ray start`` joined, or ``RAY_ADDRESS``) as a task of
    ``cpus_per_program`` CPUs; ``observer`` hears each program finish. Without Ray
    installed it is a ``BnlabError`` naming the extra, before anything is written."""
    ray = ray_module()

    def execute(programs: list[Program], config: ExperimentConfig, splits: Splits,
                run_dir: Path, run_copy: Mapping[str, Any]) -> Iterator[list[VariantRecord]]:
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise BnlabError(f"cannot connect to a Ray cluster at {address!r} ({err}); start "
                             "one with `ray start --head` and give its address (or auto)"
                             ) from None
        try:
            data = ray.put(splits)
            task = ray.remote(num_cpus=cpus_per_program, max_retries=MAX_RETRIES)(_train)
            pending = {task.remote(program, config, data, str(run_dir.resolve()),
                                   dict(run_copy)): program for program in programs}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                program = pending.pop(ready[0])
                try:
                    results = ray.get(ready[0])
                except ray.exceptions.RayError as err:
                    raise BnlabError(f"program {program.describe()} failed on the Ray "
                                     f"cluster: {str(err).strip().splitlines()[-1]}; the points "
                                     "it saved resume with --resume") from None
                observer.program_done(program)
                yield results
        finally:
            ray.shutdown()

    return execute


def ray_module():
    """``ray``, or a ``BnlabError`` saying how to install the ``ray`` extra."""
    try:
        import ray
    except ImportError:
        raise BnlabError("Ray is not installed; pip install \"bnlab[ray]\" on the driver and "
                         "on every node of the cluster") from None
    return ray


def _train(program: Program, config: ExperimentConfig, splits: Splits, run_dir: str,
           run_copy: dict[str, Any]) -> list[VariantRecord]:
    """The Ray task: one program into the run folder (``runner.train_job``)."""
    return train_job(program, config, splits, Path(run_dir), run_copy)
