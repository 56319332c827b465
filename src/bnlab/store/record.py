"""A variant's record: its checkpoint and the metadata in it, the one authoritative copy of
everything a run learned about that variant. This module owns the record's schema, writes
it and reads it back; every other file of a variant is derived from it
(``store.derived``) and the record holds each one's digest.

    <run>/<variant>/checkpoint.safetensors      (train.checkpoint: one digested file)
        arrays   the state of every seed (leading axis: the seeds, in order), and what the
                 probe plan recorded as ``records/<name>`` (``train.loop.Recorded``)
        metadata {"format": 2, "epoch": 3, "variant": "bn", "seeds": [42, 43],
                  "history": {"loss": [[…epochs] per seed], …},   NaN as null
                  "epoch_seconds": […], "compile_seconds": 1.6,
                  "diverged": {"43": {"epoch": 3, "step": 517}},
                  "test": {"test_loss": […], "test_accuracy": […]},  after the last epoch
                  "run": {"config": {…}, "environment": {…}},  the run's files as it started
                  "derived": {"seed-42/history.csv": "<sha256>", "statistics.csv": …},
                  "tensorboard": {"seed-42/train/events.out.tfevents.…": [bytes, "<sha256>"]}}
    <run>/<variant>/checkpoint.json             the metadata again, for people; never read

``tensorboard`` lists the variant's TensorBoard event files under ``tensorboard/<variant>/``
with their length when the record was written and the SHA-256 of those bytes: TensorBoard
files cannot be rebuilt from the record, and one still being written may grow past it.
Records of format 1 (bnlab before this schema) lack ``format``, ``test``, ``derived`` and
``tensorboard``; older ones lack the digest, ``run``, ``diverged`` and ``compile_seconds``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.config.checks import shown
from bnlab.io import atomic_write_json, json_default
from bnlab.store.checks import beyond_float32, checked_records, is_sha256, json_numbers
from bnlab.train.checkpoint import (
    CheckpointError,
    json_copy_problem,
    read_checkpoint,
    records_of,
    save_arrays,
    save_checkpoint,
)
from bnlab.train.history import GAP_METRICS, METRICS, Divergence, History

FORMAT = 2
STEM = "checkpoint"
TEST_METRICS = ("test_loss", "test_accuracy")
# Metadata written only since checkpoints carry a digest: without one, it was lost.
DIGESTED_ONLY = frozenset({"run", "diverged", "compile_seconds", "format", "test",
                           "derived", "tensorboard"})


@dataclass(frozen=True, eq=False)
class VariantRecord:
    """What a variant's checkpoint records (module docstring): its ``name`` (the variant's,
    or a sweep point's: its folder), the epochs it finished and their ``History`` (with
    divergences), its compile seconds, the run's config and environment as it started
    (``run``: ``{}`` in checkpoints from before it was kept), its test metrics ``(seeds,)``
    once its last epoch is evaluated (``None`` before; NaN for a diverged seed), what its
    probe plan recorded (``probes``), and the digests of its derived files and TensorBoard
    files. ``sha256`` is the checkpoint's own digest (``None`` for one from before
    digests)."""

    name: str
    epoch: int
    history: History
    compile_seconds: float = float("nan")
    run: Mapping[str, Any] = field(default_factory=dict)
    test_loss: np.ndarray | None = None
    test_accuracy: np.ndarray | None = None
    probes: Mapping[str, np.ndarray] = field(default_factory=dict)
    derived: Mapping[str, str] = field(default_factory=dict)
    tensorboard: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    sha256: str | None = None
    format: int = FORMAT
    document: Mapping[str, Any] | None = field(default=None, repr=False)  # as read

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.history.seeds

    def finished(self, epochs: int) -> bool:
        """Whether this is the variant's last checkpoint: every epoch trained, or every
        seed diverged."""
        return self.epoch == epochs or set(self.history.diverged) >= set(self.seeds)

    def metadata(self) -> dict[str, Any]:
        """The JSON document the checkpoint holds (less its ``epoch``, which
        ``train.checkpoint`` adds)."""
        return {"format": self.format, "variant": self.name, "seeds": list(self.seeds),
                "history": {m: v for m, v in self.history.per_seed.items()},
                "epoch_seconds": list(self.history.epoch_seconds),
                "diverged": divergences_to_json(self.history.diverged),
                "compile_seconds": self.compile_seconds,
                "test": None if self.test_accuracy is None else {
                    "test_loss": nan_as_null(self.test_loss),
                    "test_accuracy": nan_as_null(self.test_accuracy)},
                "run": dict(self.run), "derived": dict(self.derived),
                "tensorboard": {path: list(entry) for path, entry in self.tensorboard.items()}}


def write_record(variant_dir: Path, state: Any, record: VariantRecord,
                 stem: str = STEM) -> tuple[str, dict[str, Any]]:
    """Write ``record`` with ``state`` (any pytree of arrays, leading axis the seeds) as
    ``<variant_dir>/<stem>.safetensors`` and its JSON copy, atomically; returns the
    checkpoint's digest and its document (``read_record`` gives the same)."""
    metadata = record.metadata()
    sha256 = save_checkpoint(variant_dir / stem, state, epoch=record.epoch, metadata=metadata,
                             records=record.probes)
    document = json.loads(json.dumps({"epoch": record.epoch, **metadata},
                                     default=json_default))
    return sha256, {**document, "sha256": sha256}


def rewritten_record(variant_dir: Path, arrays: Mapping[str, np.ndarray],
                     record: VariantRecord) -> VariantRecord:
    """``record`` written again with its checkpoint's ``arrays`` (as ``read_record`` gave
    them): a record whose metadata changed and whose state did not."""
    metadata = record.metadata()
    sha256 = save_arrays(variant_dir / STEM, arrays, epoch=record.epoch, metadata=metadata,
                         records=record.probes)
    document = json.loads(json.dumps({"epoch": record.epoch, **metadata},
                                     default=json_default))
    return replace(record, sha256=sha256, document={**document, "sha256": sha256})


def write_json_copy(variant_dir: Path, record: VariantRecord) -> None:
    """``checkpoint.json`` written again from a record ``read_record`` gave."""
    atomic_write_json(variant_dir / f"{STEM}.json", dict(record.document or {}))


def read_record(variant_dir: Path, stem: str = STEM
                ) -> tuple[dict[str, np.ndarray], VariantRecord]:
    """``(arrays, record)`` of ``<variant_dir>/<stem>.safetensors`` after checking its digest
    and form; a missing, unreadable, changed or malformed checkpoint is a one-line
    ``CheckpointError`` naming it."""
    path = (variant_dir / stem).with_suffix(".safetensors")
    arrays, metadata = read_checkpoint(variant_dir / stem)
    if metadata["sha256"] is None and DIGESTED_ONLY & set(metadata):
        raise CheckpointError(path, "has lost its digest (it holds what only digested "
                                    "checkpoints hold)")
    try:
        record = record_from_metadata(metadata, records_of(arrays))
    except (KeyError, TypeError, ValueError) as err:
        reason = f"{type(err).__name__}: {err}" if isinstance(err, KeyError) else err
        raise CheckpointError(path, f"is not a bnlab record ({reason})") from None
    return arrays, record


def json_copy_damage(variant_dir: Path, record: VariantRecord) -> str | None:
    """What is wrong with ``checkpoint.json`` beside a record read by ``read_record``, or
    ``None`` (it must hold the checkpoint's own document)."""
    return json_copy_problem(variant_dir / STEM, record.document or {})


def record_from_metadata(metadata: Mapping[str, Any],
                         probes: Mapping[str, np.ndarray] | None = None) -> VariantRecord:
    """A checkpoint's metadata and probe arrays as a ``VariantRecord``; malformed metadata
    is a ``KeyError``/``TypeError``/``ValueError``."""
    epoch, seeds = metadata["epoch"], metadata["seeds"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError("its epoch is not a whole number")
    if not isinstance(seeds, list) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError("its seeds are not a list of integers")
    if not isinstance(metadata["history"], dict) or not (
            set(metadata["history"]) <= {*METRICS, *GAP_METRICS}
            and (epoch == 0 or set(METRICS) <= set(metadata["history"]))):
        raise ValueError(f"its history is not {{metric: rows}} of {', '.join(METRICS)} "
                         f"[{', '.join(GAP_METRICS)}]")
    per_seed = {metric: _per_seed(rows, metric, len(seeds), epoch)
                for metric, rows in metadata["history"].items()}
    history = History(tuple(seeds), per_seed,
                      json_numbers(metadata["epoch_seconds"], "its epoch_seconds")[:epoch],
                      divergences_from_json(metadata.get("diverged", {}), "diverged"))
    run = metadata.get("run", {})
    if not isinstance(run, dict):
        raise ValueError("its copy of the run is not a JSON object")
    name = metadata.get("variant", "")
    test = _test(metadata.get("test"), len(seeds)) or {}
    record = VariantRecord(
        name if isinstance(name, str) else "", epoch, history,
        json_numbers([metadata.get("compile_seconds")], "its compile_seconds")[0], run,
        test.get("test_loss"), test.get("test_accuracy"),
        checked_records(probes or {}, len(seeds)),
        _digests(metadata.get("derived", {})), _tensorboard(metadata.get("tensorboard", {})),
        metadata.get("sha256"), metadata.get("format", 1), dict(metadata))
    if record.format not in (1, FORMAT):
        raise ValueError(f"its format {shown(record.format)} is not one this bnlab reads")
    return record


def with_history(record: VariantRecord, history: History) -> VariantRecord:
    """``record`` with ``history`` (e.g. after another epoch)."""
    return replace(record, history=history, epoch=history.epochs)


def _per_seed(rows: Any, metric: str, seeds: int, epoch: int) -> np.ndarray:
    if not isinstance(rows, list):
        raise ValueError(f"its {metric} history is not a list")
    values = np.array([json_numbers(row, f"its {metric} history") for row in rows], np.float64)
    if beyond_float32(values):
        raise ValueError(f"its {metric} history holds a value beyond float32")
    if values.shape != (seeds, epoch) and not (epoch == 0 and values.size == 0):
        raise ValueError(f"its {metric} history is {values.shape}, not ({seeds}, {epoch})")
    return values.reshape(seeds, epoch)


def _test(data: Any, seeds: int) -> dict[str, np.ndarray] | None:
    if data is None:
        return None
    if not isinstance(data, dict) or set(data) != set(TEST_METRICS):
        raise ValueError("its test metrics are not {test_loss, test_accuracy}")
    test = {m: np.array(json_numbers(data[m], f"its {m}"), np.float64) for m in TEST_METRICS}
    if any(v.shape != (seeds,) or beyond_float32(v) for v in test.values()):
        raise ValueError("its test metrics are not one float32 value per seed")
    return test


def _digests(data: Any) -> dict[str, str]:
    if not isinstance(data, dict) or not all(
            _relative_file(name) and is_sha256(digest) for name, digest in data.items()):
        raise ValueError("its derived files are not {file: sha256}")
    return dict(data)


def _tensorboard(data: Any) -> dict[str, tuple[int, str]]:
    if not isinstance(data, dict) or not all(
            _relative_file(name) and isinstance(entry, list) and len(entry) == 2
            and isinstance(entry[0], int) and not isinstance(entry[0], bool)
            and entry[0] >= 0 and is_sha256(entry[1]) for name, entry in data.items()):
        raise ValueError("its TensorBoard files are not {file: [bytes, sha256]}")
    return {name: (entry[0], entry[1]) for name, entry in data.items()}


def _relative_file(name: Any) -> bool:
    """A path inside a folder: relative, without ``..``, NUL or backslashes."""
    if not isinstance(name, str) or not name or "\0" in name or "\\" in name:
        return False
    path = Path(name)
    return not path.is_absolute() and ".." not in path.parts


def nan_as_null(values: Any) -> Any:
    """``values`` (a number or an array) for JSON: NaN becomes ``None`` (null)."""
    array = np.asarray(values, np.float64)
    if array.ndim == 0:
        return None if np.isnan(array) else float(array)
    return [None if np.isnan(v) else float(v) for v in array]


def divergences_to_json(diverged: Mapping[int, Divergence]) -> dict[str, dict[str, int]]:
    """``{seed: Divergence}`` as ``{"43": {"epoch": 3, "step": 517}}``."""
    return {str(seed): {"epoch": d.epoch, "step": d.step} for seed, d in diverged.items()}


def divergences_from_json(data: Any, where: str) -> dict[int, Divergence]:
    """Inverse of ``divergences_to_json``; a malformed value is a ``ValueError``."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} is not a JSON object")
    diverged = {}
    for seed, value in data.items():
        if (not isinstance(value, dict) or not isinstance(value.get("epoch"), int)
                or not isinstance(value.get("step"), int | None)):
            raise ValueError(f"{where}[{seed!r}] is not {{\"epoch\": e, \"step\": s}}")
        try:
            diverged[int(seed)] = Divergence(value["epoch"], value["step"])
        except ValueError:
            raise ValueError(f"{where} names a seed {seed!r} that is not a number") from None
    return diverged
