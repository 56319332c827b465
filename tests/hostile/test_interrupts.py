"""Ctrl-C and SIGTERM stop an ONNX model at once, however long its graph runs.

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

