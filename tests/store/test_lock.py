"""A run folder is trained by one process at a time; a killed holder's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bnlab.errors import BnlabError
from bnlab.experiments.runner import run_experiment
from bnlab.store.lock import LOCK_NAME, RunLock, RunLocked, holder_alive, lock_holder
from bnlab.store.reader import load_run
from tests.store.conftest import CONFIG, write_interrupted
from tests.synthetic import Hooks, tiny_splits

ROOT = Path(__file__).resolve().parents[2]
# A second process that resumes the run and then sits in its first epoch's callback.
RESUMER = """
import sys, time
from pathlib import Path
from bnlab.experiments.runner import run_experiment
from tests.store.conftest import CONFIG
from tests.synthetic import Hooks, tiny_splits
run_experiment(CONFIG, tiny_splits(), Path(sys.argv[1]), resume=True,
               observer=Hooks(on_epoch=lambda name, record: time.sleep(600)))
"""


def wait_for_holder(run_dir: Path, pid: int, process: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        holder = lock_holder(run_dir)
        if holder and holder.get("pid") == pid:
            return holder
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    raise AssertionError("the second process never took the lock")


def test_a_second_holder_in_this_process_is_refused_and_the_file_goes_on_release(tmp_path):
    with RunLock(tmp_path) as first:
        assert first.took_over is None
        holder = lock_holder(tmp_path)
        assert holder["pid"] == os.getpid() and holder_alive(holder)
        with pytest.raises(RunLocked, match=rf"is being trained by another process \(PID "
                                            rf"{os.getpid()} on "):
            RunLock(tmp_path).__enter__()
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock(tmp_path):  # released: free again
        pass


def test_a_readers_brief_check_never_refuses_a_trainer_and_a_free_run_reads_free(tmp_path):
    import fcntl
    import threading

    from bnlab.store.lock import PATIENCE_SECONDS, training_holder

    (tmp_path / LOCK_NAME).write_text("{}")  # a stale file, as a killed holder leaves
    assert training_holder(tmp_path) is None
    fd = os.open(tmp_path / LOCK_NAME, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a reader asking, held far longer than it ever is
    threading.Timer(PATIENCE_SECONDS / 5, os.close, [fd]).start()
    with RunLock(tmp_path) as lock:  # waits the reader out instead of refusing
        assert lock.took_over == {} and training_holder(tmp_path)["pid"] == os.getpid()
    assert training_holder(tmp_path) is None


def test_a_resume_of_a_run_being_resumed_is_refused_and_a_killed_holder_is_taken_over(
        tmp_path):
    from bnlab.api import run

    run_dir = write_interrupted(tmp_path / "runs" / "exp-1")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", RESUMER, str(run_dir)], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    try:
        holder = wait_for_holder(run_dir, process.pid, process)
        with pytest.raises(BnlabError, match=rf"being trained by another process \(PID "
                                             rf"{process.pid} ") as err:
            run(CONFIG, runs_dir=tmp_path / "runs", resume=True, data=tiny_splits(), verbose=0)
        assert "\n" not in str(err.value)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()
    # The killed process left its lock file; the kernel released its lock.
    assert lock_holder(run_dir) == holder and not holder_alive(holder)
    hooks = Hooks()
    run_experiment(CONFIG, tiny_splits(), run_dir, resume=True, observer=hooks)
    assert hooks.repaired == [f"took over the lock of PID {holder['pid']} on {holder['host']} "
                        f"(since {holder['since']}), which was stopped without releasing it"]
    assert load_run(run_dir).complete and not (run_dir / LOCK_NAME).exists()
    assert len(json.loads((run_dir / "environment.json").read_text())["resumes"]) == 2
