"""Shared fixtures: the real Fashion-MNIST (when on disk), small synthetic splits, and the
reference frameworks: Keras 3 on its JAX backend and PyTorch (CPU).

Keras and PyTorch are test-only dependencies; tests that compare against them take the
``keras`` / ``torch`` fixture and are skipped, not failed, where one is not installed.
Keras's backend is chosen when it is first imported, so the environment variable is set
here, before any test imports it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import jax
import pytest
from platformdirs import user_cache_dir

from bnlab.data.datasets import Splits
from bnlab.errors import DataError

os.environ["KERAS_BACKEND"] = "jax"
# bnlab prints as wide as COLUMNS says (report/terminal.py); pytest-xdist's workers set it to
# 80. The tests read printed lines at one width, whatever runs them; tests/report/
# test_tables.py prints at 80, 100 and 200.
os.environ["COLUMNS"] = "120"
# One persistent compilation cache for the whole session, both pytest-xdist workers and every
# process they start: the tests compile the same small programs over and over, in modules
# that run on either worker (JAX keys the cache by the program and the compiler's options,
# so a hit is the same executable; it writes an entry atomically). Every program is written,
# as the `bnlab` command does, down to the one-operation programs of eager JAX (model
# initialisation, key splits): each `bnlab` process the tests start would compile those
# again. Writing them all cut `make test` from 16:59 to 14:53 of CPU (from 0.3 s up only).
# The session's controller makes it (its workers, started later, inherit the variable) and
# removes it when the session ends.
WORKER = "PYTEST_XDIST_WORKER" in os.environ
if not WORKER:
    os.environ["BNLAB_TEST_JAX_CACHE"] = tempfile.mkdtemp(prefix="bnlab-test-jax-cache-")
CACHE = os.environ["BNLAB_TEST_JAX_CACHE"]
os.environ["JAX_COMPILATION_CACHE_DIR"] = CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
# Two CPU devices, as the `bnlab` command gives a 2-core machine (one per core), whatever this
# machine has: runs of several seeds then spread them over devices as they do for users.
if jax.config.jax_num_cpu_devices == -1:
    jax.config.update("jax_num_cpu_devices", 2)
# An implicit broadcast between arrays of different ranks is an error in the tests: bnlab's
# shapes are explicit, and a silent (n,) + (n, 1) would be a bug.
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_compilation_cache_dir", CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_unconfigure(config):
    if not WORKER:  # the controller, or a session without workers
        shutil.rmtree(CACHE, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    """How many hostile inputs (``tests/hostile``) were tried and how many held."""
    cases = {outcome: sum(1 for report in terminalreporter.stats.get(outcome, [])
                          if any(key == "hostile_case" for key, _ in report.user_properties))
             for outcome in ("passed", "failed")}
    if any(cases.values()):
        terminalreporter.write_line(
            f"hostile inputs: {sum(cases.values())} cases, {cases['passed']} refused in one "
            "line or taken within bounded time and memory, nothing written outside the asked "
            f"path; {cases['failed']} failed")


# Modules whose tests train whole runs (the runner, the API, the command) on synthetic data.
E2E_MODULES = ("tests/experiments/", "tests/test_api.py", "tests/test_cli.py",
               "tests/test_extras.py", "tests/store/test_run_fuzz.py", "tests/store/test_lock.py",
               "tests/store/test_store.py", "tests/report/test_html.py",
               "tests/export/test_trained.py", "tests/train/test_loop.py",
               "tests/train/test_members.py", "tests/train/test_seeds.py", "tests/hostile/")


# The modules that take longest (minutes of processes killed and resumed, a Ray cluster, a
# hundred damaged runs repaired), run first: ``make test`` hands whole
# modules to its two workers in collection order (``--no-loadscope-reorder``: pytest-xdist
# would otherwise send the modules with the most tests first), and one of these last would
# keep one worker busy while the other idles.
LONGEST_FIRST = ("tests/test_signals_and_disks.py", "tests/experiments/test_ray_cluster.py",
                 "tests/test_fault_injection.py",
                 "tests/test_cli.py", "tests/test_front_door.py",
                 "tests/experiments/test_resume.py", "tests/train/test_probes.py",
                 "tests/experiments/test_seed_realdata.py", "tests/store/test_run_fuzz.py",
                 "tests/experiments/test_sweep.py", "tests/train/test_members.py")


def pytest_collection_modifyitems(config, items):
    """Tiers (``make test-fast`` leaves out all three): a test that takes the real data (the
    ``fashion_mnist`` fixture, itself or through another fixture) is ``realdata``; a test of
    a module of ``E2E_MODULES`` is ``e2e``; ``server`` tests say so themselves. The modules
    of ``LONGEST_FIRST`` are moved to the front, in that order."""

    def rank(item) -> int:
        module = "tests/" + Path(item.path).as_posix().split("/tests/", 1)[-1]
        return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: every other test keeps its place
    for item in items:
        if "fashion_mnist" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realdata)
        if Path(item.path).as_posix().split("/tests/", 1)[-1].startswith(
                tuple(m.removeprefix("tests/") for m in E2E_MODULES)):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def fashion_mnist() -> Splits:
    """The real dataset: Debian's dataset-fashion-mnist (`make data` installs it), else the
    copy `bnlab` downloaded into the user cache; skipped, saying so, when neither is there.
    Never downloads: the tests run offline."""
    from bnlab.data.datasets import load_dataset

    try:
        return load_dataset("fashion_mnist", cache_dir=Path(user_cache_dir("bnlab")) / "datasets",
                            download=False)
    except DataError as err:
        if "downloading is off" not in str(err):
            raise  # a damaged copy must fail the tests, not skip them
        pytest.skip(f"real Fashion-MNIST not on disk (make data, or run bnlab once): {err}")


@pytest.fixture(scope="session")
def keras():
    """The ``keras`` module on the JAX backend (skips the test when Keras is absent)."""
    module = pytest.importorskip("keras")
    backend = module.backend.backend()
    if backend != "jax":  # imported elsewhere before this conftest set the variable
        pytest.fail(f"keras was imported with the {backend!r} backend; the nn tests need 'jax'")
    return module


@pytest.fixture(scope="session")
def torch():
    """PyTorch (CPU), the reference for its own conventions (skips the test when absent)."""
    module = pytest.importorskip("torch")
    module.manual_seed(0)
    return module


@pytest.fixture(autouse=True)
def keras_broadcasts_implicitly(request):
    """Keras's own layers add (n, k) + (k,) implicitly, which the tests' rank-promotion check
    (tests/conftest.py) forbids: a test that runs Keras allows it for its duration."""
    if "keras" not in request.fixturenames and "keras_models" not in request.fixturenames:
        yield
        return
    with jax.numpy_rank_promotion("allow"):
        yield
