"""The checks a run folder's files go through when it is read: digests, text, JSON numbers,
the environment's form.

Each check returns ``None`` for a good file or a phrase that says what is wrong with it
("is not UTF-8 text (byte 12)"), never raises for a damaged file: ``store.reader`` gathers
the phrases as ``Damage`` and decides what they mean for the run.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.config.checks import FLOAT32_MAX
from bnlab.io import read_problem


def file_digest_problem(path: Path, sha256: str, where: str) -> str | None:
    """What is wrong with a file whose bytes must have the digest ``sha256`` (``where`` says
    which file records it), or ``None``."""
    data, problem = read_problem(path)
    if problem:
        return problem
    if hashlib.sha256(data).hexdigest() != sha256:
        return f"is damaged: its bytes do not match the digest in {where}"
    return None


def environment_problem(environment: Any) -> str | None:
    """What is wrong with a parsed ``environment.json`` (``store.provenance``) or a
    checkpoint's copy of it, or ``None``: each field that bnlab reads must have its type
    (seeds, data rows, a command, resumes, and where each part of the run ran)."""
    if not isinstance(environment, dict):
        return "is not a JSON object"
    resumes, data = environment.get("resumes", []), environment.get("data")
    fields = {"seeds": _is_list_of(environment.get("seeds", []), int),
              "command": _is_list_of(environment.get("command", []), str),
              "data": data is None or (isinstance(data, dict) and isinstance(
                  data.get("sha256", ""), str) and all(
                  _is_count(data.get(rows)) for rows in ("train", "val", "test"))),
              "resumes": isinstance(resumes, list) and all(isinstance(r, dict) for r in resumes)}
    if problem := _malformed(fields):
        return problem
    for entry in (environment, *resumes):
        packages = entry.get("packages", {})
        fields = {"packages": isinstance(packages, dict) and all(
                      v is None or isinstance(v, str) for v in packages.values()),
                  "device_count": _is_count(entry.get("device_count", 1), least=1),
                  **{key: isinstance(entry.get(key, ""), str)
                     for key in ("python", "platform", "device", "at", "note")}}
        if problem := _malformed(fields):
            return problem
    return None


def _malformed(fields: dict[str, bool]) -> str | None:
    return next((f"holds a malformed {key!r} entry" for key, good in fields.items()
                 if not good), None)


def _is_count(value: Any, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _is_list_of(value: Any, kind: type) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, kind) and not isinstance(v, bool) for v in value)


def is_sha256(value: Any) -> bool:
    """Whether ``value`` is a SHA-256 digest as bnlab writes them (64 lowercase hex)."""
    return isinstance(value, str) and len(value) == 64 and all(
        c in "0123456789abcdef" for c in value)


def json_numbers(values: Any, what: str) -> list[float]:
    """A parsed JSON list of numbers (null: NaN) as floats; anything else, an integer beyond
    float64 included, is a ``ValueError`` saying ``what`` it was."""
    if not isinstance(values, list) or not all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool))
            for v in values):
        raise ValueError(f"{what} is not a list of numbers")
    try:
        return [float("nan") if v is None else float(v) for v in values]
    except OverflowError:
        raise ValueError(f"{what} holds a number beyond float64") from None


def beyond_float32(values: np.ndarray) -> bool:
    """Whether ``values`` hold a finite number beyond float32's range, which no metric of a
    run (computed in float32) can be: a damaged record, whose squares would overflow."""
    values = np.asarray(values, np.float64)
    return bool(np.any(np.isfinite(values) & (np.abs(values) > FLOAT32_MAX)))


def text_problem(path: Path) -> tuple[str | None, str | None]:
    """``(text, None)`` for a UTF-8 file, else ``(None, what is wrong)``."""
    data, problem = read_problem(path)
    if problem:
        return None, problem
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as err:
        return None, f"is not UTF-8 text (byte {err.start})"


def parse_csv(text: str, columns: tuple[str, ...]) -> tuple[dict[str, np.ndarray] | None,
                                                            str | None]:
    """The float columns of a CSV text with exactly the header ``columns`` and an ``epoch``
    column counting 0, 1, …: ``({column: (rows,)}, None)``, or ``(None, what is wrong)``."""
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        return None, f"is not valid CSV ({err})"
    if not rows or tuple(rows[0]) != columns:
        return None, f"does not start with the header {','.join(columns)}"
    values = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(columns):
            return None, f"has {len(row)} fields on line {number}, not {len(columns)}"
        try:
            values.append([float(field) for field in row])
        except ValueError:
            return None, f"holds a value that is not a number on line {number}"
    table = np.array(values, np.float64).reshape(len(values), len(columns))
    if not np.array_equal(table[:, 0], np.arange(len(values))):
        return None, "does not number its epochs 0, 1, 2, …"
    return {column: table[:, i] for i, column in enumerate(columns)}, None


def checked_records(records: Mapping[str, np.ndarray], seeds: int) -> dict[str, np.ndarray]:
    """``records`` after checking their form (``train.loop.Recorded``): ``…/steps`` a 1-D
    int64 array per group, every other array float32 with ``seeds`` rows and, in a group,
    one record per step; anything else is a ``ValueError`` naming the array."""
    for name, values in records.items():
        group = name.split("/")[0]
        if name.endswith("/steps"):
            if values.dtype != np.int64 or values.ndim != 1:
                raise ValueError(f"its record {name} is not a list of steps")
            continue
        if values.dtype != np.float32 or values.ndim < 2 or len(values) != seeds:
            raise ValueError(f"its record {name} is {values.dtype} {values.shape}, not "
                             f"float32 with {seeds} seeds first")
        steps = records.get(f"{group}/steps")
        if steps is None or values.shape[1] != len(steps):
            raise ValueError(f"its record {name} does not hold one row per recorded step")
    return dict(records)
