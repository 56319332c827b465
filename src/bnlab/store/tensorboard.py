"""TensorBoard event files for one variant's seeds, laid out as Keras's ``TensorBoard`` callback.

    <log_dir>/                      e.g. runs/<run>/tensorboard/<variant>/
      seed-<s>/                     HParams session: the variant's hyperparameters and ``seed``
        train/                      epoch_loss, epoch_accuracy, epoch_learning_rate and the
                                    activations/<layer> histograms on the probe batch
        validation/                 epoch_loss, epoch_accuracy (from val_loss, val_accuracy);
                                    for a model with BatchNorm also epoch_batchstats_loss,
                                    epoch_batchstats_accuracy (batch statistics) and
                                    epoch_bn_gap_loss, epoch_bn_gap_accuracy (inference −
                                    batch statistics, store.derived)
        test/                       epoch_loss, epoch_accuracy after every epoch (a probe
                                    plan's test_each_epoch)
        probes/                     what a probe plan recorded, at the global step it was
                                    taken: activations/<input>/<statistic> (p15 … std),
                                    ics/<dense layer>, ics_cosine/<dense layer>,
                                    landscape/{loss, loss_range, gradient_change,
                                    beta_smoothness} (train.probes)

Every epoch value's step is the 0-based epoch index, as Keras logs it
(``on_epoch_end(epoch)``); a probe's step is the global training step (0 before the first).
``tensorboard --logdir runs/<run>/tensorboard`` shows the runs ``<variant>/seed-<s>/train``
and ``…/validation``, and the HPARAMS tab one row per variant × seed (``seed`` is an hparam,
so seeds are not merged into one group). Its metric columns are the last values of the scalar
curves below each session (group ``validation``, tag ``epoch_accuracy``: the final
val_accuracy), so the table is current after every epoch and right for an interrupted run.

Writes are synchronous: when ``log_epoch`` returns, the epoch is in the event files and
fsync-ed (and ``store.event_files.event_digests`` can put their length and digest in the
variant's record), so a killed run keeps every complete epoch (tensorboardX's
``SummaryWriter`` hands events to a background thread and its ``flush`` does not wait for
them). The first epoch a
logger writes is marked as a session (re)start, so when a resumed run logs epoch k again,
TensorBoard drops what the killed process had written for epochs ≥ k.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from bnlab.store.derived import GAPS
from bnlab.train.probes import STATISTICS


@contextlib.contextmanager
def _torch_unimportable() -> Iterator[None]:
    """``import torch`` fails fast (``ModuleNotFoundError``: a ``None`` in ``sys.modules``)
    within the block, unless PyTorch is already imported. tensorboardX's package imports its
    ``SummaryWriter``, which imports PyTorch where it is installed only to accept its tensors
    (bnlab never passes one, and uses none of the writer): a second or more at every start."""
    if "torch" in sys.modules:
        yield
        return
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


with _torch_unimportable():
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event, SessionLog
    from tensorboardX.proto.summary_pb2 import Summary
    from tensorboardX.summary import histogram, scalar
    from tensorboardX.summary import hparams as hparams_summaries

HParam = bool | int | float | str
HISTOGRAM_BINS = 30  # equal-width buckets from min to max, as tf.summary.histogram (Keras)


def is_histogram_layer(name: str) -> bool:
    """Which probe intermediates get a histogram: Dense pre-activations
    (``dense_1/pre_activation``) and the outputs of normalization layers
    (``batch_normalization_2``, ``layer_normalization``, ``ghost_batch_normalization_1``)."""
    return name.endswith("/pre_activation") or re.search(r"normalization(_\d+)?$", name) is not None


class TensorBoardLogger:
    """Per-epoch scalars, activation histograms and HParams of one variant's seeds.

    Arguments:
        log_dir: the variant's folder (created); layout in the module docstring.
        seeds: the seeds, in the order of the leading axis of every array logged.
        hparams: ``{name: bool | int | float | str}`` (the runner's
            ``variant_hparams``); each seed's session gets these plus ``seed``.
        probes, test: also open the ``probes`` and ``test`` runs (``log_records``);
            ``steps_per_epoch`` places an epoch's first global step in the probes run.

    Use as a context manager, or call ``close()``.
    """

    def __init__(self, log_dir: Path, seeds: Sequence[int],
                 hparams: Mapping[str, HParam], *, probes: bool = False,
                 test: bool = False, steps_per_epoch: int = 0) -> None:
        for key, value in hparams.items():
            if not isinstance(value, HParam):
                raise TypeError(f"hparam {key!r} is a {type(value).__name__}; TensorBoard "
                                "takes bool, int, float or str")
        self.seeds = tuple(seeds)
        self._sessions = [_open(log_dir / f"seed-{seed}") for seed in self.seeds]
        self._train = [_open(log_dir / f"seed-{seed}" / "train") for seed in self.seeds]
        self._validation = [_open(log_dir / f"seed-{seed}" / "validation")
                            for seed in self.seeds]
        self._probes = [_open(log_dir / f"seed-{seed}" / "probes")
                        for seed in self.seeds] if probes else []
        self._test = [_open(log_dir / f"seed-{seed}" / "test")
                      for seed in self.seeds] if test else []
        self._steps_per_epoch = steps_per_epoch
        self._restart_marked = False
        self._closed = False
        # Only the session start is written, not the hparams "experiment" summary: without
        # one, TensorBoard takes the columns from all sessions (their union, across variants)
        # and the metrics from the scalar tags below them.
        for session, seed in zip(self._sessions, self.seeds, strict=True):
            _, start, _ = hparams_summaries({**hparams, "seed": seed}, {})
            _write(session, start, step=0)
        self._flush()

    def log_epoch(self, epoch: int, metrics: Mapping[str, np.ndarray], learning_rate: float,
                  activations: Mapping[str, np.ndarray] | None = None) -> None:
        """Write one epoch (0-based ``epoch``, the step) for every seed and flush.

        Arguments:
            metrics: ``{name: (seeds,)}``; ``val_<m>`` goes to ``validation`` as
                ``epoch_<m>``, any other ``<m>`` to ``train`` as ``epoch_<m>``; a non-finite
                value (a diverged seed) is left out, so its curve ends where it diverged.
            learning_rate: logged to ``train`` as ``epoch_learning_rate``.
            activations: ``{layer: (seeds, rows, features)}`` as ``SeedBatchTrainer.probe``
                returns them; the layers that ``is_histogram_layer`` selects are written to
                ``train`` as ``activations/<layer>`` histograms of all rows × features values
                (non-finite values left out), the others are ignored.
        """
        metrics = {name: self._per_seed(name, values, 1) for name, values in metrics.items()}
        metrics.update({f"val_{gap}": metrics[inference] - metrics[batch]
                        for gap, (inference, batch) in GAPS.items()
                        if inference in metrics and batch in metrics})
        layers = {name: self._per_seed(name, values, 3)
                  for name, values in (activations or {}).items() if is_histogram_layer(name)}
        self._mark_restart(epoch)
        for i, (train, validation) in enumerate(zip(self._train, self._validation,
                                                    strict=True)):
            for name, values in metrics.items():
                if not np.isfinite(values[i]):  # a diverged seed: its curve ends
                    continue
                run = validation if name.startswith("val_") else train
                _write(run, scalar(f"epoch_{name.removeprefix('val_')}", values[i]), epoch)
            _write(train, scalar("epoch_learning_rate", learning_rate), epoch)
            for name, values in layers.items():
                # (rows·features,) at most, in float64: squares of float32 values near
                # divergence (1e30) overflow float32 in tensorboardX's sums.
                finite = values[i][np.isfinite(values[i])].astype(np.float64)
                if finite.size:
                    _write(train, histogram(f"activations/{name}", finite,
                                            histogram_edges(finite)), epoch)
        self._flush()

    def log_records(self, epoch: int, records: Mapping[str, np.ndarray]) -> None:
        """Write what a probe plan recorded in one epoch (0-based ``epoch``): ``records`` as
        ``train.loop.Recorded.append`` returns them. Non-finite values (a diverged seed's)
        are left out."""
        self._mark_restart(epoch)
        activation_steps = records.get("activations/steps", ())
        measure_steps = records.get("measures/steps", ())
        for i in range(len(self.seeds)):
            for name, values in records.items():
                if name.startswith("activations/") and name.endswith("/layer"):
                    where = name.removesuffix("/layer")
                    for row, step in zip(values[i], activation_steps, strict=True):
                        for statistic, value in zip(STATISTICS, row, strict=True):
                            self._scalar(self._probes[i], f"{where}/{statistic}", value, step)
            if "measures/steps" in records:
                self._log_measures(i, records, measure_steps)
            for name in ("loss", "accuracy"):
                if f"test/{name}" in records:
                    self._scalar(self._test[i], f"epoch_{name}",
                                 records[f"test/{name}"][i, 0], epoch)
        self._flush()

    def _log_measures(self, i: int, records: Mapping[str, np.ndarray],
                      steps: Sequence[int]) -> None:
        run = self._probes[i]
        for k, step in enumerate(steps):
            for name, values in records.items():
                if name.startswith(("measures/ics/", "measures/ics_cosine/")):
                    self._scalar(run, name.removeprefix("measures/"), values[i, k], step)
            along = records["measures/loss_along"][i, k]
            change = records["measures/grad_change"][i, k]
            sizes = records["measures/step_sizes"][i, k]
            norm = records["measures/grad_norm"][i, k]
            self._scalar(run, "landscape/loss", records["measures/loss"][i, k], step)
            self._scalar(run, "landscape/loss_range", along.max() - along.min(), step)
            self._scalar(run, "landscape/gradient_change", change.max(), step)
            self._scalar(run, "landscape/beta_smoothness",
                         np.max(change / (sizes * norm)), step)

    @staticmethod
    def _scalar(run: EventsWriter, tag: str, value: float, step: int) -> None:
        if np.isfinite(value):  # a diverged seed: its curve ends
            _write(run, scalar(tag, float(value)), int(step))

    def _mark_restart(self, epoch: int) -> None:
        """Mark the first write of this logger as a session (re)start in every run, at the
        epoch (or, for the probes run, the global step) it begins with: TensorBoard then
        hides what a killed process had written from there on."""
        if self._restart_marked:
            return
        for run in (*self._train, *self._validation, *self._test):
            run.write_event(Event(step=epoch, wall_time=time.time(),
                                  session_log=SessionLog(status=SessionLog.START)))
        for run in self._probes:
            run.write_event(Event(step=epoch * self._steps_per_epoch, wall_time=time.time(),
                                  session_log=SessionLog(status=SessionLog.START)))
        self._restart_marked = True

    def close(self, *, completed: bool = True) -> None:
        """Flush and close the files. ``completed`` records each session's successful end;
        without it (training raised) TensorBoard shows the sessions as unfinished."""
        if self._closed:
            return
        if completed:
            *_, end = hparams_summaries({}, {})  # status: success
            for session in self._sessions:
                _write(session, end, step=0)
        for run in self._runs():
            run.close()
        self._closed = True

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close(completed=exc_type is None)

    def _per_seed(self, name: str, values: np.ndarray, ndim: int) -> np.ndarray:
        values = np.asarray(values)
        if values.ndim != ndim or len(values) != len(self.seeds):
            raise ValueError(f"{name}: expected {ndim} axes with {len(self.seeds)} seeds "
                             f"first, got shape {values.shape}")
        return values

    def _runs(self) -> tuple[EventsWriter, ...]:
        return (*self._sessions, *self._train, *self._validation, *self._test, *self._probes)

    def _flush(self) -> None:
        for run in self._runs():
            with _naming(run):
                run.flush()  # writes the buffer and fsyncs


def _open(directory: Path) -> EventsWriter:
    directory.mkdir(parents=True, exist_ok=True)
    # tensorboardX names event files by the second (and opens them with "wb"): the suffix
    # keeps a resume within the same second from truncating the killed run's file, and
    # keeps the names in time order, the order TensorBoard reads them in.
    try:
        return EventsWriter(str(directory / "events"), filename_suffix=f".{time.time_ns()}")
    except OSError as err:
        raise OSError(err.errno, err.strerror, err.filename or str(directory)) from None


def _write(run: EventsWriter, summary: Summary, step: int) -> None:
    with _naming(run):
        run.write_event(Event(summary=summary, step=step, wall_time=time.time()))


@contextlib.contextmanager
def _naming(run: EventsWriter) -> Iterator[None]:
    """An ``OSError`` while writing ``run``'s event file, with that file's name."""
    try:
        yield
    except OSError as err:
        if err.filename:
            raise
        raise OSError(err.errno, err.strerror, run._file_name) from None



def histogram_edges(values: np.ndarray) -> np.ndarray:
    """``HISTOGRAM_BINS`` equal bins over the range of finite ``values``, computed in
    float64: a range too narrow for its magnitude (every value 1e30, as a layer about to
    diverge gives) widens to ±0.1% of it, where NumPy's own bins would fail."""
    low, high = float(values.min()), float(values.max())
    middle = (low + high) / 2
    least = max(abs(middle) * 1e-3, 1e-3) if np.isfinite(middle) else 0.0
    if not high - low >= least:
        low, high = middle - least / 2, middle + least / 2
    return np.linspace(low, high, HISTOGRAM_BINS + 1)
