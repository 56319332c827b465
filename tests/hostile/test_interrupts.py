"""Ctrl-C and SIGTERM stop an ONNX model and a training epoch at once, however long they run.

onnxruntime's ``session.run`` holds the calling thread in C++ until the graph ends, where
Python's signal handlers cannot run: a long graph ignored Ctrl-C. ``onnx_checks.run_bounded``
runs it in a worker thread and, when the waiting thread is interrupted, terminates the run
(``RunOptions.terminate``, checked between nodes). The graph here takes seconds (4,000
convolutions: the hostile case "a graph slower than the inference deadline" shows it runs
past one second); the interrupt comes after half a second.
"""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

from bnlab.cli.session import Stopped
from tests.hostile.cases import onnx_slow


@pytest.fixture(scope="module")
def slow_session(tmp_path_factory):
    import onnxruntime

    folder = tmp_path_factory.mktemp("slow")
    onnx_slow(folder)
    return onnxruntime.InferenceSession(str(folder / "model.onnx"),
                                        providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, Stopped],
                         ids=["Ctrl-C", "SIGTERM as the command raises it"])
def test_an_interrupt_stops_onnxruntime_within_a_second(slow_session, interrupt):
    from bnlab.export.onnx_checks import run_bounded

    def raise_interrupt(signum, frame):
        raise interrupt("SIGTERM") if interrupt is Stopped else interrupt()

    previous = signal.signal(signal.SIGALRM, raise_interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    start = time.perf_counter()
    try:
        with pytest.raises(interrupt):
            run_bounded(slow_session, ["out"], {"x": np.zeros((2, 784), np.float32)}, "slow")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    stopped = time.perf_counter() - start
    assert stopped < 1.5, f"returned {stopped:.2f} s after the start"
    assert not any(t.name == "onnxruntime" and t.is_alive() for t in threading.enumerate())



def test_an_interrupt_stops_the_wait_for_a_compiled_epoch_within_a_second():
    """A compiled epoch runs in XLA's threads for seconds; the trainer waits for it in
    Python (``trainer.wait_interruptibly``), so Ctrl-C is raised at once, not when the
    epoch ends."""
    import optax

    from bnlab.nn.layers import Dense, Flatten
    from bnlab.nn.model import Sequential
    from bnlab.train.trainer import SeedBatchTrainer

    rng = np.random.default_rng(0)
    model = Sequential((Flatten(), Dense(1024, activation="relu"),
                        Dense(1024, activation="relu"), Dense(10, activation="softmax")),
                       input_shape=(28, 28))
    trainer = SeedBatchTrainer(model, optax.sgd(0.01), batch_size=32,
                               x_train=rng.integers(0, 256, (25_600, 28, 28), np.uint8),
                               y_train=rng.integers(0, 10, 25_600), seeds=(1,))
    state = trainer.init_state()
    trainer.compile(state)
    start = time.perf_counter()
    state, *_ = trainer.train_epoch(state, 0)
    epoch_seconds = time.perf_counter() - start
    assert epoch_seconds > 0.3, "the epoch is too short for the test to mean anything"

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.2 * epoch_seconds)  # a fifth into the epoch
    start = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer.train_epoch(state, 1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    stopped = time.perf_counter() - start
    assert stopped < 0.6 * epoch_seconds, (  # not at the epoch's end, whatever the CPU
        f"stopped {stopped:.2f} s after the start; an epoch takes {epoch_seconds:.2f} s")
