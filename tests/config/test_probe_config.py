"""The ``[probe]`` table: defaults, every key checked at its line, stored and read back, and
the presets that record (figure1, why)."""

from __future__ import annotations

import pytest

from bnlab.config.files import experiment_from_json, load_experiment
from bnlab.errors import ConfigError
from bnlab.nn.layers import Dense
from bnlab.nn.norms import NoisyBatchNorm
from bnlab.train.probes import ProbePlan

HEAD = """
name = "probed"
"""
VARIANTS = """
[[variants]]
name = "base"
model = "baseline"
"""
BASE = HEAD + VARIANTS


def write(tmp_path, text: str):
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


def test_without_a_probe_table_the_default_plan_records_activation_statistics(tmp_path):
    config = load_experiment(write(tmp_path, BASE))
    assert config.probe == ProbePlan() and config.probe.every > 0
    assert config.probe.measures_every == 0 and not config.probe.test_each_epoch


def test_a_probe_table_is_read_and_stored_and_read_back_equal(tmp_path):
    text = BASE + ("[probe]\nevery = 50\nrows = 64\nunits = 2\nmeasures_every = 100\n"
                   "step_scales = [1, 3]\ntest_each_epoch = true\n")  # after the variants
    config = load_experiment(write(tmp_path, text))
    assert config.probe == ProbePlan(every=50, rows=64, units=2, measures_every=100,
                                     step_scales=(1.0, 3.0), test_each_epoch=True)
    assert experiment_from_json(config.to_dict(), source="config.json") == config


def test_a_stored_config_from_before_probes_recorded_nothing():
    stored = load_experiment("seed").to_dict()
    del stored["probe"]
    assert experiment_from_json(stored, source="config.json").probe.every == 0


@pytest.mark.parametrize(("lines", "expected"), [
    ("[probe]\nevery = -1", r"exp\.toml:4: probe\.every: must be ≥ 0"),
    ("[probe]\nrows = 1", r"exp\.toml:4: probe\.rows: must be in 2\.\.5,000"),
    ("[probe]\nrows = 6000", r"probe\.rows: must be in 2\.\.5,000"),
    ("[probe]\neach = 3", r"exp\.toml:4: probe\.each: unknown key; allowed: every, "),
    ("[probe]\nstep_scales = []", r"probe\.step_scales: must be a non-empty array"),
    ("[probe]\nstep_scales = [0.5, -1]", r"probe\.step_scales: .*positive"),
    ("[probe]\ntest_each_epoch = 1", r"probe\.test_each_epoch: must be true or false"),
    ("[probe]\nunits = 2.5", r"probe\.units: must be int"),
    ("probe = 3", r"probe: must be a table"),
])
def test_probe_mistakes_are_one_line_naming_the_key(tmp_path, lines, expected):
    with pytest.raises(ConfigError, match=expected) as err:
        load_experiment(write(tmp_path, HEAD + lines + "\n" + VARIANTS))
    assert "\n" not in str(err.value)


def test_the_figure1_preset_is_the_papers_network_with_its_choices_marked():
    config = load_experiment("figure1")
    assert (config.batch_size, config.probe.test_each_epoch) == (60, True)
    assert config.epochs * -(-55_000 // 60) >= 50_000  # the paper's 50,000 steps
    assert "CHOICES" in config.description
    for variant in config.variants:
        dense = [layer for layer in variant.build().layers if isinstance(layer, Dense)]
        assert [d.units for d in dense] == [100, 100, 100, 10]
        assert all(d.kernel_init == "random_normal" and d.kernel_stddev == 0.01 for d in dense)
    with_bn = config.variants[1].build()
    assert [type(layer).__name__ for layer in with_bn.layers[1:4]] == ["Dense", "BatchNorm",
                                                                       "Activation"]


def test_the_why_preset_records_the_measures_for_the_notebook_models_and_noisy_bn():
    config = load_experiment("why")
    assert [v.name for v in config.variants] == ["baseline", "bn_after", "bn_before",
                                                 "noisy_bn"]
    assert config.probe.measures_every > 0 and config.seeds == 5
    noisy = config.variants[3].build()
    assert sum(isinstance(layer, NoisyBatchNorm) for layer in noisy.layers) == 2
