"""Fuzzing the experiment parser: whatever a file or a stored ``config.json`` holds, the
answer is an ``ExperimentConfig`` or a one-line ``ConfigError``, never another exception.

Inputs: arbitrary text and bytes; the seed preset with characters replaced, deleted or
inserted, and lines repeated or dropped; TOML documents built from the preset with one value
replaced by an arbitrary one; every optax function by name with arbitrary arguments; and
stored configs with any subtree replaced by an arbitrary JSON value. Examples are
derandomized (the same on every machine) and nothing is kept between runs.
"""

from __future__ import annotations

import inspect
import json
import math
import string

import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnlab.config.experiment import ExperimentConfig
from bnlab.config.files import PRESET_DIR, experiment_from_json, load_experiment, parse_experiment
from bnlab.errors import BnlabError

SEED_TEXT = (PRESET_DIR / "seed.toml").read_text(encoding="utf-8")
SEED_DICT = load_experiment("seed").to_dict()
CUSTOM = {**SEED_DICT, "variants": [
    {"name": "custom", "layers": [
        {"type": "flatten"},
        {"type": "dense", "units": 16, "use_bias": False},
        {"type": "batch_norm", "momentum": 0.9, "epsilon": 1e-5, "momentum_on": "old"},
        {"type": "leaky_relu", "negative_slope": 0.2},
        {"type": "dropout", "rate": 0.25},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ]},
]}

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# Values JSON (and most of TOML) can hold; floats include NaN, ±inf and huge ones.
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.sampled_from([1e308, -1e39, 3.5e38, 2**64, -(2**63), 0, 1, 2, 10, 55_000])
           | st.text(max_size=12)
           | st.sampled_from(["sgd", "adam", "batch_norm", "dense", "softmax", "baseline",
                              "old", "new", "", "../x", "tensorboard"]))
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)


def outcome(parse) -> ExperimentConfig | None:
    """``parse()``'s config, or ``None`` when it raised a one-line bnlab error; any other
    exception fails the test."""
    try:
        config = parse()
    except BnlabError as err:
        message = str(err)
        assert message and "\n" not in message and "\r" not in message
        return None
    assert isinstance(config, ExperimentConfig)
    try:  # a stored config meets optax when its optimizers are built
        for point in config.points:
            point.optimizer.build()
    except BnlabError as err:
        assert str(err) and "\n" not in str(err)
    stored = json.loads(json.dumps(config.to_dict(), allow_nan=False))  # config.json
    assert experiment_from_json(stored, source="config.json") == config  # it reads back
    return config


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def load_bytes(folder, data: bytes) -> ExperimentConfig | None:
    path = folder / "exp.toml"
    path.write_bytes(data)
    return outcome(lambda: load_experiment(path))


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text_is_a_config_or_a_config_error(folder, text):
    load_bytes(folder, text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_config_or_a_config_error(folder, data):
    load_bytes(folder, data)


@st.composite
def mutated_seed(draw) -> str:
    """The seed preset with 1–4 edits: a character replaced, deleted or inserted, a span
    deleted, or a line repeated."""
    text = SEED_TEXT
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["replace", "delete", "insert", "span", "line"]))
        char = draw(st.sampled_from(list('"\'[]{}=.,#\n -+_0123456789eEinfa')) | st.characters())
        if kind == "replace":
            text = text[:at] + char + text[at + 1:]
        elif kind == "delete":
            text = text[:at] + text[at + 1:]
        elif kind == "insert":
            text = text[:at] + char + text[at:]
        elif kind == "span":
            text = text[:at] + text[at + draw(st.integers(1, 40)):]
        else:
            lines = text.splitlines(keepends=True)
            index = draw(st.integers(0, len(lines) - 1))
            text = "".join(lines[:index + 1] + lines[index:])
    return text


@FUZZ
@given(mutated_seed())
def test_the_seed_preset_with_characters_changed_is_a_config_or_a_config_error(folder, text):
    load_bytes(folder, text.encode("utf-8", "surrogatepass"))


TOML_SCALARS = (st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats()
                | st.text(string.printable, max_size=10)
                | st.sampled_from([1e308, 1e39, 1e-45, 0, 2, 3, 32, 54_999, 55_000, "sgd"]))


def toml_value(value) -> str:
    """``value`` (a bool, int, float, str, or list of them) written as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return json.dumps(value) if isinstance(value, str) else repr(value)


@FUZZ
@given(key=st.sampled_from(["name", "description", "dataset", "epochs", "batch_size", "seed",
                            "seeds", "learning_rate", "momentum", "nesterov", "model"]),
       value=TOML_SCALARS | st.lists(TOML_SCALARS, max_size=3))
def test_a_preset_value_replaced_by_any_toml_value_is_a_config_or_a_config_error(
        folder, key, value):
    text = SEED_TEXT.replace("seeds = 1", "seeds = 1\nnesterov = false", 1) \
        .replace('learning_rate = 1e-3', "learning_rate = 1e-3\nmomentum = 0.5")
    lines = [f"{key} = {toml_value(value)}" if line.startswith(f"{key} = ") else line
             for line in text.splitlines()]
    load_bytes(folder, "\n".join(lines).encode("utf-8", "surrogatepass"))


def signature_names(name: str) -> list[str]:
    """The parameter names of ``optax.<name>``; none for what has no signature."""
    try:
        return list(inspect.signature(getattr(optax, name)).parameters)
    except (TypeError, ValueError):
        return []


OPTAX_NAMES = sorted(name for name in dir(optax) if not name.startswith("__"))
OPTIMIZERS = [name for name in OPTAX_NAMES
              if not name.startswith("_") and "learning_rate" in signature_names(name)]


@FUZZ
@given(st.data())
def test_any_optax_name_with_any_arguments_is_a_config_or_a_config_error(data):
    name = data.draw(st.sampled_from(OPTIMIZERS) | st.sampled_from(OPTAX_NAMES))
    keys = st.sampled_from(sorted({*signature_names(name), "momentum", "x"}))
    args = data.draw(st.dictionaries(keys, SCALARS, max_size=3))
    raw = {**SEED_DICT, "optimizer": {"name": name, **args}}
    outcome(lambda: parse_experiment(raw, source="fuzz"))


def paths(value, prefix=()):
    """Every path into ``value`` (dict keys and list indices), the empty one first."""
    yield prefix
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from paths(child, (*prefix, key))


def replaced(value, path, new):
    """``value`` with the subtree at ``path`` replaced by ``new`` (copies along the path)."""
    if not path:
        return new
    head, *rest = path
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = replaced(value[head], rest, new)
    return copy


@FUZZ
@given(st.data())
def test_a_stored_config_with_any_part_replaced_is_a_config_or_a_config_error(data):
    document = data.draw(st.sampled_from([SEED_DICT, CUSTOM]))
    path = data.draw(st.sampled_from(list(paths(document))))
    new = data.draw(JSON_VALUES)
    outcome(lambda: experiment_from_json(replaced(document, path, new), source="config.json"))


@FUZZ
@given(st.data())
def test_a_stored_config_with_a_key_dropped_or_added_is_a_config_or_a_config_error(data):
    document = data.draw(st.sampled_from([SEED_DICT, CUSTOM]))
    tables = [p for p in paths(document) if isinstance(_at(document, p), dict)]
    path = data.draw(st.sampled_from(tables))
    table = dict(_at(document, path))
    if table and data.draw(st.booleans()):
        del table[data.draw(st.sampled_from(sorted(table)))]
    else:
        table[data.draw(st.text(max_size=8))] = data.draw(JSON_VALUES)
    outcome(lambda: experiment_from_json(replaced(document, path, table), source="config.json"))


def _at(value, path):
    for key in path:
        value = value[key]
    return value


@FUZZ
@given(JSON_VALUES)
def test_any_json_value_as_a_stored_config_is_a_config_or_a_config_error(value):
    outcome(lambda: experiment_from_json(value, source="config.json"))
