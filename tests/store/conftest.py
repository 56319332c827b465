"""Run folders written by the runner itself, on the small synthetic splits."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bnlab.config.experiment import ExperimentConfig, VariantConfig
from bnlab.config.optimizer import OptimizerConfig
from bnlab.experiments.runner import run_experiment
from bnlab.report.figures import run_figures
from tests.synthetic import TINY_LAYERS, Hooks, tiny_splits

PLAIN = ({"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"})
CONFIG = ExperimentConfig(name="exp", variants=(VariantConfig("bn", layers=TINY_LAYERS),
                                                VariantConfig("plain", layers=PLAIN)),
                          epochs=2, batch_size=32, seed=1, seeds=2,
                          optimizer=OptimizerConfig("sgd", 0.05))


class Interrupt(KeyboardInterrupt):
    """Raised from a runner callback: a run stopped as Ctrl-C stops it."""


def write_finished(run_dir: Path) -> Path:
    """A finished run of ``CONFIG`` with its figures, as ``bnlab run`` writes it."""
    run_experiment(CONFIG, tiny_splits(), run_dir, figures=run_figures(CONFIG.name))
    return run_dir


def write_interrupted(run_dir: Path, after_epochs: int = 1) -> Path:
    """A run of ``CONFIG`` stopped after ``after_epochs`` epochs of its first variant."""
    def on_epoch(name, record):
        if record.epoch == after_epochs:
            raise Interrupt
    with pytest.raises(Interrupt):
        run_experiment(CONFIG, tiny_splits(), run_dir, observer=Hooks(on_epoch=on_epoch))
    return run_dir


@pytest.fixture(scope="session")
def pristine_run(tmp_path_factory) -> Path:
    """A finished run folder of ``CONFIG``; copy it (``finished_run``) before changing it."""
    return write_finished(tmp_path_factory.mktemp("pristine") / "exp-20261202-000000")


@pytest.fixture
def finished_run(pristine_run, tmp_path) -> Path:
    """A private copy of ``pristine_run`` under ``tmp_path / "runs"``."""
    return Path(shutil.copytree(pristine_run, tmp_path / "runs" / pristine_run.name))
