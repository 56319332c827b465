"""Commands that only read import no JAX: ``bnlab --help``, ``bnlab runs`` and ``bnlab show``
read a run folder (records, summary, figures' digests) and print it without importing JAX,
optax or TensorBoard, so they answer at once. Each runs in a fresh interpreter (this one has
imported JAX long ago), on a copy of the fixture runs, and reports what it imported. A
training run's TensorBoard writer imports no PyTorch either."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "runs-5c63388"
HEAVY = ("jax", "optax", "tensorboardX", "torch", "matplotlib")
CODE = """
import contextlib, io, json, sys
from bnlab.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        code = main(sys.argv[1:])
    except SystemExit as stop:
        code = stop.code
print(json.dumps({"code": code, "imported": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("imports") / "runs"
    shutil.copytree(FIXTURES, folder, ignore=shutil.ignore_patterns("*.py"))
    return folder


@pytest.mark.parametrize("argv", [["--help"], ["runs"], ["show", "legacy-20261207-084803"],
                                  ["show", "legacy-sweep-20261207-084815"]],
                         ids=["help", "runs", "show", "show-sweep"])
def test_reading_commands_import_no_jax(runs, argv):
    result = subprocess.run([sys.executable, "-c", CODE, *argv,
                             *([] if argv == ["--help"] else ["--runs-dir", str(runs)])],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer == {"code": 0, "imported": []}, result.stderr


def test_writing_tensorboard_files_imports_no_pytorch():
    """tensorboardX imports PyTorch, where it is installed, for a writer bnlab does not use:
    a training run's start would pay for it. PyTorch imported afterwards still works."""
    pytest.importorskip("torch")
    code = ("import sys; import bnlab.store.tensorboard; before = 'torch' in sys.modules; "
            "import torch; print(before, torch.ones(2).sum().item())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "2.0"], result.stdout
