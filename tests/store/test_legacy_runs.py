"""Run folders written by an earlier bnlab still load, show, report and export.

``tests/fixtures/runs-5c63388`` holds two runs written by bnlab at commit 5c63388 (its
``make.py``, on 1,000 training rows of the real Fashion-MNIST): two variants × two seeds
with a recalibration, and a learning-rate sweep. Every later format must keep reading them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bnlab.cli import main
from bnlab.store.reader import list_runs, load_run

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs-5c63388"


@pytest.fixture
def legacy_runs(tmp_path) -> Path:
    """A copy of the fixture runs (commands may write into a run folder)."""
    runs = tmp_path / "runs"
    shutil.copytree(FIXTURES, runs, ignore=shutil.ignore_patterns("*.py"))
    return runs


def test_old_runs_load_complete_with_their_histories_and_verdicts(legacy_runs):
    runs, unreadable = list_runs(legacy_runs)
    assert unreadable == []
    assert sorted(run.config.name for run in runs) == ["legacy", "legacy-sweep"]
    for run in runs:
        assert run.complete, run.damage
        for name, history in run.histories.items():
            assert history.seeds == (42, 43)
            assert history.per_seed["val_accuracy"].shape == (2, run.config.epochs), name
            assert np.isfinite(history.per_seed["loss"]).all()
        run.comparisons()  # computable: no damage, every variant finished
    legacy = next(r for r in runs if r.config.name == "legacy")
    # The default probe plan's records (plain has no hidden layer to record).
    assert "activations/steps" in legacy.probes["bn"]


@pytest.mark.parametrize("command", [["runs"], ["show", "legacy-20261207-084803"],
                                     ["show", "legacy-sweep-20261207-084815"],
                                     ["report", "legacy-20261207-084803", "--out", "r.html"]])
def test_reading_commands_take_old_runs(legacy_runs, capsys, command, tmp_path,
                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--runs-dir", str(legacy_runs)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "damaged" not in captured.out + captured.err


def test_an_old_member_exports(legacy_runs, capsys, tmp_path):
    run = load_run(legacy_runs / "legacy-20261207-084803")
    out = tmp_path / "bn.keras"
    assert main(["export", str(run.path), "--format", "keras", "--out", str(out)]) == 0
    assert out.is_file() and "Traceback" not in capsys.readouterr().err
