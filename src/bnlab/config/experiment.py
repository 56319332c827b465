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
    name = "bn_tiny"     # … or a list of layers (config.layers)
    layers = [
      { type = "flatten" },
      { type = "batch_norm", momentum = 0.99, epsilon = 1e-3 },
      { type = "dense", units = 10, activation = "softmax" },
    ]

Every mistake is a ``ConfigError`` with one line naming the file, the key (and its line
where it can be found) and what is allowed. A run stores its resolved experiment as
``config.json`` in this same form (``ExperimentConfig.to_dict``), and reading it back goes
through the same checks (``experiment_from_json``). What is legal but nearly meaningless
is a warning, not an error: ``small_batch_warnings`` (BatchNorm on batches of 2 rows).
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import json
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnlab.config.checks import Fail, failing_at, one_line, reject_unknown, shown, typed
from bnlab.config.layers import build_layer
from bnlab.config.optimizer import OptimizerConfig, parse_optimizer
from bnlab.config.probe import parse_probe, probe_to_dict
from bnlab.config.sweep import Point, SweepAxis, expand, parse_sweep
from bnlab.data.datasets import DATASETS
from bnlab.errors import BnlabError, ConfigError, LayerInputError
from bnlab.nn.layers import Dense
from bnlab.nn.model import Sequential
from bnlab.nn.zoo import MODELS
from bnlab.train.engine import check_batching
from bnlab.train.probes import ProbePlan

TOP_KEYS = {"name", "description", "dataset", "epochs", "batch_size", "seed", "seeds",
            "optimizer", "variants", "sweep", "probe", "recalibrate_batches"}
# A stored config may lack these (stored before they existed).
OPTIONAL_STORED_KEYS = {"description", "sweep", "probe", "recalibrate_batches"}
PRESET_DIR = Path(__file__).parent / "presets"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Upper bounds that catch typos before anything is allocated or written (a run's history is
# (seeds, epochs) per metric; seed, seed+1, … must stay distinct 31-bit PRNG seeds).
MAX_EPOCHS = 100_000
MAX_SEEDS = 1_000
MAX_SEED = 2**31 - 1
RESERVED_VARIANT_NAMES = {"tensorboard", "comparisons"}  # run-folder and summary.json keys


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
        return Sequential(tuple(build_layer(spec) for spec in self.layers),
                          input_shape=tuple(input_shape), name=self.name)

    def to_dict(self) -> dict[str, Any]:
        """The ``[[variants]]`` table as a file writes it."""
        if self.model is not None:
            return {"name": self.name, "model": self.model}
        return {"name": self.name, "layers": [dict(spec) for spec in self.layers]}


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
    sweep: tuple[SweepAxis, ...] = ()
    probe: ProbePlan = field(default_factory=ProbePlan)
    # When training ends, the BN statistics recomputed over this many training batches
    # (experiments.recalibrate); 0: not.
    recalibrate_batches: int = 0

    @property
    def seed_list(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.seeds))

    @functools.cached_property
    def points(self) -> tuple[Point, ...]:
        """What the run trains, each with every seed (``config.sweep.Point``): the sweep's
        points, or without a sweep one point per variant, named after it."""
        return expand(self.variants, self.sweep, batch_size=self.batch_size,
                      optimizer=self.optimizer)

    def point(self, name: str) -> Point:
        """The point named ``name``."""
        return next(p for p in self.points if p.name == name)

    def input_shape(self) -> tuple[int, ...]:
        """The images' shape without the batch axis, from the dataset registry."""
        return DATASETS[self.dataset].train_images.shape[1:]

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the file's own form (JSON-ready): what a run stores as
        ``config.json`` and ``experiment_from_json`` reads back."""
        return {"name": self.name, "description": self.description, "dataset": self.dataset,
                "epochs": self.epochs, "batch_size": self.batch_size, "seed": self.seed,
                "seeds": self.seeds, "optimizer": self.optimizer.to_dict(),
                "variants": [variant.to_dict() for variant in self.variants],
                **({"sweep": {a.key: list(a.values) for a in self.sweep}} if self.sweep
                   else {}),
                "probe": probe_to_dict(self.probe),
                **({"recalibrate_batches": self.recalibrate_batches}
                   if self.recalibrate_batches else {})}


def preset_names() -> list[str]:
    """The shipped experiments (``bnlab run <preset>``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_experiment(file_or_preset: str | Path,
                    settings: Sequence[str] = ()) -> ExperimentConfig:
    """Read and validate an experiment file, or a shipped preset by name (``seed``).

    ``settings`` change it for one run, each a TOML line applied over the file's tables
    before the checks: ``epochs = 2``, ``optimizer.learning_rate = 0.1``,
    ``sweep."optimizer.learning_rate" = [0.01, 0.1]``, ``dataset = fashion_mnist`` (a value
    that is not TOML is taken as text)."""
    path = Path(file_or_preset)
    if not path.suffix and not _exists(path):
        if str(file_or_preset) not in preset_names():
            raise ConfigError(
                f"no experiment file or preset named {str(file_or_preset)!r}; presets: "
                f"{', '.join(preset_names())}"
            )
        path = PRESET_DIR / f"{file_or_preset}.toml"
    source = one_line(str(path))  # a name may hold a newline
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{source}: cannot read experiment file ({err.strerror})") from None
    except ValueError:  # a NUL byte in the name
        raise ConfigError(f"{source}: cannot read experiment file (its name holds "
                          "a NUL byte)") from None
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0  # Windows editors
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{source}: not a UTF-8 text file (byte {bom + err.start}); save the "
                          "experiment as UTF-8 TOML") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: invalid TOML: {err}") from None
    except ValueError as err:  # an integer of more than 4,300 digits (int's own limit)
        raise ConfigError(f"{source}: invalid TOML: {str(err).split(';')[0]}") from None
    for setting in settings:
        raw = _merged(raw, parse_setting(setting))
    if settings:
        source += " with " + "; ".join(one_line(s) for s in settings)
    return parse_experiment(raw, source=source, text=text)


def with_settings(config: ExperimentConfig, settings: Sequence[str]) -> ExperimentConfig:
    """``config`` changed by ``settings`` (``load_experiment``'s ``key = value`` lines), through
    the checks of a file."""
    raw = config.to_dict()
    for setting in settings:
        raw = _merged(raw, parse_setting(setting))
    return parse_experiment(raw, source=f"experiment {config.name!r} with "
                            + "; ".join(one_line(s) for s in settings))


def parse_setting(setting: str) -> dict[str, Any]:
    """``"key = value"`` (a TOML line; a value that is not TOML is taken as text) as the
    nested table it sets: ``"optimizer.learning_rate=0.1"`` → ``{"optimizer":
    {"learning_rate": 0.1}}``."""
    key, equals, value = setting.partition("=")
    if not equals or not key.strip():
        raise ConfigError(f"setting {one_line(setting)!r}: write key=value, e.g. epochs=2 or "
                          "optimizer.learning_rate=0.1")
    for line in (f"{key} = {value}", f"{key} = {json.dumps(value.strip())}"):
        try:
            return tomllib.loads(line)
        except (tomllib.TOMLDecodeError, ValueError):
            continue
    raise ConfigError(f"setting {one_line(setting)!r}: {one_line(key.strip())!r} is not a TOML "
                      "key (quote a key holding dots: sweep.\"optimizer.learning_rate\"=[0.1])")


def _merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``change`` applied: tables merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the file system, or holding a NUL
        return False


def parse_experiment(raw: dict[str, Any], *, source: str = "<config>",
                     text: str = "") -> ExperimentConfig:
    """Validate parsed TOML ``raw`` into an ``ExperimentConfig``; ``source`` names the
    file in messages and ``text`` (its TOML) locates each key's line."""
    fail = failing_at(source, text)
    if not isinstance(raw, dict):
        raise fail("config", "must be a table of keys (name, variants, …)")
    reject_unknown(raw, TOP_KEYS, "", fail)
    for key in ("name", "variants"):
        if key not in raw:
            raise fail(key, "missing; every experiment needs a name and [[variants]]")
    name = typed(raw, "name", str, fail)
    if not NAME_PATTERN.fullmatch(name):
        raise fail("name", f"{shown(name)} must be a plain folder name (letters, digits, _ . -)")
    dataset = typed(raw, "dataset", str, fail, default="fashion_mnist")
    if dataset not in DATASETS:
        raise fail("dataset", f"unknown dataset {shown(dataset)}; known: {', '.join(DATASETS)}")
    spec = DATASETS[dataset]
    classes = len(spec.class_names)
    n_train = spec.train_images.shape[0] - spec.validation_size
    epochs = typed(raw, "epochs", int, fail, default=10)
    batch_size = typed(raw, "batch_size", int, fail, default=32)
    seeds = typed(raw, "seeds", int, fail, default=1)
    seed = typed(raw, "seed", int, fail, default=42)
    for key, value, high in (("epochs", epochs, MAX_EPOCHS), ("batch_size", batch_size, n_train),
                             ("seeds", seeds, MAX_SEEDS)):
        if not 1 <= value <= high:
            raise fail(key, f"must be in 1..{high:,}, got {value:,}")
    if not 0 <= seed <= MAX_SEED - seeds + 1:
        raise fail("seed", f"must be in 0..{MAX_SEED - seeds + 1:,} (seeds seed, seed+1, … "
                   f"are 31-bit), got {seed:,}")
    optimizer = parse_optimizer(raw.get("optimizer", {}), fail)
    variants_raw = raw["variants"]
    if not isinstance(variants_raw, list) or not variants_raw:
        raise fail("variants", "must be a non-empty array of tables ([[variants]])")
    variants = tuple(_parse_variant(i, v, fail, classes, n_train, batch_size)
                     for i, v in enumerate(variants_raw))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise fail("variants", f"variant names must be unique, got {names}")
    sweep = (parse_sweep(raw["sweep"], fail, variants=variants, optimizer=optimizer,
                         batch_size_limit=n_train) if "sweep" in raw else ())
    points = expand(variants, sweep, batch_size=batch_size, optimizer=optimizer, fail=fail)
    for point in points:
        if point.batch_size != batch_size:
            try:
                check_batching(n_train, point.batch_size, point.build())
            except ConfigError as err:
                raise fail("sweep.batch_size", f"{err} (point {point.name!r})") from None
    recalibrate_batches = typed(raw, "recalibrate_batches", int, fail, default=0)
    full = min(n_train // point.batch_size for point in points)
    if not 0 <= recalibrate_batches <= full:
        raise fail("recalibrate_batches", f"must be in 0..{full:,} (0: off; at most the full "
                   f"training batches of an epoch), got {recalibrate_batches:,}")
    if recalibrate_batches and not any(p.build().has_batchnorm for p in points):
        raise fail("recalibrate_batches", "no variant has a BatchNorm layer to recalibrate")
    return ExperimentConfig(
        name=name,
        description=typed(raw, "description", str, fail, default=""),
        dataset=dataset,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        seeds=seeds,
        optimizer=optimizer,
        variants=variants,
        sweep=sweep,
        probe=parse_probe(raw["probe"], fail) if "probe" in raw else ProbePlan(),
        recalibrate_batches=recalibrate_batches,
    )


def with_overrides(config: ExperimentConfig, *, seeds: int | None = None,
                   epochs: int | None = None) -> ExperimentConfig:
    """``config`` with ``seeds`` / ``epochs`` replaced (``None`` leaves a value as it is),
    bounded as in a file."""
    given = {k: v for k, v in {"seeds": seeds, "epochs": epochs}.items() if v is not None}
    limits = {"epochs": MAX_EPOCHS, "seeds": min(MAX_SEEDS, MAX_SEED - config.seed + 1)}
    for key, value in given.items():
        high = limits.get(key, value)
        if not 1 <= value <= high:
            raise ConfigError(f"{{{key}}} must be in 1..{high:,}, got {value:,}")
    return dataclasses.replace(config, **given)


def _parse_variant(index: int, raw: Any, fail: Fail, classes: int, n_train: int,
                   batch_size: int) -> VariantConfig:
    key = f"variants[{index}]"
    if not isinstance(raw, dict):
        raise fail(key, "must be a table with name and model or layers")
    reject_unknown(raw, {"name", "model", "layers"}, f"{key}.", fail)
    name = typed(raw, "name", str, fail, prefix=f"{key}.")
    if name is None:
        raise fail(f"{key}.name", "missing")
    if not NAME_PATTERN.fullmatch(name) or name in RESERVED_VARIANT_NAMES:
        raise fail(f"{key}.name", f"{shown(name)} must be a plain folder name (letters, digits, "
                   f"_ . -) other than {', '.join(sorted(RESERVED_VARIANT_NAMES))}")
    if ("model" in raw) == ("layers" in raw):
        raise fail(key, f"give exactly one of model = \"{'|'.join(MODELS)}\" or layers = [...]")
    if "model" in raw:
        model = typed(raw, "model", str, fail, prefix=f"{key}.")
        if model not in MODELS:
            raise fail(f"{key}.model", f"unknown model {shown(model)}; presets: "
                       f"{', '.join(MODELS)}")
        variant = VariantConfig(name, model=model)
    else:
        layers = raw["layers"]
        if not isinstance(layers, list) or not all(isinstance(x, dict) for x in layers):
            raise fail(f"{key}.layers", "must be an array of inline tables { type = \"…\", … }")
        for j, spec in enumerate(layers):  # a bad layer is named by its own line
            try:
                build_layer(spec)
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


def checked(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` (built in code, say) put through the checks of a file, so that whatever a
    run stores reads back; the same ``ConfigError`` messages name ``experiment <name>``."""
    return parse_experiment(config.to_dict(), source=f"experiment {config.name!r}")


def experiment_from_json(data: Any, *, source: str) -> ExperimentConfig:
    """A run's stored ``config.json`` (``ExperimentConfig.to_dict``) read back through the
    same checks as a file: every key must be there, since a stored config was complete.
    Folders written before the file form was stored (optimizer arguments under ``args``,
    variants with both ``model`` and ``layers``) are read too."""
    fail = failing_at(source, "")
    if not isinstance(data, dict):
        raise fail("config", "is not a JSON object")
    data = dict(data)
    for key in sorted(TOP_KEYS - OPTIONAL_STORED_KEYS):
        if key not in data:
            raise fail(key, "missing; a stored config holds every key")
    data.setdefault("probe", {"every": 0})  # stored before probes were: none recorded
    optimizer = data["optimizer"]
    if isinstance(optimizer, dict) and isinstance(optimizer.get("args"), dict):
        data["optimizer"] = {k: v for k, v in optimizer.items() if k != "args"} | optimizer["args"]
    if isinstance(data["variants"], list):
        data["variants"] = [_stored_variant(v) for v in data["variants"]]
    return parse_experiment(data, source=source)


def _stored_variant(variant: Any) -> Any:
    if not isinstance(variant, dict):
        return variant
    variant = dict(variant)
    if "model" in variant and variant["model"] is None:
        del variant["model"]
    elif variant.get("model") is not None and variant.get("layers") == []:
        del variant["layers"]
    return variant
