"""Fault injection: every file of a finished run folder deleted, truncated and overwritten in
its middle, then `bnlab runs`, `show`, `report` and `run --resume` on it.

Each of the (files × 3 damages × 4 commands) cases must hold: no traceback; the damaged file
named (a deleted TensorBoard event file by its folder, which is what lost it); no verdict
other than the undamaged run's, and where the verdict is not the undamaged run's, the output
says there is none and why; `--resume` exits 0 and leaves a complete run with the numbers of
the undamaged one. The run is real: the `bnlab` command on the real Fashion-MNIST.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from bnlab.cli import main
from bnlab.store.reader import load_run

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
COMMANDS = ("runs", "show", "report", "resume")
VERDICT = re.compile(r"(?:beats|not distinguishable)[^\n<]*")


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # 16 bytes in the middle overwritten with 0xFF
        middle = max(0, len(data) // 2 - 8)
        path.write_bytes(data[:middle] + b"\xff" * 16 + data[middle + 16:])


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
    """The undamaged run, its `show` verdicts, report verdicts and numbers."""
    del fashion_mnist  # skip when the real data is absent
    root = tmp_path_factory.mktemp("faults")
    experiment = root / "faults.toml"
    experiment.write_text(EXPERIMENT)
    runs = root / "runs"
    common = ["--runs-dir", str(runs), "--cache-dir", str(root / "cache"), "--no-download"]
    assert main(["run", str(experiment), *common]) == 0
    (run_dir,) = runs.iterdir()
    assert load_run(run_dir).complete
    return experiment, common, run_dir


def test_every_file_deleted_truncated_or_overwritten_is_named_and_repaired(pristine, capsys,
                                                                           tmp_path):
    experiment, common, original = pristine
    capsys.readouterr()
    _, shown = bnlab(capsys, "show", str(original))
    want_verdicts = VERDICT.findall(shown)
    # Two variants: one seed-paired verdict, and the BN variant's train/inference gap.
    assert len(want_verdicts) == 2
    want = numbers(original)
    files = sorted(p.relative_to(original) for p in original.rglob("*") if p.is_file())
    runs = Path(common[1])
    cases = 0
    for relative in files:
        for how in DAMAGES:
            where = f"{relative} ({how})"
            run_dir = runs / original.name
            backup = tmp_path / "backup"
            if not backup.exists():
                shutil.copytree(original, backup)
            damage(run_dir / relative, how)
            named = [str(relative)]
            if how == "delete" and relative.parts[0] == "tensorboard":
                named.append(str(relative.parent))  # the folder that lost its event file
            report = tmp_path / "report.html"
            for command in COMMANDS:
                if command == "runs":
                    code, out = bnlab(capsys, "runs", "--runs-dir", str(runs))
                elif command == "show":
                    code, out = bnlab(capsys, "show", original.name, "--runs-dir", str(runs))
                elif command == "report":
                    code, out = bnlab(capsys, "report", original.name, "--runs-dir",
                                      str(runs), "--out", str(report))
                    out += report.read_text(encoding="utf-8")
                else:
                    code, out = bnlab(capsys, "run", str(experiment), *common, "--resume")
                cases += 1
                assert code == 0, f"{where}, {command}: exit {code}\n{out}"
                assert "Traceback" not in out, f"{where}, {command}\n{out}"
                if command != "resume":
                    assert any(n in out for n in named), f"{where}, {command}: not named\n{out}"
                if command in ("show", "report"):
                    verdicts = VERDICT.findall(out)
                    assert set(verdicts) <= set(want_verdicts), f"{where}, {command}\n{out}"
                    if not verdicts:
                        assert "No verdicts: " in out, f"{where}, {command}\n{out}"
                if command == "resume":
                    repaired = load_run(run_dir)
                    assert repaired.complete, f"{where}: {repaired.damage}"
                    got = numbers(run_dir)
                    assert got.keys() == want.keys(), where
                    for key, values in want.items():
                        np.testing.assert_allclose(got[key], values, rtol=0, atol=1e-6,
                                                   err_msg=f"{where}: {key}")
            shutil.rmtree(run_dir)
            shutil.copytree(backup, run_dir)
    total = len(files) * len(DAMAGES) * len(COMMANDS)
    with capsys.disabled():
        print(f"\nfault injection: {len(files)} files × {len(DAMAGES)} damages × "
              f"{len(COMMANDS)} commands = {total} cases")
    assert cases == total and len(files) >= 20
