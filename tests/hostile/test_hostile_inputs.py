"""Every hostile or unusual input of ``cases.py`` is refused in one line, or taken, within
bounded time and memory, writing nothing outside what was asked.

The cases run in one child process (``child.py``) under ``RLIMIT_AS`` (``MEMORY_LIMIT``)
and a deadline, as issue 27 asks; each case is then a test of its own here. The count of
cases is printed at the end of the session (``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile.cases import CASES

ROOT = Path(__file__).resolve().parents[2]
MEMORY_LIMIT = 6 * 2**30  # address space: JAX, XLA, onnxruntime and h5py loaded use ~3 GB
CASE_SECONDS = 20  # the slowest case (a 36,000-pixel JPEG) takes about a second
CASE_GROWTH_MB = 600  # how far one case may raise the process's peak memory
DEADLINE = 240


@pytest.fixture(scope="module")
def outcomes() -> dict[str, dict]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    try:  # the child limits its own address space first (a preexec_fn would fork JAX)
        done = subprocess.run([sys.executable, "-m", "tests.hostile.child",
                               str(MEMORY_LIMIT)], cwd=ROOT, capture_output=True, text=True,
                              timeout=DEADLINE, env=env)
        stdout, stderr = done.stdout, done.stderr
    except subprocess.TimeoutExpired as err:
        stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else err.stdout or ""
        stderr = "timed out"
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    found = {line["name"]: line for line in lines if "outcome" in line}
    started = [line["start"] for line in lines if "start" in line]
    if started and started[-1] not in found:  # the case that hung or killed the process
        found[started[-1]] = {"name": started[-1], "outcome": "hung or died",
                              "message": stderr[-2000:]}
    return found


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_hostile_input_is_refused_in_one_line_or_taken_within_bounds(
        case, outcomes, record_property):
    record_property("hostile_case", case.name)
    got = outcomes.get(case.name)
    assert got is not None, "the child process stopped before this case"
    message = got["message"]
    if case.refused is None:
        assert got["outcome"] == "accepted", message
        assert case.accepted is None or re.search(case.accepted, message), message
    else:
        assert got["outcome"] == "refused", message
        assert "\n" not in message and "Traceback" not in message
        assert re.search(case.refused, message), message
    assert got["seconds"] < CASE_SECONDS
    assert got["peak_growth_mb"] < CASE_GROWTH_MB
    assert got["changed"] == []
