"""One variant's files, written as it trains: TensorBoard after every epoch, then its record
(``store.record``) with the digests of everything derived from it, then those files.

    writer = VariantWriter(run_dir, "bn", seeds, run={"config": …, "environment": …},
                           board=TensorBoardLogger(…))      # or board=None: no TensorBoard
    writer.board.log_epoch(…)                               # the epoch's scalars, histograms
    record = writer.save(state, history, probes)            # after every epoch
    writer.close()                                          # TensorBoard's sessions end
    record = writer.save(state, history, probes, test=(loss, accuracy))  # the last, tested

The order makes every kill safe: a record lists the TensorBoard bytes already on disk, and
its derived files follow it (a file left behind by a kill disagrees with its record's
digest and is rewritten from it by a resume).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.store.derived import derived_files, digests, write_derived
from bnlab.store.event_files import event_digests
from bnlab.store.record import VariantRecord, write_record
from bnlab.store.tensorboard import TensorBoardLogger
from bnlab.train.history import History


class VariantWriter:
    """Writes variant ``name`` of the run in ``run_dir``: its record (with ``run``, the
    run's config and environment as it started) and derived files, and TensorBoard through
    ``board`` (``None``: a variant that only gets its final record)."""

    def __init__(self, run_dir: Path, name: str, *, run: Mapping[str, Any],
                 board: TensorBoardLogger | None = None,
                 compile_seconds: float = math.nan) -> None:
        self.folder = run_dir / name
        self.tensorboard = run_dir / "tensorboard" / name
        self.name = name
        self.run = dict(run)
        self.board = board
        self.compile_seconds = compile_seconds

    def save(self, state: Any, history: History, probes: Mapping[str, np.ndarray], *,
             test: tuple[np.ndarray, np.ndarray] | None = None) -> VariantRecord:
        """Write the record of ``state`` (leaves ``(seeds, …)``) after ``history``'s epochs,
        with the test ``(loss, accuracy)`` once evaluated, then its derived files; returns
        the record as written (with its digest)."""
        files = derived_files(history)
        test_loss, test_accuracy = (None, None) if test is None else test
        record = VariantRecord(self.name, history.epochs, history, self.compile_seconds,
                               self.run, test_loss, test_accuracy, dict(probes),
                               digests(files), event_digests(self.tensorboard))
        sha256, document = write_record(self.folder, state, record)
        write_derived(self.folder, files)
        return replace(record, sha256=sha256, document=document)

    def close(self, *, completed: bool = True) -> None:
        """End the TensorBoard sessions (``completed``: successfully)."""
        if self.board is not None:
            self.board.close(completed=completed)
