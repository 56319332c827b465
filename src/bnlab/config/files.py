"""Experiment files (TOML), the shipped presets, one-run settings and stored ``config.json``.

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

A file is parsed into the objects of ``config.experiment``, which check themselves; every
mistake is a ``ConfigError`` with one line naming the file, the key (and its line where it
can be found) and what is allowed. A run stores its resolved experiment as ``config.json`` in
this same form (``ExperimentConfig.to_dict``), and reading it back builds the same objects
(``experiment_from_json``); whether optax takes its optimizer is asked when it is built.
"""

from __future__ import annotations

import codecs
import json
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bnlab.config.augment import parse_augment
from bnlab.config.checks import Fail, FieldError, failing_at, one_line, reject_unknown, typed
from bnlab.config.experiment import ExperimentConfig, VariantConfig
from bnlab.config.optimizer import OptimizerConfig, parse_optimizer
from bnlab.config.probe import parse_probe
from bnlab.config.sweep import optax_problems, parse_sweep
from bnlab.errors import ConfigError
from bnlab.io import NotAFile, read_regular
from bnlab.limits import RUN_FILE_BYTES, LimitExceeded
from bnlab.train.augment import Augmentation
from bnlab.train.probes import ProbePlan

TOP_KEYS = {"name", "description", "dataset", "epochs", "batch_size", "seed", "seeds",
            "optimizer", "variants", "sweep", "probe", "recalibrate_batches", "augment"}
# A stored config may lack these (stored before they existed).
OPTIONAL_STORED_KEYS = {"description", "sweep", "probe", "recalibrate_batches", "augment"}
PRESET_DIR = Path(__file__).parent / "presets"


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
        data = read_regular(path, limit=RUN_FILE_BYTES)
    except (NotAFile, LimitExceeded) as err:
        raise ConfigError(f"{source}: {err.reason}") from None
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
    except RecursionError:
        raise ConfigError(f"{source}: invalid TOML: arrays or tables nested too deeply for "
                          "an experiment") from None
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


def with_variants(config: ExperimentConfig, names: Sequence[str], *,
                  command: str = "run") -> ExperimentConfig:
    """``config`` with only the variants ``names`` (in the file's order), through the checks
    of a file; a name that is not a variant is a ``ConfigError`` listing them."""
    known = [variant.name for variant in config.variants]
    for name in names:
        if name not in known:
            raise ConfigError(f"{name!r} is not a variant of {config.name}; {command} one or "
                              f"more of {', '.join(known)} {{variant=NAME}}")
    raw = config.to_dict()
    raw["variants"] = [v for v in raw["variants"] if v["name"] in names]
    return parse_experiment(raw, source=f"experiment {config.name!r} with variants "
                            + ", ".join(names))


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
        except (tomllib.TOMLDecodeError, ValueError, RecursionError):
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
                     text: str = "", optax: bool = True) -> ExperimentConfig:
    """Parsed TOML ``raw`` as an ``ExperimentConfig``; ``source`` names the file in messages
    and ``text`` (its TOML) locates each key's line. With ``optax`` the optimizer is also
    put to optax (``OptimizerConfig.optax_problem``), so that a file's mistake in it is
    named by its line before anything runs."""
    fail = failing_at(source, text)
    if not isinstance(raw, dict):
        raise fail("config", "must be a table of keys (name, variants, …)")
    reject_unknown(raw, TOP_KEYS, "", fail)
    for key in ("name", "variants"):
        if key not in raw:
            raise fail(key, "missing; every experiment needs a name and [[variants]]")
    optimizer = (parse_optimizer(raw.get("optimizer", {}), fail) if optax
                 else _stored_optimizer(raw.get("optimizer", {}), fail))
    variants_raw = raw["variants"]
    if not isinstance(variants_raw, list) or not variants_raw:
        raise fail("variants", "must be a non-empty array of tables ([[variants]])")
    variants = tuple(_parse_variant(i, v, fail) for i, v in enumerate(variants_raw))
    values = {key: raw[key] for key in ("description", "dataset", "epochs", "batch_size",
                                        "seed", "seeds", "recalibrate_batches") if key in raw}
    try:
        config = ExperimentConfig(
            name=raw["name"], variants=variants, optimizer=optimizer,
            sweep=parse_sweep(raw["sweep"], fail) if "sweep" in raw else (),
            probe=parse_probe(raw["probe"], fail) if "probe" in raw else ProbePlan(),
            augment=parse_augment(raw["augment"], fail) if "augment" in raw else Augmentation(),
            **values)
    except FieldError as err:
        raise fail(err.key or "config", err.message) from None
    if optax and (problem := optax_problems(config.sweep, config.optimizer)):
        raise fail(*problem)
    return config


def _parse_variant(index: int, raw: Any, fail: Fail) -> VariantConfig:
    key = f"variants[{index}]"
    if not isinstance(raw, dict):
        raise fail(key, "must be a table with name and model or layers")
    reject_unknown(raw, {"name", "model", "layers"}, f"{key}.", fail)
    if "name" not in raw:
        raise fail(f"{key}.name", "missing")
    name = typed(raw, "name", str, fail, prefix=f"{key}.")
    if "model" in raw:
        typed(raw, "model", str, fail, prefix=f"{key}.")
    layers = raw.get("layers", ())
    if "layers" in raw and not isinstance(layers, list):
        raise fail(f"{key}.layers", "must be an array of inline tables { type = \"…\", … }")
    try:
        return VariantConfig(name, model=raw.get("model"), layers=tuple(layers))
    except FieldError as err:
        raise fail(f"{key}.{err.key}" if err.key else key, err.message) from None


def _stored_optimizer(raw: Any, fail: Fail) -> OptimizerConfig:
    """A stored ``[optimizer]`` table checked for its form only (optax is asked when it is
    built): reading a run needs neither optax nor JAX."""
    if not isinstance(raw, dict):
        raise fail("optimizer", "must be a table: [optimizer] name = \"sgd\" …")
    try:
        return OptimizerConfig.from_table(raw)
    except FieldError as err:
        raise fail(f"optimizer.{err.key}" if err.key else "optimizer", err.message) from None


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
    return parse_experiment(data, source=source, optax=False)


def _stored_variant(variant: Any) -> Any:
    if not isinstance(variant, dict):
        return variant
    variant = dict(variant)
    if "model" in variant and variant["model"] is None:
        del variant["model"]
    elif variant.get("model") is not None and variant.get("layers") == []:
        del variant["layers"]
    return variant
