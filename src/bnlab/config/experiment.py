"""An experiment: variants × seeds trained with one recipe, validated when it is built.

    ExperimentConfig(name="mine", variants=(VariantConfig("bn", model="bn_after"),),
                     epochs=2, seeds=3, optimizer=OptimizerConfig("sgd", 0.01))

Every way of building one (an experiment file, ``config.files``; a run's stored
``config.json``; code; ``with_overrides``) goes through the same checks, in
``__post_init__``: a mistake is a ``FieldError`` naming its key as a file writes it
(``variants[1].layers[2]``), which a file's parser turns into ``file:line: key: message``.
Whether optax takes the optimizer is asked when it is first built
(``OptimizerConfig.optax_problem``), so a stored experiment reads without optax or JAX.
What is legal but nearly meaningless is a warning, not an error: ``small_batch_warnings``
(BatchNorm on batches of 2 rows).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from typing import Any

from bnlab.config.augment import augment_to_dict
from bnlab.config.checks import FieldError, shown, value_problem
from bnlab.config.layers import build_layer
from bnlab.config.optimizer import OptimizerConfig
from bnlab.config.probe import probe_to_dict
from bnlab.config.sweep import Point, SweepAxis, check_axis, expand
from bnlab.data.datasets import DATASETS
from bnlab.errors import BnlabError, ConfigError, LayerInputError
from bnlab.limits import PARAMETERS
from bnlab.nn.layers import Dense
from bnlab.nn.model import Sequential
from bnlab.nn.zoo import MODELS
from bnlab.train.augment import Augmentation
from bnlab.train.batches import check_batching
from bnlab.train.probes import ProbePlan

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Upper bounds that catch typos before anything is allocated or written (a run's history is
# (seeds, epochs) per metric; seed, seed+1, … must stay distinct 31-bit PRNG seeds).
MAX_EPOCHS = 100_000
MAX_SEEDS = 1_000
MAX_SEED = 2**31 - 1
MAX_NAME_BYTES = 255  # a folder name (NAME_MAX on Linux, macOS and Windows file systems)
MAX_EXPERIMENT_NAME_BYTES = 200  # the run folder adds "-YYYYmmdd-HHMMSS" and maybe "-2"
RESERVED_VARIANT_NAMES = {"tensorboard", "comparisons"}  # run-folder and summary.json keys


@dataclass(frozen=True)
class VariantConfig:
    """One model to train: a zoo preset (``model``) or an explicit ``layers`` list of a
    file's layer tables (``config.layers``), each checked when the variant is built."""

    name: str
    model: str | None = None
    layers: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name) \
                or self.name in RESERVED_VARIANT_NAMES:
            raise FieldError("name", f"{shown(self.name)} must be a plain folder name "
                             f"(letters, digits, _ . -) other than "
                             f"{', '.join(sorted(RESERVED_VARIANT_NAMES))}")
        if (self.model is None) == (not self.layers):
            raise FieldError("", f"give exactly one of model = \"{'|'.join(MODELS)}\" or "
                             "layers = [...]")
        if self.model is not None and self.model not in MODELS:
            raise FieldError("model", f"unknown model {shown(self.model)}; presets: "
                             f"{', '.join(MODELS)}")
        if not isinstance(self.layers, list | tuple) \
                or not all(isinstance(spec, dict) for spec in self.layers):
            raise FieldError("layers", "must be an array of inline tables "
                             "{ type = \"…\", … }")
        for index, spec in enumerate(self.layers):  # a bad layer is named by its own line
            try:
                build_layer(spec)
            except ConfigError as err:
                raise FieldError(f"layers[{index}]", str(err)) from None
        object.__setattr__(self, "layers", tuple(dict(spec) for spec in self.layers))

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
    """A validated experiment: variants × seeds trained with one recipe (module docstring)."""

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
    # What each training image goes through (train.augment); default: nothing.
    augment: Augmentation = field(default_factory=Augmentation)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise FieldError("name", f"{shown(self.name)} must be a plain folder name "
                             "(letters, digits, _ . -)")
        if len(self.name) > MAX_EXPERIMENT_NAME_BYTES:
            raise FieldError("name", f"{shown(self.name[:60])}… is {len(self.name)} "
                             f"characters; a run folder's name takes at most "
                             f"{MAX_EXPERIMENT_NAME_BYTES}")
        if not isinstance(self.description, str):
            raise FieldError("description", f"must be str, got {shown(self.description)}")
        if not isinstance(self.dataset, str) or self.dataset not in DATASETS:
            raise FieldError("dataset", f"unknown dataset {shown(self.dataset)}; known: "
                             f"{', '.join(DATASETS)}")
        n_train = self.training_rows()
        for key, high in (("epochs", MAX_EPOCHS), ("batch_size", n_train),
                          ("seeds", MAX_SEEDS)):
            _whole(key, getattr(self, key), 1, high)
        _whole("seed", self.seed, 0, MAX_SEED - self.seeds + 1,
               why=" (seeds seed, seed+1, … are 31-bit)")
        for key, kind in (("optimizer", OptimizerConfig), ("probe", ProbePlan),
                          ("augment", Augmentation)):
            if not isinstance(getattr(self, key), kind):
                raise FieldError(key, f"must be a {kind.__name__}")
        object.__setattr__(self, "variants", tuple(self.variants))
        object.__setattr__(self, "sweep", tuple(self.sweep))
        self._check_variants()
        if self.augment.active:
            try:
                self.augment.check_images(DATASETS[self.dataset].train_images.shape[1:])
            except ConfigError as err:
                raise FieldError("augment", str(err)) from None
        for axis in self.sweep:
            if not isinstance(axis, SweepAxis):
                raise FieldError("sweep", "must hold SweepAxis values")
            check_axis(axis, self.variants, self.optimizer, n_train)
        self._check_points()

    def _check_variants(self) -> None:
        """Each variant fits the data: its layers take the dataset's images, its last layer
        scores the classes, and no training batch leaves BatchNorm a single row."""
        if not self.variants or not all(isinstance(v, VariantConfig) for v in self.variants):
            raise FieldError("variants", "must be a non-empty array of tables ([[variants]])")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise FieldError("variants", f"variant names must be unique, got {names}")
        classes = len(DATASETS[self.dataset].class_names)
        for index, variant in enumerate(self.variants):
            key = f"variants[{index}].layers"
            try:
                model = variant.build(self.input_shape())
                model.output_shapes  # noqa: B018 — builds every layer: catches impossible orders
                PARAMETERS.check(model.weight_bound, f"the model {variant.name}")
            except LayerInputError as err:  # named by the layer's own line
                raise FieldError(f"{key}[{err.index}]", str(err)) from None
            except BnlabError as err:
                raise FieldError(key, str(err)) from None
            last = model.layers[-1] if model.layers else None
            if type(last) is not Dense or last.units != classes \
                    or last.activation not in ("softmax", "linear"):
                raise FieldError(key, f"the last layer must be a dense layer with {classes} "
                                 "units (one per class) and activation softmax or linear "
                                 "(the loss is softmax cross-entropy)")
            try:
                check_batching(self.training_rows(), self.batch_size, model)
            except ConfigError as err:
                raise FieldError("batch_size", f"{err} (variant {variant.name!r})") from None

    def _check_points(self) -> None:
        """Every point's name makes a folder name a file system takes (``MAX_NAME_BYTES``);
        its batch size suits its model; ``recalibrate_batches`` fits them."""
        n_train = self.training_rows()
        for point in self.points:
            size = len(point.name.encode())
            if size > MAX_NAME_BYTES:
                raise FieldError("sweep" if self.sweep else "variants",
                                 f"the point {point.name[:60]!r}… names a folder of {size} "
                                 f"bytes, over the {MAX_NAME_BYTES} a file system takes; "
                                 "shorten the variant's name or the swept values")
            if point.batch_size != self.batch_size:
                try:
                    check_batching(n_train, point.batch_size, point.build())
                except ConfigError as err:
                    raise FieldError("sweep.batch_size",
                                     f"{err} (point {point.name!r})") from None
        full = self.full_batches(n_train)
        _whole("recalibrate_batches", self.recalibrate_batches, 0, full,
               why=" (0: off; at most the full training batches of an epoch)")
        if self.recalibrate_batches and not any(p.build().has_batchnorm for p in self.points):
            raise FieldError("recalibrate_batches",
                             "no variant has a BatchNorm layer to recalibrate")

    def full_batches(self, rows: int) -> int:
        """The full batches of ``rows`` training rows at the largest batch size of any
        point: the most ``recalibrate_batches`` can be."""
        return min(rows // point.batch_size for point in self.points)

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

    def training_rows(self) -> int:
        """The training split's rows (the dataset's training file less its validation)."""
        spec = DATASETS[self.dataset]
        return spec.train_images.shape[0] - spec.validation_size

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the file's own form (JSON-ready): what a run stores as
        ``config.json`` and ``config.files.experiment_from_json`` reads back."""
        return {"name": self.name, "description": self.description, "dataset": self.dataset,
                "epochs": self.epochs, "batch_size": self.batch_size, "seed": self.seed,
                "seeds": self.seeds, "optimizer": self.optimizer.to_dict(),
                "variants": [variant.to_dict() for variant in self.variants],
                **({"sweep": {a.key: list(a.values) for a in self.sweep}} if self.sweep
                   else {}),
                "probe": probe_to_dict(self.probe),
                **({"recalibrate_batches": self.recalibrate_batches}
                   if self.recalibrate_batches else {}),
                **({"augment": augment_to_dict(self.augment)} if self.augment.active else {})}


def _whole(key: str, value: Any, low: int, high: int, why: str = "") -> None:
    """``value`` is an integer in ``low..high``, else a ``FieldError`` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(key, f"must be int, got {shown(value)}")
    if problem := value_problem(value):  # an integer beyond float32 (or 4,300 digits)
        raise FieldError(key, problem)
    if not low <= value <= high:
        raise FieldError(key, f"must be in {low}..{high:,}{why}, got {value:,}")


def with_overrides(config: ExperimentConfig, *, seeds: int | None = None,
                   epochs: int | None = None) -> ExperimentConfig:
    """``config`` with ``seeds`` / ``epochs`` replaced (``None`` leaves a value as it is),
    bounded as in a file; a bad value is a ``ConfigError`` naming the caller's option."""
    given = {k: v for k, v in {"seeds": seeds, "epochs": epochs}.items() if v is not None}
    try:
        return dataclasses.replace(config, **given)
    except FieldError as err:
        if err.key not in given:
            raise
        raise ConfigError(f"{{{err.key}}} {err.message}") from None
