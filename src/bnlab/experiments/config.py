"""The experiment file (TOML) and its strict validation into frozen dataclasses.

    name = "seed"
    dataset = "fashion_mnist"
    epochs = 10
    batch_size = 32
    seed = 42            # first seed; a run with seeds = N uses seed, seed+1, …, seed+N−1
    seeds = 1

    [optimizer]          # any optax optimizer by name, with its keyword arguments
    name = "sgd"
    learning_rate = 1e-3

    [[variants]]
    name = "baseline"
    model = "baseline"   # a preset of bnlab.nn.zoo …

    [[variants]]
    name = "bn_tiny"     # … or a list of layers
    layers = [
      { type = "flatten" },
      { type = "batch_norm", momentum = 0.99, epsilon = 1e-3 },
      { type = "dense", units = 10, activation = "softmax" },
    ]

Every mistake is a ``ConfigError`` with one line naming the file, the key (and its line
where it can be found) and what is allowed.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

from bnlab.data.datasets import DATASETS
from bnlab.errors import BnlabError, ConfigError, LayerInputError
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.layers import Activation, Dense, Dropout, Flatten, LeakyReLU
from bnlab.nn.model import Sequential
from bnlab.nn.zoo import MODELS
from bnlab.train.engine import check_batching

LAYER_TYPES = {
    "flatten": Flatten,
    "dense": Dense,
    "batch_norm": BatchNorm,
    "activation": Activation,
    "leaky_relu": LeakyReLU,
    "dropout": Dropout,
}
TOP_KEYS = {"name", "description", "dataset", "epochs", "batch_size", "seed", "seeds",
            "optimizer", "variants"}
PRESET_DIR = Path(__file__).parent / "presets"
FILE_HIDDEN_OPTIONS = {"axis_name"}
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Upper bounds that catch typos before anything is allocated or written (a run's history is
# (seeds, epochs) per metric; seed, seed+1, … must stay distinct 31-bit PRNG seeds).
MAX_EPOCHS = 100_000
MAX_SEEDS = 1_000
MAX_SEED = 2**31 - 1
RESERVED_VARIANT_NAMES = {"tensorboard", "comparisons"}  # run-folder and summary.json keys


@dataclass(frozen=True)
class OptimizerConfig:
    """``optax.<name>(learning_rate, **args)``."""

    name: str = "sgd"
    learning_rate: float = 1e-3
    args: dict[str, Any] = field(default_factory=dict)

    def build(self) -> optax.GradientTransformation:
        return getattr(optax, self.name)(learning_rate=self.learning_rate, **self.args)


@dataclass(frozen=True)
class VariantConfig:
    """One model to train: a zoo preset (``model``) or an explicit ``layers`` list."""

    name: str
    model: str | None = None
    layers: tuple[dict[str, Any], ...] = ()

    def build(self, input_shape: tuple[int, ...] = (28, 28)) -> Sequential:
        """The model for inputs ``(batch, *input_shape)``."""
        if self.model is not None:
            return dataclasses.replace(MODELS[self.model](), name=self.name,
                                       input_shape=tuple(input_shape))
        return Sequential(tuple(_build_layer(spec) for spec in self.layers),
                          input_shape=tuple(input_shape), name=self.name)


@dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment: variants × seeds trained with one recipe."""

    name: str
    variants: tuple[VariantConfig, ...]
    description: str = ""
    dataset: str = "fashion_mnist"
    epochs: int = 10
    batch_size: int = 32
    seed: int = 42
    seeds: int = 1
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)

    @property
    def seed_list(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.seeds))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready), the resolved config a run stores."""
        return dataclasses.asdict(self)


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Inverse of ``ExperimentConfig.to_dict`` (a run's stored ``config.json``)."""
    return ExperimentConfig(
        **{k: v for k, v in data.items() if k not in ("variants", "optimizer")},
        variants=tuple(VariantConfig(v["name"], v["model"], tuple(v["layers"]))
                       for v in data["variants"]),
        optimizer=OptimizerConfig(**data["optimizer"]),
    )


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_experiment(file_or_preset: str | Path) -> ExperimentConfig:
    """Read and validate an experiment file, or a shipped preset by name (``seed``)."""
    path = Path(file_or_preset)
    if not path.suffix and not path.exists():
        if str(file_or_preset) not in preset_names():
            raise ConfigError(
                f"no experiment file or preset named {str(file_or_preset)!r}; presets: "
                f"{', '.join(preset_names())}"
            )
        path = PRESET_DIR / f"{file_or_preset}.toml"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read experiment file ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {err.start}); save the "
                          "experiment as UTF-8 TOML") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    return parse_experiment(raw, source=str(path), text=text)


def parse_experiment(raw: dict[str, Any], *, source: str = "<config>",
                     text: str = "") -> ExperimentConfig:
    """Validate parsed TOML ``raw`` into an ``ExperimentConfig``; ``text`` locates lines."""

    def fail(key: str, message: str) -> ConfigError:
        line = _line_of(text, key)
        where = f"{source}:{line}" if line else source
        return ConfigError(f"{where}: {key}: {message}")

    _reject_unknown(raw, TOP_KEYS, "", fail)
    for key in ("name", "variants"):
        if key not in raw:
            raise fail(key, "missing; every experiment needs a name and [[variants]]")
    name = _typed(raw, "name", str, fail)
    if not NAME_PATTERN.fullmatch(name):
        raise fail("name", f"{name!r} must be a plain folder name (letters, digits, _ . -)")
    dataset = _typed(raw, "dataset", str, fail, default="fashion_mnist")
    if dataset not in DATASETS:
        raise fail("dataset", f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    spec = DATASETS[dataset]
    classes = len(spec.class_names)
    n_train = spec.train_images.shape[0] - spec.validation_size
    epochs = _typed(raw, "epochs", int, fail, default=10)
    batch_size = _typed(raw, "batch_size", int, fail, default=32)
    seeds = _typed(raw, "seeds", int, fail, default=1)
    seed = _typed(raw, "seed", int, fail, default=42)
    for key, value, high in (("epochs", epochs, MAX_EPOCHS), ("batch_size", batch_size, n_train),
                             ("seeds", seeds, MAX_SEEDS)):
        if not 1 <= value <= high:
            raise fail(key, f"must be in 1..{high:,}, got {value:,}")
    if not 0 <= seed <= MAX_SEED - seeds + 1:
        raise fail("seed", f"must be in 0..{MAX_SEED - seeds + 1:,} (seeds seed, seed+1, … "
                   f"are 31-bit), got {seed:,}")
    optimizer = _parse_optimizer(raw.get("optimizer", {}), fail)
    variants_raw = raw["variants"]
    if not isinstance(variants_raw, list) or not variants_raw:
        raise fail("variants", "must be a non-empty array of tables ([[variants]])")
    variants = tuple(_parse_variant(i, v, fail, classes, n_train, batch_size)
                     for i, v in enumerate(variants_raw))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise fail("variants", f"variant names must be unique, got {names}")
    return ExperimentConfig(
        name=name,
        description=_typed(raw, "description", str, fail, default=""),
        dataset=dataset,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        seeds=seeds,
        optimizer=optimizer,
        variants=variants,
    )


def with_overrides(config: ExperimentConfig, **overrides: int | None) -> ExperimentConfig:
    """Command-line overrides (``seeds``, ``epochs``, …); ``None`` leaves a value as it is."""
    given = {k: v for k, v in overrides.items() if v is not None}
    limits = {"epochs": MAX_EPOCHS, "seeds": min(MAX_SEEDS, MAX_SEED - config.seed + 1)}
    for key, value in given.items():
        high = limits.get(key, value)
        if not 1 <= value <= high:
            raise ConfigError(f"--{key.replace('_', '-')} must be in 1..{high:,}, got {value:,}")
    return dataclasses.replace(config, **given)


def _parse_optimizer(raw: Any, fail) -> OptimizerConfig:
    if not isinstance(raw, dict):
        raise fail("optimizer", "must be a table: [optimizer] name = \"sgd\" …")
    name = _typed(raw, "name", str, fail, default="sgd", prefix="optimizer.")
    factory = getattr(optax, name, None)
    if name.startswith("_") or not callable(factory) or inspect.isclass(factory) \
            or "learning_rate" not in inspect.signature(factory).parameters:
        known = "adam, adamw, sgd, rmsprop, lamb, lion, nadam, …"
        raise fail("optimizer.name", f"{name!r} is not an optax optimizer (e.g. {known})")
    learning_rate = raw.get("learning_rate", 1e-3)
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, int | float) \
            or learning_rate <= 0:
        raise fail("optimizer.learning_rate", f"must be a positive number, got {learning_rate!r}")
    args = {k: v for k, v in raw.items() if k not in ("name", "learning_rate")}
    parameters = inspect.signature(factory).parameters
    allowed = [p for p in parameters if p != "learning_rate"]
    for key, value in args.items():
        if key not in parameters:
            raise fail(f"optimizer.{key}", f"not an argument of optax.{name}; allowed: "
                       f"{', '.join(allowed)}")
        default = parameters[key].default
        if not _same_kind(value, default):
            raise fail(f"optimizer.{key}", f"must be {_kind_name(default)} like its default "
                       f"{default!r}, got {value!r}")
    missing = [p.name for p in parameters.values()
               if p.default is inspect.Parameter.empty and p.name != "learning_rate"
               and p.kind is not p.VAR_KEYWORD and p.kind is not p.VAR_POSITIONAL
               and p.name not in args]
    if missing:
        raise fail("optimizer", f"optax.{name} needs {', '.join(missing)}")
    try:
        built = factory(learning_rate=learning_rate, **args)
    except (TypeError, ValueError) as err:
        raise fail("optimizer", f"optax.{name} rejects these arguments: {err}") from None
    if not isinstance(built, optax.GradientTransformation):
        raise fail("optimizer.name", f"optax.{name} is not an optimizer")
    _try_one_update(built, name, fail)
    return OptimizerConfig(name, float(learning_rate), args)


def _try_one_update(optimizer: optax.GradientTransformation, name: str, fail) -> None:
    """Trace (never run) one ``init`` + ``update`` on a tiny tree, so that an argument of
    the wrong kind (``momentum = "fast"``) is caught here and not in the middle of a run."""
    params = {"w": jax.ShapeDtypeStruct((2, 2), jnp.float32)}

    def step(params):
        state = optimizer.init(params)
        return optimizer.update(params, state, params)

    try:
        jax.eval_shape(step, params)
    except Exception as err:  # any failure here means the arguments are bad
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise fail("optimizer", f"optax.{name} fails with these arguments "
                   f"({type(err).__name__}: {first_line}); check their types") from None


def _parse_variant(index: int, raw: Any, fail, classes: int, n_train: int,
                   batch_size: int) -> VariantConfig:
    key = f"variants[{index}]"
    if not isinstance(raw, dict):
        raise fail(key, "must be a table with name and model or layers")
    _reject_unknown(raw, {"name", "model", "layers"}, f"{key}.", fail)
    name = _typed(raw, "name", str, fail, prefix=f"{key}.")
    if name is None:
        raise fail(f"{key}.name", "missing")
    if not NAME_PATTERN.fullmatch(name) or name in RESERVED_VARIANT_NAMES:
        raise fail(f"{key}.name", f"{name!r} must be a plain folder name (letters, digits, "
                   f"_ . -) other than {', '.join(sorted(RESERVED_VARIANT_NAMES))}")
    if ("model" in raw) == ("layers" in raw):
        raise fail(key, f"give exactly one of model = \"{'|'.join(MODELS)}\" or layers = [...]")
    if "model" in raw:
        model = _typed(raw, "model", str, fail, prefix=f"{key}.")
        if model not in MODELS:
            raise fail(f"{key}.model", f"unknown model {model!r}; presets: {', '.join(MODELS)}")
        variant = VariantConfig(name, model=model)
    else:
        layers = raw["layers"]
        if not isinstance(layers, list) or not all(isinstance(x, dict) for x in layers):
            raise fail(f"{key}.layers", "must be an array of inline tables { type = \"…\", … }")
        for j, spec in enumerate(layers):  # a bad layer is named by its own line
            try:
                _build_layer(spec)
            except ConfigError as err:
                raise fail(f"{key}.layers[{j}]", str(err)) from None
        variant = VariantConfig(name, layers=tuple(layers))
    try:
        model = variant.build()
        model.output_shapes  # noqa: B018 — builds every layer once: catches impossible orders
    except LayerInputError as err:  # named by the layer's own line
        raise fail(f"{key}.layers[{err.index}]", str(err)) from None
    except BnlabError as err:
        raise fail(f"{key}.layers", str(err)) from None
    last = model.layers[-1] if model.layers else None
    if type(last) is not Dense or last.units != classes \
            or last.activation not in ("softmax", "linear"):
        raise fail(f"{key}.layers", f"the last layer must be a dense layer with {classes} "
                   "units (one per class) and activation softmax or linear (the loss is "
                   "softmax cross-entropy)")
    try:
        check_batching(n_train, batch_size, model)
    except ConfigError as err:
        raise fail("batch_size", f"{err} (variant {name!r})") from None
    return variant


def _build_layer(spec: dict[str, Any]):
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in LAYER_TYPES:
        raise ConfigError(f"layer type {kind!r} unknown; allowed: {', '.join(LAYER_TYPES)}")
    cls = LAYER_TYPES[kind]
    # The layer dataclass is the schema: its fields are the options, their annotations the
    # types. BatchNorm.axis_name is for code that maps over devices, not for experiment files.
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in FILE_HIDDEN_OPTIONS}
    for option, value in spec.items():
        if option not in fields:
            raise ConfigError(f"{kind} layer has no option {option!r}; allowed: "
                              f"{', '.join(sorted(fields)) or 'none'}")
        accepts, description = _option_type(hints[option])
        if not accepts(value):
            raise ConfigError(f"{kind} layer option {option} must be {description}, "
                              f"got {value!r}")
    missing = [name for name, f in fields.items() if f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING and name not in spec]
    if missing:
        raise ConfigError(f"{kind} layer needs {', '.join(missing)}")
    return cls(**spec)


def _option_type(hint: Any) -> tuple[Any, str]:
    """``(accepts(value) -> bool, description)`` for a layer option annotated ``hint``
    (``int``, ``float``, ``str``, ``bool``, ``Literal[...]``, or one of those ``| None``)."""
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        return (lambda v: isinstance(v, str) and v in choices,
                "one of " + ", ".join(repr(c) for c in choices))
    if isinstance(hint, types.UnionType):  # X | None: TOML has no null, so X
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _option_type(hint)
    if hint is bool:
        return (lambda v: isinstance(v, bool)), "true or false"
    if hint is int:
        return (lambda v: isinstance(v, int) and not isinstance(v, bool)), "an integer"
    if hint is float:
        return (lambda v: isinstance(v, int | float) and not isinstance(v, bool)), "a number"
    return (lambda v: isinstance(v, hint)), f"a {hint.__name__}"


def _same_kind(value: Any, default: Any) -> bool:
    """Whether a TOML ``value`` may replace ``default``: bools only for bools, numbers for
    numbers (an int for a float is fine), strings for strings; anything for a None default."""
    if default is None or default is inspect.Parameter.empty:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float) and (isinstance(default, float)
                                                   or isinstance(value, int))
    return isinstance(value, type(default))


def _kind_name(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int | float):
        return "a number" if isinstance(default, float) else "an integer"
    return "a string" if isinstance(default, str) else type(default).__name__


def _reject_unknown(raw: dict, allowed: set[str], prefix: str, fail) -> None:
    for key in raw:
        if key not in allowed:
            raise fail(f"{prefix}{key}", f"unknown key; allowed: {', '.join(sorted(allowed))}")


def _typed(raw: dict, key: str, kind: type, fail, default: Any = None, prefix: str = "") -> Any:
    if key not in raw:
        return default
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise fail(f"{prefix}{key}", f"must be {kind.__name__}, got {value!r}")
    return value


def _line_of(text: str, dotted_key: str) -> int | None:
    """Best-effort line of ``optimizer.name`` / ``variants[1].model`` / ``epochs`` in ``text``
    (tomllib reports positions only for syntax errors)."""
    *tables, key = dotted_key.split(".")
    start = 0
    for table in tables:
        name, _, index = table.partition("[")
        headers = list(re.finditer(rf"^\s*\[\[?\s*{re.escape(name)}\s*\]\]?", text[start:],
                                   flags=re.MULTILINE))
        position = int(index.rstrip("]")) if index else 0
        if position >= len(headers):
            return None
        start += headers[position].end()
    key, _, item = key.partition("[")
    match = re.search(rf"^[ \t{{,]*{re.escape(key)}\s*=", text[start:], flags=re.MULTILINE)
    if not match:
        return None
    position = start + match.end()
    if item:  # layers[2]: the third inline table of the array (layer tables hold no tables)
        braces = _table_starts(text, position)
        index = int(item.rstrip("]"))
        if index < len(braces):
            position = braces[index]
    return text.count("\n", 0, position) + 1


def _table_starts(text: str, start: int) -> list[int]:
    """Offsets of the ``{`` that open inline tables in ``text[start:]``, skipping those in
    comments and quoted strings (a commented-out layer is not a layer)."""
    starts, quote, comment = [], "", False
    for offset in range(start, len(text)):
        char = text[offset]
        if comment:
            comment = char != "\n"
        elif quote:
            if char == quote and text[offset - 1] != "\\":
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            comment = True
        elif char == "{":
            starts.append(offset)
    return starts
