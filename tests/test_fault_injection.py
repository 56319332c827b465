"""Fault injection: every file of a finished run folder deleted, truncated and overwritten in
its middle, then `bnlab runs`, `show`, `report` and `run --resume` on it.

Each case (file × damage, a test of its own) must hold for each command: no traceback; the
damaged file named (a deleted TensorBoard event file by its folder or itself); no verdict
other than the undamaged run's, and where the verdict is not the undamaged run's, the output
says there is none and why; `--resume` exits 0 and leaves a complete run with the numbers of
the undamaged one. The run is real: the `bnlab` command on the real Fashion-MNIST, trained
once for every case (a copy of it is damaged in each).
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from bnlab.cli import main
from bnlab.store.reader import load_run
from tests.synthetic import damage

pytestmark = pytest.mark.realdata

EXPERIMENT = """
name = "faults"
epochs = 2
seeds = 2
batch_size = 500
[optimizer]
name = "sgd"
learning_rate = 0.1
[[variants]]
name = "bn"
layers = [{ type = "flatten" }, { type = "batch_norm" },
          { type = "dense", units = 16, activation = "relu" },
          { type = "dense", units = 10, activation = "softmax" }]
[[variants]]
name = "plain"
layers = [{ type = "flatten" }, { type = "dense", units = 10, activation = "softmax" }]
"""
DAMAGES = ("delete", "truncate", "overwrite")
VERDICT = re.compile(r"(?:beats|not distinguishable)[^\n<]*")
# The files a finished run of EXPERIMENT holds (the run fixture checks it): its own, each
# variant's record and derived files, and its TensorBoard event files by folder.
RUN_FILES = ["config.json", "environment.json", "summary.json",
             *(f"{name}.{suffix}" for name in ("activations", "curves", "gap")
               for suffix in ("png", "svg")),
             *(f"{variant}/{file}" for variant in ("bn", "plain")
               for file in ("checkpoint.safetensors", "checkpoint.json", "statistics.csv",
                            "seed-42/history.csv", "seed-43/history.csv")),
             *(f"tensorboard/{variant}/seed-{seed}" + part for variant in ("bn", "plain")
               for seed in (42, 43) for part in ("", "/train", "/validation", "/probes"))]


def bnlab(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def numbers(run_dir: Path) -> dict[str, np.ndarray]:
    run = load_run(run_dir)
    found = {f"{n} {m}": h.per_seed[m] for n, h in run.histories.items()
             for m in h.per_seed}
    found.update({f"{n} test_accuracy": s.test_accuracy for n, s in run.summary.items()})
    found.update({f"{n} test_loss": s.test_loss for n, s in run.summary.items()})
    return found


@pytest.fixture(scope="module")
def pristine(fashion_mnist, tmp_path_factory):
    """The undamaged run (trained once), its experiment file and options, its verdicts as
    `bnlab show` prints them and its numbers."""
    del fashion_mnist  # skip when the real data is absent
    root = tmp_path_factory.mktemp("faults")
    experiment = root / "faults.toml"
    experiment.write_text(EXPERIMENT)
    common = ["--cache-dir", str(root / "cache"), "--no-download", "--train-rows", "5000"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", str(experiment), "--runs-dir", str(root / "runs"), *common]) == 0
    (run_dir,) = (root / "runs").iterdir()
    assert load_run(run_dir).complete
    with contextlib.redirect_stdout(io.StringIO()) as shown:
        assert main(["show", str(run_dir)]) == 0
    verdicts = VERDICT.findall(shown.getvalue())
    # Two variants: one seed-paired verdict, and the BN variant's train/inference gap.
    assert len(verdicts) == 2
    return experiment, common, run_dir, set(verdicts), numbers(run_dir)


def test_the_cases_damage_every_file_of_the_run(pristine):
    run_dir = pristine[2]
    files = {str(p.relative_to(run_dir).parent if "tfevents" in p.name
                 else p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}
    assert files == set(RUN_FILES)


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("relative", RUN_FILES)
def test_a_damaged_file_is_named_and_repaired(pristine, capsys, tmp_path, relative, how):
    experiment, common, original, want_verdicts, want = pristine
    capsys.readouterr()
    runs = tmp_path / "runs"
    run_dir = Path(shutil.copytree(original, runs / original.name))
    target = run_dir / relative
    if target.is_dir():  # a TensorBoard folder: its event file
        (target,) = target.glob("events.out.tfevents.*")
    damage(target, how)
    named = {str(target.relative_to(run_dir)), str(target.parent.relative_to(run_dir))}
    where = f"{relative} ({how})"
    report = tmp_path / "report.html"
    for command in ("runs", "show", "report", "resume"):
        if command == "runs":
            code, out = bnlab(capsys, "runs", "--runs-dir", str(runs))
        elif command == "show":
            code, out = bnlab(capsys, "show", original.name, "--runs-dir", str(runs))
        elif command == "report":
            code, out = bnlab(capsys, "report", original.name, "--runs-dir", str(runs),
                              "--out", str(report))
            out += report.read_text(encoding="utf-8")
        else:
            code, out = bnlab(capsys, "run", str(experiment), "--runs-dir", str(runs),
                              *common, "--resume")
        assert code == 0, f"{where}, {command}: exit {code}\n{out}"
        assert "Traceback" not in out, f"{where}, {command}\n{out}"
        if command != "resume":
            assert any(n in out for n in named), f"{where}, {command}: not named\n{out}"
        if command in ("show", "report"):
            verdicts = VERDICT.findall(out)
            assert set(verdicts) <= want_verdicts, f"{where}, {command}\n{out}"
            if not verdicts:
                assert "No verdicts: " in out, f"{where}, {command}\n{out}"
    repaired = load_run(run_dir)
    assert repaired.complete, f"{where}: {repaired.damage}"
    got = numbers(run_dir)
    assert got.keys() == want.keys(), where
    for key, values in want.items():
        np.testing.assert_allclose(got[key], values, rtol=0, atol=1e-6,
                                   err_msg=f"{where}: {key}")
