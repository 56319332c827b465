"""End to end on the real Fashion-MNIST, kept short: a few hundred steps per model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bnlab.experiments.runner import run_experiment
from bnlab.io import read_json
from bnlab.store.derived import read_history_csv
from tests.experiments import golden_seed

pytestmark = pytest.mark.realdata

# The golden numbers and their tolerances (golden_seed.json: the commit, CPU and versions that
# gave them, and the spread measured by compiling the same run for each older instruction set;
# ``python -m tests.experiments.golden_seed`` regenerates both). A refactor must keep the
# numbers; a change that means to move them regenerates the file. The tolerances are derived
# from the measured spread (four times it), and the script checks they stay below what tells
# one seed from another, so a change of initialization or data order still fails here.
GOLDEN = json.loads(golden_seed.GOLDEN.read_text())
FINALS, TOLERANCE = GOLDEN["finals"], GOLDEN["tolerance"]


def test_notebook_models_learn_on_real_data_in_a_few_hundred_steps(fashion_mnist, tmp_path):
    # golden_seed.experiment: the notebook's three models, three seeds in one program.
    # Chance is 0.10 and the untrained loss ≈ ln(10) = 2.30; 0.4 (four times chance) is a
    # margin wide enough for any seed, strict enough to catch an engine that does not learn.
    config, splits = golden_seed.experiment(fashion_mnist)
    results = run_experiment(config, splits, tmp_path)
    for result in results:
        history = result.history.per_seed
        assert result.seeds == (42, 43, 44)
        before = FINALS[result.name]
        for metric in ("loss", "val_loss"):
            np.testing.assert_allclose(history[metric][:, -1], before[metric],
                                       rtol=TOLERANCE[metric], err_msg=metric)
        np.testing.assert_allclose(history["val_accuracy"][:, -1], before["val_accuracy"],
                                   rtol=0, atol=TOLERANCE["val_accuracy"])
        np.testing.assert_allclose(result.test_accuracy, before["test_accuracy"],
                                   rtol=0, atol=TOLERANCE["test_accuracy"])
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
    assert set(summary) == {"baseline", "bn_after", "bn_before", "comparisons", "left_out",
                            "figures", "records", "format", "sha256"}
    assert summary["left_out"] == {}
    pairs = {(c["name_a"], c["name_b"]) for c in summary["comparisons"]}
    assert len(pairs) == 3 and all(c["comparisons"] == 3 and c["n"] == 3
                                   for c in summary["comparisons"])
