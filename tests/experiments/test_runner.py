"""The runner: a variant's seeds resume from a checkpoint to the numbers of a straight run,
and a diverging variant is one line naming the fix."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from safetensors import safe_open

from bnlab.config.experiment import ExperimentConfig, VariantConfig
from bnlab.config.optimizer import OptimizerConfig
from bnlab.errors import DivergenceError
from bnlab.experiments.runner import train_variant
from tests.synthetic import TINY_LAYERS, tiny_splits


def tiny_config(**overrides) -> ExperimentConfig:
    config = ExperimentConfig(name="tiny", variants=(VariantConfig("tiny", layers=TINY_LAYERS),),
                              epochs=3, batch_size=32)
    return dataclasses.replace(config, **overrides)


def test_a_resumed_padded_run_saves_the_real_seeds_and_equals_a_straight_run(tmp_path):
    # 3 seeds on the tests' two CPU devices: the trainer's state holds 4 (seed 5 twice).
    splits, variant = tiny_splits(), VariantConfig("tiny", layers=TINY_LAYERS)
    stem = tmp_path / "checkpoint"
    train_variant(variant, tiny_config(seed=3, seeds=3, epochs=2), splits, checkpoint=stem)
    with safe_open(str(stem.with_suffix(".safetensors")), framework="numpy") as saved:
        assert {saved.get_tensor(name).shape[0] for name in saved.keys()} == {3}  # noqa: SIM118
        assert not any(name.startswith("keys/") for name in saved.keys())  # noqa: SIM118
    resumed = train_variant(variant, tiny_config(seed=3, seeds=3, epochs=3), splits,
                            checkpoint=stem, resume=True)
    straight = train_variant(variant, tiny_config(seed=3, seeds=3, epochs=3), splits)
    for metric, values in straight.history.per_seed.items():
        np.testing.assert_allclose(resumed.history.per_seed[metric], values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(resumed.test_accuracy, straight.test_accuracy, rtol=0, atol=1e-6)
    assert len(resumed.history.epoch_seconds) == 3


def test_diverging_run_raises_one_line_error_naming_the_fix():
    plain = ({"type": "flatten"}, {"type": "dense", "units": 3, "activation": "softmax"})
    config = tiny_config(variants=(VariantConfig("plain", layers=plain),),
                         optimizer=OptimizerConfig("sgd", 1e38))
    with pytest.raises(DivergenceError, match=r"^plain diverged in epoch \d+ \(loss is not "
                                              r"finite for seed\(s\) 42\); lower "
                                              r"optimizer\.learning_rate \(now 1e\+38\)") as err:
        train_variant(config.variants[0], config, tiny_splits())
    assert "\n" not in str(err.value)
