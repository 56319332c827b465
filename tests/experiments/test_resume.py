"""A run killed with SIGKILL resumes from its last finished epoch and ends where an
uninterrupted run ends."""

from __future__ import annotations

import json
import os
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

EXPERIMENT = """
name = "resume"
epochs = 5
seeds = 3
[optimizer]
name = "sgd"
learning_rate = 0.01
[[variants]]
name = "bn"
layers = [
  { type = "flatten" },
  { type = "batch_norm" },
  { type = "dense", units = 64, activation = "relu" },
  { type = "dense", units = 10, activation = "softmax" },
]
"""


def bnlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "bnlab.cli", *args]


def checkpoint_epoch(runs: Path) -> int:
    for path in runs.glob("*/bn/checkpoint.json"):
        try:
            return json.loads(path.read_text())["epoch"]
        except (json.JSONDecodeError, FileNotFoundError):
            return 0
    return 0


def test_sigkilled_run_resumes_to_the_same_final_metrics(fashion_mnist, tmp_path):
    del fashion_mnist  # skip when the real data is absent
    experiment = tmp_path / "resume.toml"
    experiment.write_text(EXPERIMENT)
    # The command's own CPU device choice (one per core): 3 seeds on 2 cores run as 2 + 2.
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    env["BNLAB_CACHE_DIR"] = str(tmp_path / "cache")
    # The first 6,424 rows: 200 steps of 32 and a ragged last batch of 24, as 55,000 end.
    common = ["--train-rows", "6424", "--runs-dir"]

    killed_runs = tmp_path / "killed"
    process = subprocess.Popen(bnlab("run", str(experiment), *common, str(killed_runs)),
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while checkpoint_epoch(killed_runs) < 2 and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (run_dir,) = killed_runs.iterdir()
    interrupted = load_run(run_dir)
    # The checkpoint is written before the history CSVs, so they may lag it by one epoch;
    # the resumed run rewrites them from the checkpoint's history (checked below).
    assert not interrupted.complete and checkpoint_epoch(killed_runs) < 5
    assert min(interrupted.epochs_per_variant) >= 1

    subprocess.run(bnlab("run", str(experiment), *common, str(killed_runs), "--resume"),
                   env=env, check=True, capture_output=True)
    subprocess.run(bnlab("run", str(experiment), *common, str(tmp_path / "straight")),
                   env=env, check=True, capture_output=True)
    (straight_dir,) = (tmp_path / "straight").iterdir()
    resumed, straight = load_run(run_dir), load_run(straight_dir)
    assert resumed.complete
    # On CPU the command gave JAX one device per core, so the seeds trained side by side.
    environment = json.loads((straight_dir / "environment.json").read_text())
    cpu = jax.default_backend() == "cpu"
    assert environment["device_count"] == (len(os.sched_getaffinity(0)) if cpu
                                           else jax.device_count())
    for metric, values in straight.histories["bn"].per_seed.items():
        np.testing.assert_allclose(resumed.histories["bn"].per_seed[metric], values, rtol=0,
                                   atol=1e-6)
    np.testing.assert_allclose(resumed.summary["bn"].test_accuracy,
                               straight.summary["bn"].test_accuracy, rtol=0, atol=1e-6)


def test_resume_without_an_unfinished_run_is_a_clear_error(tmp_path, capsys):
    experiment = tmp_path / "resume.toml"
    experiment.write_text(EXPERIMENT)
    from bnlab.cli import main

    assert main(["run", str(experiment), "--runs-dir", str(tmp_path / "r"), "--resume",
                 "--no-download"]) == 2
    err = capsys.readouterr().err
    assert "was not found" in err and "without --resume" in err and "Traceback" not in err


def test_resume_after_the_last_checkpoint_rewrites_lagging_histories(tmp_path):
    # Killed after a variant's last checkpoint but before its history.csv was written: the
    # resumed run trains nothing for that variant and must still leave complete histories.
    from bnlab.config.files import parse_experiment
    from bnlab.experiments.runner import run_experiment
    from tests.synthetic import tiny_splits

    text = EXPERIMENT.replace("epochs = 5", "epochs = 2")
    import tomllib

    config = parse_experiment(tomllib.loads(text))
    splits = tiny_splits()
    run_experiment(config, splits, tmp_path)
    history = tmp_path / "bn" / "seed-42" / "history.csv"
    full = history.read_text()
    history.write_text(full.splitlines()[0] + "\n")
    (tmp_path / "summary.json").unlink()
    run_experiment(config, splits, tmp_path, resume=True)
    assert history.read_text() == full
    assert load_run(tmp_path).complete and load_run(tmp_path).epochs_per_variant == [2]


def test_a_resume_is_recorded_and_a_changed_environment_is_reported(tmp_path):
    import tomllib

    from bnlab.config.files import parse_experiment
    from bnlab.experiments.runner import run_experiment
    from tests.synthetic import Hooks, tiny_splits

    config = parse_experiment(tomllib.loads(EXPERIMENT.replace("epochs = 5", "epochs = 1")))
    splits = tiny_splits()
    run_experiment(config, splits, tmp_path)
    env_path = tmp_path / "environment.json"
    started = json.loads(env_path.read_text())
    hooks = Hooks()
    run_experiment(config, splits, tmp_path, resume=True, observer=hooks)
    assert hooks.notes == []  # same environment: nothing to say, but the resume is on record
    after = json.loads(env_path.read_text())
    assert after["packages"] == started["packages"] and len(after["resumes"]) == 1
    assert after["resumes"][0]["packages"] == started["packages"] and after["resumes"][0]["at"]

    # How a resume reads a changed environment (record_resume compares the file with this
    # process): as if the run had started with another jax.
    from bnlab.store.provenance import record_resume

    edited = {**after, "packages": {**after["packages"], "jax": "0.0.1"}}
    env_path.write_text(json.dumps(edited))
    current = started["packages"]["jax"]
    assert record_resume(tmp_path, config.seed_list) == [f"jax {current} (started with 0.0.1)"]
    assert len(json.loads(env_path.read_text())["resumes"]) == 2
    # A hand-edited environment.json no longer agrees with the checkpoints' copy: the run is
    # damaged, and resuming restores the file from that copy.
    from bnlab.store.reader import load_run

    assert [str(d) for d in load_run(tmp_path).damage] == [
        "environment.json does not agree with the copy in the checkpoints"]
    run_experiment(config, splits, tmp_path, resume=True, observer=hooks)
    assert hooks.notes == [] and load_run(tmp_path).complete
    assert json.loads(env_path.read_text())["packages"] == started["packages"]
