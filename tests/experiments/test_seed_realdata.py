"""End to end on the real Fashion-MNIST, kept short: a few hundred steps per model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bnlab.config.experiment import load_experiment
from bnlab.experiments.runner import run_experiment
from bnlab.io import read_json
from bnlab.store.histories import read_history_csv

pytestmark = pytest.mark.realdata


def test_notebook_models_learn_on_real_data_in_a_few_hundred_steps(fashion_mnist, tmp_path):
    # 6,424 training rows = 200 steps of 32 and a ragged last batch of 24 (as the notebook's
    # 55,000) per epoch × 2 epochs, the notebook's three models, two seeds in one program.
    # Chance is 0.10 and the untrained loss ≈ ln(10) = 2.30; 0.4 (four times chance) is a
    # margin wide enough for any seed, strict enough to catch an engine that does not learn.
    splits = fashion_mnist.subset(train=6424)
    config = dataclasses.replace(load_experiment("seed"), epochs=2, seeds=2)
    results = run_experiment(config, splits, tmp_path)
    for result in results:
        history = result.history.per_seed
        assert result.seeds == (42, 43)
        assert np.all(history["loss"][:, 1] < history["loss"][:, 0])
        assert not np.allclose(history["loss"][0], history["loss"][1])
        loss = history["loss"][0]
        assert loss[1] < loss[0] < 2.3, result.name  # the loss falls
        assert history["val_loss"][0, 1] < history["val_loss"][0, 0], result.name
        assert history["val_accuracy"][0, 1] > 0.4, result.name
        assert result.test_accuracy[0] > 0.4, result.name
        saved = read_history_csv(tmp_path / result.name / "seed-42" / "history.csv")
        np.testing.assert_allclose(saved["val_accuracy"], history["val_accuracy"][0])
    summary = read_json(tmp_path / "summary.json", fix="rerun")
    assert set(summary) == {"baseline", "bn_after", "bn_before", "comparisons"}
    pairs = {(c["name_a"], c["name_b"]) for c in summary["comparisons"]}
    assert len(pairs) == 3 and all(c["comparisons"] == 3 and c["n"] == 2
                                   for c in summary["comparisons"])
