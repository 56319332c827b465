"""`bnlab sweep --ray` against a real Ray cluster that the test starts and stops.

The cluster and the driver live in a network namespace the test creates, holding only a
loopback interface: Ray binds to the machine's interface address even when told 127.0.0.1,
and no test may send traffic anywhere else. The sweep (an MLP and a conv net with BN over
(N, H, W), two learning rates) lands in the run store and equals a local run, although the
workers of the tasks running once a point has saved an epoch are killed (SIGKILL): Ray
retries them and each retry resumes from its program's last checkpoint, while the other
programs run on the cluster untouched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from bnlab.store.reader import load_run

pytestmark = [pytest.mark.realdata, pytest.mark.server]

SWEEP = """
name = "distributed"
epochs = 5
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
name = "conv"
layers = [{ type = "reshape", target_shape = [28, 28, 1] },
          { type = "conv2d", filters = 4, kernel_size = 3, strides = 2, use_bias = false },
          { type = "batch_norm" }, { type = "activation", name = "relu" },
          { type = "max_pool2d" }, { type = "flatten" },
          { type = "dense", units = 10, activation = "softmax" }]
[sweep]
"optimizer.learning_rate" = [0.05, 0.2]
"""
PORT = 6390
# The first training rows only: what this test proves is about processes and retries, not
# about how much the models learn.
ROWS = ("--train-rows", "10000")


def bnlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "bnlab", *args]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node Ray cluster inside a loopback-only network namespace: ``(namespace,
    address, environment)``."""
    pytest.importorskip("ray")
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("needs iproute2 and root to create a network namespace for the cluster")
    namespace = f"bnlab-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    home = tmp_path_factory.mktemp("ray")
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS",
                                                             "RAY_ADDRESS")}
    # One CPU device in the local run and in every Ray worker (which inherit the cluster's
    # environment): the same device layout, hence the same float rounding. With another count
    # the numbers agree only to rounding amplified by training (2.9e-5 relative in a loss
    # after 3 epochs, seen between 2 devices and 1).
    env |= {"BNLAB_CACHE_DIR": str(home / "cache"), "COLUMNS": "200", "JAX_NUM_CPU_DEVICES": "1",
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"}
    inside = ["ip", "netns", "exec", namespace]
    ray = [str(Path(sys.executable).parent / "ray")]
    # Ray's session folder holds its Unix sockets, whose paths must fit 107 bytes: a short
    # folder of its own, not one under pytest's (a worker's is long).
    sessions = Path(tempfile.mkdtemp(prefix="bnlab-ray-", dir="/tmp"))
    try:
        subprocess.run([*inside, "ip", "link", "set", "lo", "up"], check=True)
        links = subprocess.run([*inside, "ip", "-o", "link"], check=True, capture_output=True,
                               text=True).stdout.splitlines()
        assert [line.split(":")[1].strip() for line in links] == ["lo"]  # nothing else
        subprocess.run([*inside, *ray, "start", "--head", f"--port={PORT}", "--num-cpus=2",
                        "--include-dashboard=false", "--disable-usage-stats",
                        f"--temp-dir={sessions}"], check=True, env=env, cwd=home,
                       capture_output=True, timeout=180)
        yield namespace, f"127.0.0.1:{PORT}", env
    finally:
        subprocess.run([*inside, *ray, "stop", "--force"], env=env, capture_output=True,
                       timeout=120)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        shutil.rmtree(sessions, ignore_errors=True)


def numbers(run_dir: Path) -> dict[str, np.ndarray]:
    run = load_run(run_dir)
    assert run.complete, run.damage
    return {f"{name}/{metric}": values for name, history in run.histories.items()
            for metric, values in history.per_seed.items()} | {
        f"{name}/test": summary.test_accuracy for name, summary in run.summary.items()}


def assert_same_numbers(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, values in want.items():  # 1e-5: other device layouts round differently
        np.testing.assert_allclose(got[key], values, rtol=1e-5, atol=1e-6, err_msg=key)


def restarts(tensorboard: Path) -> list[int]:
    """The epochs at which a TensorBoard run restarted (a resumed program marks its first
    epoch with a SessionLog START event; a fresh one marks epoch 0)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = []
    for path in tensorboard.rglob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            if event.HasField("session_log") and event.session_log.status == 1:
                steps.append(event.step)
    return steps


def test_a_sweep_on_a_ray_cluster_equals_the_local_sweep_and_survives_a_killed_worker(
        fashion_mnist, cluster, tmp_path):
    del fashion_mnist
    namespace, address, env = cluster
    (tmp_path / "distributed.toml").write_text(SWEEP)
    local = subprocess.run(bnlab("sweep", "distributed.toml", "--runs-dir", "local",
                                 "--no-download", *ROWS), cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr
    (local_run,) = (tmp_path / "local").iterdir()
    want = numbers(local_run)

    def on_ray(runs: str) -> list[str]:
        return ["ip", "netns", "exec", namespace, *bnlab(
            "sweep", "distributed.toml", "--runs-dir", runs, "--no-download", *ROWS,
            "--ray", address)]

    # On the cluster, kill the workers of the running tasks once a point has saved an epoch
    # (of 5); the other programs run there untouched.
    process = subprocess.Popen(on_ray("killed"), cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, victims = time.monotonic() + 300, []
    while not victims:
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        if list((tmp_path / "killed").glob("*/*/seed-*/history.csv")):
            victims = task_workers()
        time.sleep(0.05)
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    assert "done on the Ray cluster" in stdout
    (killed_run,) = (tmp_path / "killed").iterdir()
    assert_same_numbers(numbers(killed_run), want)
    assert any(step > 0 for step in restarts(killed_run / "tensorboard")), (
        "no program resumed from a checkpoint after its worker was killed")


def task_workers() -> list[int]:
    """PIDs of Ray workers running a bnlab program (Ray names them ``ray::_train``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::_train"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids
