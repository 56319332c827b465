"""SIGINT and SIGTERM stop `bnlab run` with one line giving the exact resume command, which
works as printed; an operating-system error names the file and says what it means."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from bnlab.store.reader import load_run

pytestmark = pytest.mark.realdata
# The first training rows only: what these tests prove is about processes and files, not about
# how much the models learn.
ROWS = ("--train-rows", "5000")

EXPERIMENT = """
name = "stoppable"
epochs = 40
seeds = 2
batch_size = 500
[optimizer]
name = "sgd"
learning_rate = 0.05
[[variants]]
name = "bn"
layers = [{ type = "flatten" }, { type = "batch_norm" },
          { type = "dense", units = 32, activation = "relu" },
          { type = "dense", units = 10, activation = "softmax" }]
"""


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    return env | {"BNLAB_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}


def bnlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "bnlab", *args]


def as_in_a_terminal(command: list[str]) -> list[str]:
    """``command`` (a Python one) with SIGINT's default action, as a shell starts a command
    in the foreground. A process inherits an ignored SIGINT (POSIX: so a background job
    ignores Ctrl-C), and Python then keeps ignoring it; the test workers may have it
    ignored, and a SIGINT sent to the run would do nothing."""
    reset = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
             "os.execv(sys.argv[1], sys.argv[1:])")
    return [sys.executable, "-c", reset, *command]


@pytest.mark.parametrize(("sent", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_run_says_how_to_resume_and_that_command_finishes_it(fashion_mnist, tmp_path,
                                                                       sent, code):
    del fashion_mnist  # skip when the real data is absent
    (tmp_path / "stoppable.toml").write_text(EXPERIMENT)
    command = bnlab("run", "stoppable.toml", "--epochs", "20", "--runs-dir", "runs",
                    "--no-download", *ROWS)
    env = clean_env(tmp_path)
    log = tmp_path / "stdout.log"  # what the run printed, shown if it does not stop
    with log.open("w") as stdout:
        process = subprocess.Popen(as_in_a_terminal(command), cwd=tmp_path, env=env,
                                   stdout=stdout, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not list((tmp_path / "runs").glob("*/bn/checkpoint.json")):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.02)
    process.send_signal(sent)
    sent_at = time.monotonic()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, (
        f"exit {process.returncode} {time.monotonic() - sent_at:.2f} s after the signal; "
        f"stderr {stderr!r}; stdout:\n{log.read_text()[-3000:]}")
    (line,) = stderr.strip().splitlines()
    name = signal.Signals(sent).name
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert line.startswith(f"stopped by {name}; every finished epoch is saved in runs/"
                           f"{run_dir.name} (files are written atomically); resume with: ")
    resume = line.split("resume with: ", 1)[1]
    assert shlex.split(resume) == [*command, "--resume"]
    assert not load_run(run_dir).finished
    finished = subprocess.run(shlex.split(resume), cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert load_run(run_dir).complete


def test_a_file_too_large_for_the_limit_is_one_line_naming_it(fashion_mnist, tmp_path):
    """A real OS error: the kernel refuses writes past RLIMIT_FSIZE with EFBIG."""
    del fashion_mnist
    (tmp_path / "stoppable.toml").write_text(EXPERIMENT)

    env = clean_env(tmp_path)
    # Once without the limit, so that the limited run finds its programs compiled in the
    # cache and writes nothing there (JAX only warns when it cannot write a cache entry).
    subprocess.run(bnlab("run", "stoppable.toml", "--epochs", "1", "--runs-dir", "warm",
                         "--no-download", *ROWS), cwd=tmp_path, env=env, capture_output=True,
                   check=True, timeout=300)
    # 40 blocks of 512 bytes; SIGXFSZ ignored, so that the write fails with EFBIG instead.
    limited = shlex.join(bnlab("run", "stoppable.toml", "--epochs", "2", "--runs-dir", "runs",
                               "--no-download", *ROWS))
    result = subprocess.run(["sh", "-c", f"ulimit -f 40 && trap '' XFSZ && exec {limited}"],
                            cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: runs/stoppable-") and "File too large" in line
    assert "exceed the file size limit" in line and "resume with: " in line
    assert "Traceback" not in result.stderr


def test_a_full_disk_is_one_line_naming_the_file_and_saying_the_disk_is_full(fashion_mnist,
                                                                            tmp_path):
    """A real full disk: a 128 KiB tmpfs mounted in a private mount namespace (root only)."""
    del fashion_mnist
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("mounting a tmpfs needs root and unshare(1)")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here: {probe.stderr.decode().strip()}")
    (tmp_path / "stoppable.toml").write_text(EXPERIMENT)
    (tmp_path / "disk").mkdir()
    run = shlex.join(bnlab("run", "stoppable.toml", "--epochs", "2", "--runs-dir", "disk/runs",
                           "--no-download", *ROWS))
    script = f"mount -t tmpfs -o size=128k tmpfs disk && exec {run}"
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             script], cwd=tmp_path, env=clean_env(tmp_path),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: disk/runs/stoppable-"), line
    assert "No space left on device — the disk is full" in line and "permissions" not in line


SWEEP = """
name = "killable"
epochs = 3
seeds = 2
batch_size = 500
[optimizer]
name = "sgd"
learning_rate = 0.05
[[variants]]
name = "bn"
layers = [{ type = "flatten" }, { type = "batch_norm" },
          { type = "dense", units = 16, activation = "relu" },
          { type = "dense", units = 10, activation = "softmax" }]
[[variants]]
name = "plain"
layers = [{ type = "flatten" }, { type = "dense", units = 16, activation = "relu" },
          { type = "dense", units = 10, activation = "softmax" }]
[sweep]
"optimizer.learning_rate" = [0.05, 0.2, 0.5]
"""


def history_rows(runs: Path) -> int:
    """Epoch rows in every history.csv under ``runs`` so far (a file being replaced counts
    as it was)."""
    count = 0
    for path in runs.glob("*/*/seed-*/history.csv"):
        with contextlib.suppress(OSError):
            count += max(0, len(path.read_text().splitlines()) - 1)
    return count


def final_numbers(run_dir: Path) -> dict[str, list[float]]:
    run = load_run(run_dir)
    assert run.complete, run.damage
    return {f"{name}/{metric}": list(history.per_seed[metric].ravel())
            for name, history in run.histories.items() for metric in history.per_seed} | {
        f"{name}/test": list(summary.test_accuracy) for name, summary in run.summary.items()}


def test_a_sweep_killed_at_any_moment_resumes_to_the_uninterrupted_numbers(
        fashion_mnist, tmp_path, capsys, monkeypatch):
    """SIGKILL (no handler runs) at moments spread over the sweep — after the k-th of its 36
    history rows (6 points × 2 seeds × 3 epochs) appeared, plus a random delay, so within
    and between programs and between two points' checkpoints — three times over: the sweep,
    then each ``--resume`` of it as a user would type it, killed in turn; the last resume
    finishes it with the same numbers as the uninterrupted sweep. The killed processes are
    processes of their own; the straight sweep, the last resume and the reading commands run
    in this one (as many CPU devices as the processes: the same float rounding)."""
    del fashion_mnist
    from bnlab.cli import main

    (tmp_path / "killable.toml").write_text(SWEEP)
    monkeypatch.chdir(tmp_path)
    env = clean_env(tmp_path) | {"JAX_NUM_CPU_DEVICES": str(jax.device_count())}

    def cli(*argv: str) -> str:
        capsys.readouterr()
        assert main(list(argv)) == 0
        return capsys.readouterr().out

    cli("sweep", "killable.toml", "--runs-dir", "straight", "--no-download", *ROWS)
    (straight,) = (tmp_path / "straight").iterdir()
    want = final_numbers(straight)
    # A sweep is one run: listed, shown and reported like any other.
    listed = cli("runs", "--runs-dir", "straight")
    assert "(6 points)" in listed and "complete" in listed, listed
    assert "Best per variant" in cli("show", str(straight))
    cli("report", str(straight))
    page = (straight / "report.html").read_text()
    assert "<h3>Sweep</h3>" in page and "plain@learning_rate=0.5" in page
    rng = np.random.default_rng(0)
    runs = tmp_path / "killed"
    for number, rows in enumerate((1, 14, 30)):
        resume = ("--resume",) if number else ()
        process = subprocess.Popen(
            bnlab("sweep", "killable.toml", "--runs-dir", runs.name, "--no-download", *ROWS,
                  *resume), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        wanted = max(rows, history_rows(runs) + 1)  # a row this process wrote
        while history_rows(runs) < wanted:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.3))
        process.kill()  # SIGKILL
        process.wait(timeout=60)
    cli("sweep", "killable.toml", "--runs-dir", runs.name, "--no-download", *ROWS, "--resume")
    (run_dir,) = runs.iterdir()
    got = final_numbers(run_dir)
    assert got.keys() == want.keys()
    for key, values in want.items():
        np.testing.assert_allclose(got[key], values, rtol=1e-5, atol=1e-6, err_msg=key)
