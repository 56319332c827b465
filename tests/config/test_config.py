"""Experiment files: the seed preset is the notebook; every mistake is one clear line."""

from __future__ import annotations

import codecs

import pytest

from bnlab.config.experiment import with_overrides
from bnlab.config.files import experiment_from_json, load_experiment, preset_names
from bnlab.config.lines import line_of
from bnlab.errors import ConfigError, python_option
from bnlab.nn.summary import summarize

GOOD = """
name = "mine"
epochs = 2
[optimizer]
name = "adam"
learning_rate = 0.01
b1 = 0.8
[[variants]]
name = "base"
model = "baseline"
[[variants]]
name = "custom"
layers = [
  { type = "flatten" },
  { type = "batch_norm", momentum = 0.9, epsilon = 1e-5 },
  { type = "dense", units = 10, activation = "softmax" },
]
"""


def write(tmp_path, text: str):
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


def test_seed_preset_is_the_notebook_recipe():
    config = load_experiment("seed")
    assert "seed" in preset_names()
    assert [v.name for v in config.variants] == ["baseline", "bn_after", "bn_before"]
    assert (config.epochs, config.batch_size, config.seeds, config.seed) == (10, 32, 1, 42)
    assert (config.optimizer.name, config.optimizer.learning_rate) == ("sgd", 1e-3)
    totals = [summarize(v.build()).total for v in config.variants]
    assert totals == [266_610, 271_346, 270_946]


def test_valid_file_builds_optimizer_with_arguments_and_custom_layers(tmp_path):
    config = load_experiment(write(tmp_path, GOOD))
    assert config.optimizer.args == {"b1": 0.8}
    config.optimizer.build()  # optax.adam(learning_rate=0.01, b1=0.8)
    model = config.variants[1].build()
    assert model.layers[1].momentum == 0.9
    assert with_overrides(config, seeds=5, epochs=None).seeds == 5


def test_a_cosine_schedule_is_stored_only_when_chosen_and_decays_as_its_closed_form(tmp_path):
    """η_t = η · ½ (1 + cos(π t / T)) over the T steps ``build`` is given (SGD on a unit
    gradient steps by −η_t); the default, a constant rate, is not written into a stored
    config, so a run from before schedules reads back the same."""
    import jax.numpy as jnp
    import numpy as np

    text = GOOD.replace('name = "adam"', 'name = "sgd"').replace("b1 = 0.8", "")
    assert "schedule" not in load_experiment(write(tmp_path, text)).to_dict()["optimizer"]
    config = load_experiment(write(tmp_path, text.replace("learning_rate = 0.01",
                                                          'learning_rate = 0.01\n'
                                                          'schedule = "cosine"')))
    stored = config.to_dict()
    assert stored["optimizer"]["schedule"] == "cosine"
    assert experiment_from_json(stored, source="config.json").optimizer == config.optimizer
    optimizer, params = config.optimizer.build(steps=8), {"w": jnp.zeros(())}
    state, steps = optimizer.init(params), []
    for _ in range(10):
        update, state = optimizer.update({"w": jnp.ones(())}, state, params)
        steps.append(float(-update["w"]))
    t = np.minimum(np.arange(10), 8)  # held at 0 after T steps
    np.testing.assert_allclose(steps, 0.01 * 0.5 * (1 + np.cos(np.pi * t / 8)), rtol=1e-6,
                               atol=1e-9)


@pytest.mark.parametrize(("edit", "expected"), [
    (("epochs = 2", "epoch = 2"), r"exp\.toml:3: epoch: unknown key; allowed: .*epochs"),
    (("epochs = 2", 'epochs = "two"'), r"exp\.toml:3: epochs: must be int"),
    (("epochs = 2", "epochs = 0"), r"exp\.toml:3: epochs: must be in 1\.\.100,000, got 0"),
    (('name = "adam"', 'name = "adamm"'), r"exp\.toml:5: optimizer\.name: 'adamm' is not an optax"),
    (("b1 = 0.8", "beta1 = 0.8"), r"exp\.toml:7: optimizer\.beta1: not an argument of "
                                  r"optax\.adam; allowed: .*b1"),
    (("b1 = 0.8", 'b1 = 0.8\nschedule = "linear"'),
     r"exp\.toml:8: optimizer\.schedule: must be one of constant, cosine, got 'linear'"),
    (("b1 = 0.8", "b1 = 0.8\nschedule = 1"),
     r"exp\.toml:8: optimizer\.schedule: must be one of constant, cosine, got 1$"),
    (('model = "baseline"', 'model = "resnet"'), r"exp\.toml:10: variants\[0\]\.model: unknown"),
    (('{ type = "flatten" },', '{ type = "flaten" },'),
     r"exp\.toml:14: variants\[1\]\.layers\[0\]: layer type 'flaten' unknown"),
    (("momentum = 0.9", "momentum = 1.5"),
     r"exp\.toml:15: variants\[1\]\.layers\[1\]: .*momentum must be in \[0, 1\]"),
    (("momentum = 0.9", "momentun = 0.9"),
     r"exp\.toml:15: variants\[1\]\.layers\[1\]: batch_norm layer has no option 'momentun'"),
    (("units = 10, activation", "units = 0, activation"),
     r"exp\.toml:16: variants\[1\]\.layers\[2\]: Dense units must be a positive integer"),
    (('  { type = "batch_norm", momentum = 0.9', '  # { type = "dropout" }, "{"\n'
      '  { type = "batch_norm", momentun = 0.9'),  # a commented-out layer is not counted
     r"exp\.toml:16: variants\[1\]\.layers\[1\]: batch_norm layer has no option"),
    (('{ type = "flatten" },', ""),  # an impossible order is named by the layer's own line
     r"exp\.toml:15: variants\[1\]\.layers\[0\]: BatchNorm expects \(batch, features\) or "
     r".*put a Flatten layer \(or a Reshape to \[28, 28, 1\]\) before it"),
    (("epochs = 2", "epochs = 2\nepochs = 3"), r"invalid TOML: .*line 4"),
])
def test_invalid_file_gives_one_line_naming_file_key_and_allowed_values(tmp_path, edit, expected):
    old, new = edit
    assert old in GOOD
    with pytest.raises(ConfigError, match=expected) as err:
        load_experiment(write(tmp_path, GOOD.replace(old, new, 1)))
    assert "\n" not in str(err.value)


def test_last_layer_must_give_class_scores(tmp_path):
    text = GOOD.replace('{ type = "dense", units = 10, activation = "softmax" },',
                        '{ type = "dense", units = 10 }, { type = "batch_norm" },')
    with pytest.raises(ConfigError, match="last layer must be a dense layer"):
        load_experiment(write(tmp_path, text))


def test_unknown_preset_and_unreadable_file_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="no experiment file or preset named 'sed'; presets"):
        load_experiment("sed")
    with pytest.raises(ConfigError, match="cannot read experiment file"):
        load_experiment(tmp_path / "missing.toml")


@pytest.mark.parametrize(("edit", "expected"), [
    (("momentum = 0.9", 'momentum = "0.9"'), r"batch_norm layer option momentum must be a number"),
    (("momentum = 0.9", "center = \"false\""), r"option center must be true or false"),
    (("epsilon = 1e-5", "epsilon = true"), r"option epsilon must be a number"),
    (("momentum = 0.9", 'axis_name = "d"'), r"batch_norm layer has no option 'axis_name'"),
    (("units = 10, activation", "units = 10.5, activation"), r"units must be an integer"),
    (("b1 = 0.8", 'b1 = "x"'), r"optimizer\.b1: must be a number"),
    (('name = "mine"', 'name = "../up"'), r"must be a plain folder name"),
    (('name = "custom"', 'name = "tensorboard"'), r"other than comparisons, tensorboard"),
    (("units = 10, activation", "units = 5, activation"), r"dense layer with 10 units"),
    (('activation = "softmax" }', 'activation = "sigmoid" }'), r"activation softmax or linear"),
    (('name = "adam"', 'name = "_deprecated_dpsgd"'), r"is not an optax optimizer"),
    (("epochs = 2", 'epochs = 2\ndataset = "cifar"'), r"unknown dataset 'cifar'"),
    (("momentum = 0.9", 'momentum_on = "newest"'), r"momentum_on must be one of 'old', 'new'"),
    (("units = 10, activation", "activation"), r"dense layer needs units"),
    (("b1 = 0.8", "b1 = 0.8\nnesterov = 1"), r"optimizer\.nesterov: must be true or false"),
    (('name = "adam"\nlearning_rate = 0.01\nb1 = 0.8', 'name = "sgd"\nmomentum = "fast"'),
     r"exp\.toml:6: optimizer\.momentum: optax\.sgd fails with this argument .*: TypeError"),
    (('name = "adam"\nlearning_rate = 0.01\nb1 = 0.8', 'name = "lbfgs"'),
     r"exp\.toml:4: optimizer: optax\.lbfgs fails with these arguments"),
    (("epochs = 2", "epochs = 2\nbatch_size = 54999"),
     r"batch_size: .*a training batch has one row.*\(variant 'custom'\)"),
    (("epochs = 2", "epochs = 2\nseeds = 1001"), r"seeds: must be in 1\.\.1,000"),
    (("epochs = 2", "epochs = 2\nseed = 2147483647\nseeds = 2"), r"seed: must be in 0\.\."),
    (("epochs = 2", "epochs = 2\nseed = -1"), r"seed: must be in 0\.\."),
])
def test_wrong_option_types_and_impossible_outputs_are_one_line_errors(tmp_path, edit,
                                                                       expected):
    old, new = edit
    assert old in GOOD
    with pytest.raises(ConfigError, match=expected) as err:
        load_experiment(write(tmp_path, GOOD.replace(old, new, 1)))
    assert "\n" not in str(err.value)


def test_activation_dropout_and_leaky_relu_layers_are_valid_in_a_file(tmp_path):
    text = GOOD.replace('{ type = "batch_norm", momentum = 0.9, epsilon = 1e-5 },',
                        '{ type = "dense", units = 32, use_bias = false }, '
                        '{ type = "batch_norm", momentum_on = "new", momentum = 0.1 }, '
                        '{ type = "activation", name = "relu" }, { type = "dropout", rate = 0.5 }, '
                        '{ type = "leaky_relu", negative_slope = 0.2 },')
    model = load_experiment(write(tmp_path, text)).variants[1].build()
    assert [type(layer).__name__ for layer in model.layers] == [
        "Flatten", "Dense", "BatchNorm", "Activation", "Dropout", "LeakyReLU", "Dense"]
    assert (model.layers[3].name, model.layers[4].rate, model.layers[5].negative_slope) == (
        "relu", 0.5, 0.2)


def test_non_utf8_file_is_one_line(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin\.toml: not a UTF-8 text file"):
        load_experiment(path)


def test_command_line_overrides_are_bounded():
    config = load_experiment("seed")
    with pytest.raises(ConfigError, match=r"^seeds must be in 1\.\.1,000, got 5,000") as err:
        with_overrides(config, seeds=5000)
    assert err.value.render(lambda name, value: f"--{name}") == (
        "--seeds must be in 1..1,000, got 5,000")  # the CLI names its flag
    with pytest.raises(ConfigError, match=r"^epochs must be in 1\.\.100,000, got 0"):
        with_overrides(config, epochs=0)
    assert python_option("seeds", None) == "seeds"


FLOAT32_LIMIT = r"must be a finite number of magnitude at most 3\.403e\+38 \(float32's largest\)"


@pytest.mark.parametrize(("edit", "expected"), [
    (("learning_rate = 0.01", "learning_rate = 1e308"),
     r"exp\.toml:6: optimizer\.learning_rate: must be a finite positive number, got 1e\+308, "
     r"beyond float32's largest \(3\.403e\+38\)$"),
    (("learning_rate = 0.01", "learning_rate = 3.5e38"),
     r"exp\.toml:6: optimizer\.learning_rate: must be a finite positive number, got 3\.5e\+38, "
     r"beyond float32's largest"),
    (("learning_rate = 0.01", "learning_rate = nan"),
     r"exp\.toml:6: optimizer\.learning_rate: must be a finite positive number, got nan$"),
    (("b1 = 0.8", "b1 = inf"), rf"exp\.toml:7: optimizer\.b1: {FLOAT32_LIMIT}, got inf"),
    (("b1 = 0.8", "b1 = -1e39"), rf"exp\.toml:7: optimizer\.b1: {FLOAT32_LIMIT}, got -1e\+39"),
    (("b1 = 0.8", "eps = nan"), rf"exp\.toml:7: optimizer\.eps: {FLOAT32_LIMIT}, got nan"),
    (("b1 = 0.8", "eps_root = 400000000000000000000000000000000000000"),  # an int, 4e38
     rf"exp\.toml:7: optimizer\.eps_root: {FLOAT32_LIMIT}, got 4000"),
    (("epsilon = 1e-5", "epsilon = 1e39"),
     rf"exp\.toml:15: variants\[1\]\.layers\[1\]: batch_norm layer option epsilon "
     rf"{FLOAT32_LIMIT}, got 1e\+39"),
    (("epsilon = 1e-5", "epsilon = inf"),
     rf"exp\.toml:15: variants\[1\]\.layers\[1\]: .*option epsilon {FLOAT32_LIMIT}, got inf"),
    (("momentum = 0.9", "momentum = nan"),
     rf"exp\.toml:15: variants\[1\]\.layers\[1\]: .*option momentum {FLOAT32_LIMIT}, got nan"),
    (("units = 10, activation", "units = 10000000000000000000000000000000000000000, activation"),
     rf"exp\.toml:16: variants\[1\]\.layers\[2\]: dense layer option units {FLOAT32_LIMIT}"),
    (('{ type = "flatten" },', '{ type = "flatten" }, { type = "dropout", rate = nan },'),
     rf"exp\.toml:14: variants\[1\]\.layers\[1\]: dropout layer option rate {FLOAT32_LIMIT}"),
    (('{ type = "flatten" },', '{ type = "flatten" },\n  { type = "leaky_relu", '
      'negative_slope = -inf },'),
     rf"exp\.toml:15: variants\[1\]\.layers\[1\]: leaky_relu layer option negative_slope "
     rf"{FLOAT32_LIMIT}, got -inf"),
])
def test_numbers_that_are_not_finite_or_overflow_float32_are_refused_at_their_line(
        tmp_path, edit, expected):
    old, new = edit
    assert old in GOOD
    with pytest.raises(ConfigError, match=expected) as err:
        load_experiment(write(tmp_path, GOOD.replace(old, new, 1)))
    assert "\n" not in str(err.value)


def test_largest_float32_itself_is_a_valid_number(tmp_path):
    config = load_experiment(write(tmp_path, GOOD.replace("b1 = 0.8", "eps = 3.4028234e38")))
    assert config.optimizer.args == {"eps": 3.4028234e38}


@pytest.mark.parametrize(("path", "value"), [
    (("optimizer", "learning_rate"), float("inf")),
    (("optimizer", "b1"), float("nan")),
    (("variants", 1, "layers", 1, "epsilon"), 1e39),
    (("epochs",), 10**5000),  # a Python dict can hold one; its repr raises ValueError
], ids=["learning_rate-inf", "b1-nan", "epsilon-1e39", "epochs-5000-digits"])
def test_stored_config_json_with_a_non_finite_number_is_refused(tmp_path, path, value):
    data = load_experiment(write(tmp_path, GOOD)).to_dict()
    *parents, last = path
    target = data
    for key in parents:
        target = target[key]
    target[last] = value
    with pytest.raises(ConfigError, match=r"^config\.json: .*(finite|must be in)") as err:
        experiment_from_json(data, source="config.json")
    assert "\n" not in str(err.value)


def test_a_file_with_a_utf8_byte_order_mark_reads_as_without_it(tmp_path):
    plain = load_experiment(write(tmp_path, GOOD))
    path = tmp_path / "bom.toml"
    path.write_bytes(codecs.BOM_UTF8 + GOOD.encode())
    assert load_experiment(path) == plain
    path.write_bytes(codecs.BOM_UTF8 + GOOD.replace("epochs = 2", "epochs = 0").encode())
    with pytest.raises(ConfigError, match=r"bom\.toml:3: epochs: must be in 1\.\."):
        load_experiment(path)  # lines are counted as in the file
    path.write_bytes(codecs.BOM_UTF8 + b'name = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"not a UTF-8 text file \(byte 14\)"):
        load_experiment(path)  # the byte offset counts the mark


def test_an_integer_too_long_for_python_is_one_line_not_a_value_error(tmp_path):
    path = write(tmp_path, GOOD.replace("epochs = 2", "epochs = " + "9" * 5000))
    with pytest.raises(ConfigError, match=r"exp\.toml: invalid TOML: Exceeds the limit") as err:
        load_experiment(path)
    assert "\n" not in str(err.value) and "sys." not in str(err.value)


@pytest.mark.parametrize(("edit", "expected"), [
    (('name = "adam"\nlearning_rate = 0.01\nb1 = 0.8',
      'name = "sgd"\nlearning_rate = 0.01\nmomentum = "fast"'),
     r"exp\.toml:7: optimizer\.momentum: optax\.sgd fails with this argument \(check its "
     r"type and value\): TypeError"),
    (('name = "adam"\nlearning_rate = 0.01\nb1 = 0.8',  # the blame falls on the bad one
      'name = "sgd"\nlearning_rate = 0.01\nnesterov = true\nmomentum = "fast"'),
     r"exp\.toml:8: optimizer\.momentum: optax\.sgd fails with this argument"),
    (("b1 = 0.8", 'b1 = 0.8\nmu_dtype = "float33"'),  # optax.adam's constructor rejects it
     r"exp\.toml:8: optimizer\.mu_dtype: optax\.adam fails with this argument .*: TypeError: "
     r"data type 'float33' not understood"),
    (("b1 = 0.8", "b1 = 0.8\nb3 = 0.1"),
     r"exp\.toml:8: optimizer\.b3: not an argument of optax\.adam; allowed: b1, b2"),
    (("b1 = 0.8", "b1 = [0.8]"), r"exp\.toml:7: optimizer\.b1: must be a number like its "
                                 r"default 0\.9, got \[0\.8\]"),
    (("b1 = 0.8", "b1 = 0.8\nmu_dtype = 1979-05-27"),
     r"exp\.toml:8: optimizer\.mu_dtype: must be a number, string, boolean, array or table, "
     r"got the date or time 1979-05-27"),
    (('name = "adam"', 'name = "Schedule"'), r"exp\.toml:5: optimizer\.name: 'Schedule' is "
                                             r"not an optax optimizer"),
])
def test_optimizer_argument_errors_name_the_line_of_their_key(tmp_path, edit, expected):
    old, new = edit
    assert old in GOOD
    with pytest.raises(ConfigError, match=expected) as err:
        load_experiment(write(tmp_path, GOOD.replace(old, new, 1)))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("key", "line"), [
    ("optimizer", 4), ("variants[1]", 11), ("variants", 8), ("optimizer.b1", 7),
    ('x[y', None), ("a[b.c[d", None), ("variants[9].name", None), ("variants[1].layers[9]", 13),
])
def test_line_of_finds_tables_by_their_header_and_never_fails(key, line):
    assert line_of(GOOD, key) == line


def test_a_layer_type_that_is_not_a_string_is_one_line(tmp_path):
    text = GOOD.replace('{ type = "flatten" },', '{ type = ["flatten"] },')
    with pytest.raises(ConfigError, match=r"exp\.toml:14: variants\[1\]\.layers\[0\]: layer "
                       r"type \['flatten'\] unknown"):
        load_experiment(write(tmp_path, text))


def test_a_value_nested_deeper_than_the_recursion_limit_is_one_line():
    data = load_experiment("seed").to_dict()
    nested = float("nan")
    for _ in range(5_000):  # json.loads refuses this depth; a Python caller's dict need not
        nested = [nested]
    data["optimizer"]["momentum"] = nested
    with pytest.raises(ConfigError, match=r"^config\.json: optimizer\.momentum: must be a "
                                          r"finite number .*, got nan$"):
        experiment_from_json(data, source="config.json")


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_stores_back_equal(name):
    config = load_experiment(name)
    assert config.name == name and config.points
    assert experiment_from_json(config.to_dict(), source=name) == config


def test_the_figure1_preset_says_how_many_points_its_plan_records():
    """The preset's comment states the record count; the plan's schedule (steps 0, every, …
    of each epoch) gives it: 55 epochs of ⌈55,000 / 60⌉ = 917 steps."""
    import re

    from bnlab.config.files import PRESET_DIR

    config = load_experiment("figure1")
    stated = re.search(r"every = \d+ .*: (\d+) points", (PRESET_DIR / "figure1.toml").read_text())
    steps = -(-config.training_rows() // config.batch_size)
    assert steps == 917
    assert int(stated[1]) == config.epochs * config.probe.probe_steps(steps) == 275
