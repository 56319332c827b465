"""The [sweep] table: axes, points, what is scalar, --set settings, and one-line errors."""

from __future__ import annotations

import json

import pytest

from bnlab.config.files import experiment_from_json, load_experiment, parse_setting
from bnlab.config.small_batch import small_batch_warnings
from bnlab.config.sweep import value_text
from bnlab.errors import ConfigError
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.layers import Dense, Dropout

SWEEP = """
name = "swept"
epochs = 2
seeds = 3
[optimizer]
name = "sgd"
learning_rate = 0.01
momentum = 0.5
[[variants]]
name = "base"
model = "baseline"
[[variants]]
name = "bn"
layers = [
  { type = "flatten" },
  { type = "batch_norm" },
  { type = "dense", units = 20, activation = "relu" },
  { type = "dropout", rate = 0.1 },
  { type = "batch_norm" },
  { type = "dense", units = 10, activation = "softmax" },
]
[sweep]
"optimizer.learning_rate" = [0.01, 0.1]
"batch_norm.momentum" = [0.9, 0.99]
"dense[0].units" = [20, 40]
"""


def write(tmp_path, text: str):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_points_cross_the_axes_and_an_axis_a_variant_lacks_does_not_multiply_it(tmp_path):
    config = load_experiment(write(tmp_path, SWEEP))
    names = [p.name for p in config.points]
    # base has no batch_norm layer: 2 learning rates × 2 widths; bn: 2 × 2 × 2.
    assert len(names) == 4 + 8 and len(set(names)) == 12
    assert names[0] == "base@learning_rate=0.01,dense[0].units=20"
    assert "bn@learning_rate=0.1,batch_norm.momentum=0.9,dense[0].units=40" in names
    point = config.point("bn@learning_rate=0.1,batch_norm.momentum=0.9,dense[0].units=40")
    model = point.build()
    assert [layer.momentum for layer in model.layers if isinstance(layer, BatchNorm)] == [0.9,
                                                                                         0.9]
    assert [layer.units for layer in model.layers if isinstance(layer, Dense)] == [40, 10]
    assert (point.optimizer.learning_rate, point.optimizer.args) == (0.1, {"momentum": 0.5})
    assert point.batch_size == 32 and point.variant == "bn"
    assert {axis.key: axis.scalar for axis in config.sweep} == {
        "optimizer.learning_rate": True, "batch_norm.momentum": True, "dense[0].units": False}


def test_a_variants_axis_picks_and_orders_the_variants_and_batch_size_is_an_axis(tmp_path):
    text = SWEEP.split("[sweep]")[0] + '[sweep]\nvariants = ["bn", "base"]\nbatch_size = [8, 64]\n'
    config = load_experiment(write(tmp_path, text))
    assert [(p.variant, p.batch_size) for p in config.points] == [
        ("bn", 8), ("bn", 64), ("base", 8), ("base", 64)]


def test_a_stored_sweep_config_reads_back_equal(tmp_path):
    config = load_experiment(write(tmp_path, SWEEP))
    stored = json.loads(json.dumps(config.to_dict()))
    again = experiment_from_json(stored, source="config.json")
    assert again == config and [p.name for p in again.points] == [p.name for p in config.points]


def test_settings_change_a_file_for_one_run_through_the_same_checks(tmp_path):
    path = write(tmp_path, SWEEP)
    config = load_experiment(path, ["epochs=5", "optimizer.momentum=0.9",
                                    'sweep."optimizer.learning_rate"=[0.3]',
                                    'sweep."dropout.rate"=[0.0, 0.5]'])
    assert config.epochs == 5 and config.optimizer.args == {"momentum": 0.9}
    rates = {p.value("dropout.rate") for p in config.points if p.variant == "bn"}
    assert rates == {0.0, 0.5}
    bn = next(p for p in config.points if p.variant == "bn")
    assert [layer.rate for layer in bn.build().layers if isinstance(layer, Dropout)] == [0.0]
    assert parse_setting("dataset=fashion_mnist") == {"dataset": "fashion_mnist"}  # bare text
    with pytest.raises(ConfigError, match=r"sweep.toml with epochs=0.*epochs: must be in 1"):
        load_experiment(path, ["epochs=0"])
    with pytest.raises(ConfigError, match="write key=value"):
        parse_setting("epochs")


@pytest.mark.parametrize(("axis", "expected"), [
    ('"optimizer.learning_rate" = [0.1, -1.0]', "learning_rate: must be a finite positive"),
    ('"optimizer.momentum" = ["fast"]', "optax.sgd fails with this argument"),
    ('"optimizer.nesterov_typo" = [true]', "not an argument of optax.sgd"),
    ('"optimizer.learning_rate" = [0.1, 0.1]', "values must be distinct"),
    ('"optimizer.learning_rate" = []', "must be a non-empty array"),
    ('"batch_norm.momentum" = [1.5]', "BatchNorm momentum must be in [0, 1]"),
    ('"batch_norm.speed" = [1]', "batch_norm layer has no option 'speed'"),
    ('"dense[7].units" = [4]', "no variant has a dense layer at 7 to set"),
    ('"conv.units" = [4]', "unknown axis"),
    ('batch_size = [0]', "batch sizes must be integers in 1..55,000"),
    ('variants = ["nope"]', "no variant named 'nope'"),
    ('"dense.activation" = ["re/lu"]', "text values must be plain words"),
    ('"optimizer.learning_rate" = [1e39]', "(float32's largest), got 1e+39"),
])
def test_a_bad_axis_is_one_line_naming_its_file_line_and_key(tmp_path, axis, expected):
    text = SWEEP.split("[sweep]")[0] + "[sweep]\n" + axis + "\n"
    with pytest.raises(ConfigError) as raised:
        load_experiment(write(tmp_path, text))
    message = str(raised.value)
    assert "\n" not in message and expected in message, message
    line = SWEEP.split("[sweep]")[0].count("\n") + 2  # the axis's own line
    assert message.startswith(f"{tmp_path / 'sweep.toml'}:{line}: sweep."), message


def test_a_batch_size_that_leaves_one_row_for_bn_is_refused_naming_the_point(tmp_path):
    text = SWEEP.split("[sweep]")[0] + "[sweep]\nbatch_size = [32, 54999]\n"
    with pytest.raises(ConfigError, match=r"sweep.batch_size: .* one row.*point 'bn@batch_size"):
        load_experiment(write(tmp_path, text))


def test_small_batch_warnings_name_each_point_with_two_row_batches(tmp_path):
    text = SWEEP.split("[sweep]")[0] + "[sweep]\nbatch_size = [2, 32]\n"
    warnings = small_batch_warnings(load_experiment(write(tmp_path, text)), 55_000)
    assert len(warnings) == 1 and warnings[0].startswith("point 'bn@batch_size=2'")


@pytest.mark.parametrize(("value", "text"), [(0.001, "0.001"), (1.0, "1.0"), (1e-05, "1e-05"),
                                             (True, "true"), (32, "32"), ("relu", "relu")])
def test_values_are_written_as_a_file_writes_them(value, text):
    assert value_text(value) == text


def test_a_schedule_axis_gives_each_point_its_schedule_in_a_program_of_its_own(tmp_path):
    """``optimizer.schedule`` is not a number: its points train in separate programs (their
    optimizer states differ in structure); a value the table refuses names the axis."""
    from bnlab.experiments.sweep import programs

    text = SWEEP.replace('"batch_norm.momentum" = [0.9, 0.99]\n"dense[0].units" = [20, 40]\n',
                         '"optimizer.schedule" = ["constant", "cosine"]\n')
    config = load_experiment(write(tmp_path, text))
    point = config.point("bn@learning_rate=0.1,schedule=cosine")
    assert (point.optimizer.schedule, point.optimizer.learning_rate) == ("cosine", 0.1)
    assert config.point("bn@learning_rate=0.1,schedule=constant").optimizer.schedule == \
        "constant"
    assert len(programs(config)) == 4  # 2 variants × 2 schedules; the rates traced
    with pytest.raises(ConfigError, match=r"sweep\.optimizer\.schedule: must be one of "
                                          r"constant, cosine, got 'step'"):
        load_experiment(write(tmp_path, text.replace('"cosine"]', '"step"]')))
