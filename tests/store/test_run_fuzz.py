"""Fuzzing the run-folder reader: whatever a run's files hold, ``load_run`` and ``list_runs``
give a ``Run`` that names every changed file in its ``damage`` (or, only when neither
config.json nor any checkpoint can be read, a one-line ``BnlabError``), never another
exception, and never write into the folder; and every ``Run`` they give can be compared
(verdicts or a ``BnlabError``), shown (``run_overview``) and reported (``render_report``).

Inputs: a finished run written by the runner (``pristine_run``) with one or more of its
files — config.json, environment.json, summary.json, the figures, each variant's
statistics.csv, history CSVs, checkpoint and its JSON copy, and every TensorBoard event
file — replaced by arbitrary bytes, truncated, overwritten in a slice, removed; JSON files
replaced by any JSON value or with any subtree replaced by one; a CSV field replaced by any
number or text; a checkpoint rewritten as one from before digests with any subtree of its
metadata replaced. The folder is copied once per test and each example's files are put back
afterwards. Examples are derandomized (the same on every machine) and nothing is kept
between runs.

What no reader can tell, and the oracle therefore allows: a change that leaves a file's
content the same where it is compared by value (JSON that parses to the same value: the run's
config.json and environment.json against the records' copies, a checkpoint.json against its
checkpoint's header, summary.json against its own digest). Every other file is checked by a
digest of its bytes, so any change to it is named; what other damage hides is listed in
``masked``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import rich.console
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from bnlab.errors import BnlabError
from bnlab.report import html
from bnlab.report.console import run_overview
from bnlab.store.reader import list_runs, load_run
from bnlab.store.record import DIGESTED_ONLY
from bnlab.store.runs import Run, UnreadableRun

FUZZ = settings(max_examples=int(os.environ.get("NEX", 100)), deadline=None,
                derandomize="NEX" not in os.environ, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
           | st.sampled_from([2**64, -(2**63), 0, 1, 2, -1, 1e308, 3.5e38, "bn", "plain",
                              "curves.png", "../config.json", "seed-1", "\x00", "a" * 300]))
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
NUMBER_TEXTS = (st.floats().map(repr) | st.integers().map(str)
                | st.sampled_from(["nan", "inf", "-inf", "1e999", "1e308", "-1e308", "", "x",
                                   "0x10", "1_0", " 1", "9" * 5000, "\x00", '"1"']))


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file below ``directory`` (hidden and temporary ones included) and its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def parsed_json(raw: bytes):
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def subtree_paths(value, prefix=()) -> list[tuple]:
    """The paths of every subtree of a JSON value (itself included)."""
    paths = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            paths += subtree_paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            paths += subtree_paths(inner, (*prefix, i))
    return paths


def replaced(value, path: tuple, new):
    """``value`` with the subtree at ``path`` replaced by ``new`` (a copy)."""
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


def differing_paths(a, b, prefix=()) -> list[tuple]:
    """Where two JSON values differ (NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for key in sorted(set(a) | set(b), key=str)
                for p in (differing_paths(a[key], b[key], (*prefix, key))
                          if key in a and key in b else [(*prefix, key)])]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b, strict=True))
                for p in differing_paths(x, y, (*prefix, i))]
    same = (type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a)
                                               and math.isnan(b))))
    return [] if same else [prefix]


def undetectable(file: str, old: bytes, new: bytes | None) -> bool:
    """Whether no reader can tell ``new`` from ``old`` (see the module docstring)."""
    if new is None:
        return False
    if new == old:
        return True
    if file.endswith(".json"):
        a, b = parsed_json(old), parsed_json(new)
        return a is not None and b is not None and not differing_paths(a, b)
    return False


def change(file: str, old: bytes, new: bytes | None) -> str:
    """A short description of how ``new`` differs from ``old`` (for failure messages)."""
    if new is None:
        return f"{file} removed"
    a, b = parsed_json(old), parsed_json(new)
    if file.endswith(".json") and a is not None and b is not None:
        return f"{file} changed at {differing_paths(a, b)[:5]}"
    start = next((i for i, (x, y) in enumerate(zip(old, new, strict=False)) if x != y),
                 min(len(old), len(new)))
    return f"{file} changed from byte {start}: {old[start:start + 40]!r} -> " \
           f"{new[start:start + 40]!r} (length {len(old)} -> {len(new)})"


@st.composite
def mutated(draw, file: str, old: bytes) -> bytes | None:
    """New bytes for ``file`` (``None``: removed)."""
    kinds = ["bytes", "truncate", "overwrite", "remove"]
    if file.endswith(".json"):
        kinds += ["json", "subtree", "subtree"]
    if file.endswith(".csv"):
        kinds += ["field", "field"]
    if file.endswith(".safetensors"):
        kinds += ["legacy", "legacy"]
    kind = draw(st.sampled_from(kinds))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "truncate":
        return old[:draw(st.integers(0, len(old) - 1))]
    if kind == "overwrite":
        start = draw(st.integers(0, len(old) - 1))
        piece = draw(st.binary(min_size=1, max_size=16))
        return old[:start] + piece + old[start + len(piece):]
    if kind == "remove":
        return None
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "subtree":
        document = json.loads(old)
        path = draw(st.sampled_from(subtree_paths(document)))
        return json.dumps(replaced(document, path, draw(JSON_VALUES)), indent=2).encode()
    if kind == "field":
        rows = list(csv.reader(io.StringIO(old.decode(), newline="")))
        row = draw(st.integers(0, len(rows) - 1))
        column = draw(st.integers(0, len(rows[row]) - 1))
        rows[row][column] = draw(NUMBER_TEXTS)
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        return out.getvalue().encode()
    # "legacy": the checkpoint without its digest (and, as before digests, without what only
    # digested ones hold, or not), its metadata with any subtree replaced
    arrays = load_safetensors(old)
    header = json.loads(old[8:8 + int.from_bytes(old[:8], "little")])["__metadata__"]
    document = json.loads(header["bnlab"])
    if draw(st.booleans()):
        document = {k: v for k, v in document.items() if k not in DIGESTED_ONLY}
    path = draw(st.sampled_from(subtree_paths(document)))
    return save_safetensors(arrays, metadata={
        "bnlab": json.dumps(replaced(document, path, draw(JSON_VALUES)))})


@pytest.fixture
def curves_once(monkeypatch):
    """``report.html`` draws the learning curves once per distinct set of histories (the
    figure is the slow part of a report, and most examples keep the histories)."""
    drawn: dict = {}
    draw = html._curves

    def cached(run: Run) -> str:
        key = (run.path.name, tuple(
            (name, h.seeds, tuple(np.asarray(v).tobytes() for v in h.per_seed.values()),
             tuple(sorted(h.diverged.items())))
            for name, h in run.histories.items()))
        if key not in drawn:
            drawn[key] = draw(run)
        return drawn[key]
    monkeypatch.setattr(html, "_curves", cached)


def check_uses(run: Run) -> None:
    """What a reader does with a run: none of it raises, except a ``BnlabError`` from
    ``comparisons`` while ``verdict_problem`` says why."""
    try:
        verdicts = run.comparisons()
        assert run.verdict_problem() is None and isinstance(verdicts, list)
    except BnlabError as err:
        assert "\n" not in str(err) and run.verdict_problem() is not None
    console = rich.console.Console(file=io.StringIO(), width=120)
    console.print(run_overview(run))
    assert isinstance(html.render_report([run]), str)
    assert repr(run) and run.status and run.epochs_per_variant is not None
    assert isinstance(run.diverged, dict) and isinstance(run.left_out, dict)
    for variant in run.config.variants:
        run.variant_status(variant.name)


def load_damaged(folder: Path, originals: dict[str, bytes],
                 changes: dict[str, bytes | None]) -> Run | None:
    """Write ``changes`` into ``folder``, load and list it, check the answers, put the
    original files back; the ``Run`` (or ``None`` for a ``BnlabError``)."""
    try:
        for file, new in changes.items():
            if new is None:
                (folder / file).unlink()
            else:
                (folder / file).write_bytes(new)
        before = snapshot(folder)
        try:
            run = load_run(folder)
        except BnlabError as err:
            assert "\n" not in str(err)
            unreadable = {"config.json"} | {f for f in originals
                                            if f.endswith("/checkpoint.safetensors")}
            assert unreadable <= set(changes), err  # config.json is recovered from anywhere
            assert isinstance(err, UnreadableRun) or "config.json" not in before
            run = None
        listed, unlisted = list_runs(folder.parent)
        assert snapshot(folder) == before  # reading never writes into the folder
        if run is None:
            assert listed == [] and [path for path, _ in unlisted] == [folder]
        else:
            assert unlisted == [] and [r.damage for r in listed] == [run.damage]
            check_uses(run)
        return run
    finally:
        for file in changes:
            (folder / file).write_bytes(originals[file])


def named(file: str, new: bytes | None, run: Run) -> bool:
    """Whether ``run.damage`` names a changed ``file``: itself; for a removed event file, its
    folder (which then holds none); for a checkpoint or its JSON copy, any file of its
    variant (a checkpoint stripped of its digest is read unchecked, and its copy disagrees)."""
    damaged = {d.file for d in run.damage}
    if file in damaged:
        return True
    if new is None and "/events.out.tfevents." in file:
        return str(Path(file).parent) in damaged
    if file.endswith(("/checkpoint.safetensors", "/checkpoint.json")):
        return any(d.variant == file.split("/")[0] for d in run.damage)
    return False


def masked(file: str, originals: dict[str, bytes], changes: dict[str, bytes | None],
           run: Run) -> bool:
    """Whether other damage keeps ``file`` from being checked: a variant's derived files and
    TensorBoard files are checked by the digests its record holds (none when the record is
    lost); the figures by the digests in a sound summary.json; a missing summary.json is
    noted only when every record says its variant finished; config.json and
    environment.json are compared with the records' copies (none when every record is
    lost)."""
    parts = file.split("/")
    lost = {d.variant for d in run.damage if d.file.endswith("/checkpoint.safetensors")}
    summary_unsound = any(d.file == "summary.json" for d in run.damage)
    if "/" not in file and file.endswith((".png", ".svg")):  # the run's figures
        return summary_unsound
    if file == "summary.json":
        return changes[file] is None and bool(lost)
    if file in ("config.json", "environment.json"):
        return not run.records
    variant = parts[1] if parts[0] == "tensorboard" else parts[0]
    return variant in lost


def unnamed(run: Run, originals: dict[str, bytes], changes: dict[str, bytes | None]
            ) -> list[str]:
    """How each changed file that ``run.damage`` should name but does not was changed."""
    return [change(file, originals[file], new) for file, new in changes.items()
            if not undetectable(file, originals[file], new) and not named(file, new, run)
            and not masked(file, originals, changes, run)]


@FUZZ
@given(data=st.data())
def test_one_damaged_file_is_named_and_nothing_else_breaks(finished_run, curves_once, data):
    originals = snapshot(finished_run)
    file = data.draw(st.sampled_from(sorted(originals)))
    changes = {file: data.draw(mutated(file, originals[file]))}
    run = load_damaged(finished_run, originals, changes)
    if not undetectable(file, originals[file], changes[file]):
        assert run is not None  # one file lost: config.json or a checkpoint's copy remains
        assert not unnamed(run, originals, changes), run.damage
        assert not run.complete


@settings(FUZZ, max_examples=int(os.environ.get("NEX2", 50)))
@given(data=st.data())
def test_several_damaged_files_are_named_unless_one_hides_another(finished_run, curves_once,
                                                                  data):
    originals = snapshot(finished_run)
    files = data.draw(st.lists(st.sampled_from(sorted(originals)), min_size=2, max_size=5,
                               unique=True))
    changes = {file: data.draw(mutated(file, originals[file])) for file in files}
    run = load_damaged(finished_run, originals, changes)
    if run is not None:
        assert not unnamed(run, originals, changes), run.damage
        if not all(undetectable(f, originals[f], new) for f, new in changes.items()):
            assert not run.complete


def test_the_pristine_run_is_complete_and_every_file_is_checked(finished_run, curves_once):
    run = load_damaged(finished_run, snapshot(finished_run), {})
    assert run is not None and run.complete and run.damage == ()
