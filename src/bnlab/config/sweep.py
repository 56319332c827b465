"""The ``[sweep]`` table: axes crossed over the variants × seeds of an experiment.

    [sweep]
    "optimizer.learning_rate" = [1e-3, 1e-2, 1e-1, 1.0]   # any argument of the optimizer
    batch_size = [16, 32, 64]
    "batch_norm.momentum" = [0.9, 0.99]       # an option of every layer of that type …
    "dense[0, 1].use_bias" = [true, false]    # … or of the i-th ones (0-based, per type)
    variants = ["baseline", "bn_before"]      # which variants, in which order (default all)

Every combination of the axes' values, for every variant, is a **point**; each point trains
the experiment's seeds (its **members**). A point is named after its variant and the values
that apply to it (``bn_before@learning_rate=0.1``: optimizer arguments without their
prefix); an axis that names a layer the variant lacks (``batch_norm.momentum`` for the
baseline) does not multiply that variant's points. Each value goes through the same checks
as in the file's own tables (the optimizer's signature, the layer's options), named by the
axis's line.

Axes over a number that changes no shape (``SCALAR_OPTIONS`` and the optimizer's numeric
arguments) are **scalar**: their points share one compiled program per shape
(``experiments.sweep``), with the values as data. Every other axis (batch size, widths,
``use_bias``, the variants) changes shapes or structure and compiles programs of its own.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass
from typing import Any

from bnlab.config.checks import Fail, FieldError, shown, value_problem
from bnlab.config.layers import LAYER_TYPES, build_layer
from bnlab.config.optimizer import OptimizerConfig
from bnlab.errors import ConfigError
from bnlab.nn.model import Sequential

# Layer options that are plain numbers inside the computation: a sweep traces them as data.
SCALAR_OPTIONS = {("batch_norm", "momentum"), ("batch_norm", "epsilon"), ("dropout", "rate"),
                  ("leaky_relu", "negative_slope")}
MAX_POINTS = 10_000  # a typo guard: 10,000 points × seeds is already days of training
LAYER_KEY = re.compile(r"(?P<type>[a-z_]+)(?:\[(?P<index>[-0-9, ]+)\])?\.(?P<option>[a-z_]+)")
NAME_VALUE = re.compile(r"[A-Za-z0-9_.-]+")
TYPE_NAMES = {cls: name for name, cls in LAYER_TYPES.items()}


@dataclass(frozen=True)
class SweepAxis:
    """One axis: ``key`` as the file writes it and its ``values``.

    ``kind`` is ``"variants"``, ``"batch_size"``, ``"optimizer"`` (``option`` is the
    argument) or ``"layer"`` (``layer_type``, ``option``, and ``indices``: the 0-based
    positions among the variant's layers of that type, ``None`` for all of them).
    """

    key: str
    values: tuple[Any, ...]
    kind: str
    option: str | None = None
    layer_type: str | None = None
    indices: tuple[int, ...] | None = None

    @property
    def scalar(self) -> bool:
        """Whether the axis changes only a number inside the computation (no shape)."""
        if self.kind == "optimizer":
            return all(isinstance(v, int | float) and not isinstance(v, bool)
                       for v in self.values)
        return self.kind == "layer" and (self.layer_type, self.option) in SCALAR_OPTIONS

    def layer_positions(self, model: Sequential) -> tuple[int, ...]:
        """The indices in ``model.layers`` this layer axis sets (``()``: it does not apply)."""
        of_type = [i for i, layer in enumerate(model.layers)
                   if TYPE_NAMES.get(type(layer)) == self.layer_type]
        if self.indices is None:
            return tuple(of_type)
        return tuple(of_type[i] for i in self.indices if -len(of_type) <= i < len(of_type))


@dataclass(frozen=True)
class Point:
    """One point of a sweep (or, without a sweep, one variant): what its seeds train.

    ``name`` names its folder in a run; ``variant`` is the name of the variant it comes
    from; ``values`` are ``(axis key, value)`` of the axes that apply to it, in file order;
    ``layer_values`` are ``(axis key, layer index, option, value)`` set on the variant's
    model.
    """

    name: str
    variant: str
    values: tuple[tuple[str, Any], ...]
    batch_size: int
    optimizer: OptimizerConfig
    base: Any  # the VariantConfig it comes from (typed loosely: experiment.py imports this)
    layer_values: tuple[tuple[str, int, str, Any], ...] = ()

    def build(self, input_shape: tuple[int, ...] = (28, 28)) -> Sequential:
        """The point's model for inputs ``(batch, *input_shape)``."""
        return with_layer_values(self.base.build(input_shape),
                                 [(i, option, v) for _, i, option, v in self.layer_values])

    def value(self, key: str, default: Any = None) -> Any:
        """The value of axis ``key`` at this point (``default`` where it does not apply)."""
        return dict(self.values).get(key, default)


def with_layer_values(model: Sequential, layer_values) -> Sequential:
    """``model`` with ``(layer index, option, value)`` set; a value may be traced (a sweep
    member's scalar): layers check only Python numbers (``nn.layers.is_number``)."""
    layers = list(model.layers)
    for index, option, value in layer_values:
        layers[index] = dataclasses.replace(layers[index], **{option: value})
    return dataclasses.replace(model, layers=tuple(layers))


def parse_sweep(raw: Any, fail: Fail) -> tuple[SweepAxis, ...]:
    """The ``[sweep]`` table as axes, each checked for its form (``sweep_axis``); how the
    axes fit the experiment is checked when it is built (``check_axis``)."""
    if not isinstance(raw, dict):
        raise fail("sweep", "must be a table: [sweep] \"optimizer.learning_rate\" = [1e-3, 1e-2]")
    axes = []
    for key, values in raw.items():
        try:
            axes.append(sweep_axis(key, values))
        except FieldError as err:
            raise fail(err.key, err.message) from None
    return tuple(axes)


def sweep_axis(key: str, values: Any) -> SweepAxis:
    """The axis ``key`` over ``values``: a non-empty list of distinct numbers, booleans or
    plain words, each finite; its kind from its key. A mistake is a ``FieldError`` naming
    ``sweep.<key>``."""
    where = f"sweep.{key}"
    if not isinstance(values, list | tuple) or not values:
        raise FieldError(where, f"must be a non-empty array of values, got {shown(values)}")
    if any(isinstance(v, dict | list | tuple) for v in values):
        raise FieldError(where, "values must be numbers, booleans or strings")
    for value in values:
        if problem := value_problem(value):
            raise FieldError(where, problem)
    if any(isinstance(v, str) and not NAME_VALUE.fullmatch(v) for v in values):
        raise FieldError(where, "text values must be plain words (letters, digits, _ . -): "
                         "they name the points' folders")
    if len(set(map(_token, values))) != len(values):
        raise FieldError(where, f"values must be distinct, got {shown(list(values))}")
    values = tuple(values)
    if key in ("variants", "batch_size"):
        return SweepAxis(key, values, key)
    if key.startswith("optimizer."):
        option = key.removeprefix("optimizer.")
        if option == "name":
            raise FieldError(where, "sweeping the optimizer's name is not supported; give "
                             "each optimizer its own experiment")
        return SweepAxis(key, values, "optimizer", option=option)
    match = LAYER_KEY.fullmatch(key)
    if match is None or match["type"] not in LAYER_TYPES:
        raise FieldError(where, "unknown axis; sweep variants, batch_size, "
                         "optimizer.<argument> or <layer type>[.<indices>].<option> with a "
                         f"layer type of {', '.join(LAYER_TYPES)} (e.g. batch_norm.momentum, "
                         "dense[0].units)")
    indices = None
    if match["index"] is not None:
        try:
            indices = tuple(int(i) for i in match["index"].split(","))
        except ValueError:
            raise FieldError(where, "layer indices must be integers: dense[0, 1].units") \
                from None
    return SweepAxis(key, values, "layer", option=match["option"],
                     layer_type=match["type"], indices=indices)


def check_axis(axis: SweepAxis, variants: tuple, optimizer: OptimizerConfig,
               batch_size_limit: int) -> None:
    """Whether ``axis`` fits the experiment: its variants exist, its batch sizes are within
    the training rows, and each value passes the checks of its own table (the optimizer's
    form, ``optax_problems`` asks optax; the layer's options) on a layer some variant has; a
    ``FieldError`` naming ``sweep.<key>`` if not."""
    where = f"sweep.{axis.key}"
    if axis.kind == "variants":
        names = [v.name for v in variants]
        unknown = [v for v in axis.values if v not in names]
        if unknown:
            raise FieldError(where, f"no variant named {shown(unknown[0])}; the variants: "
                             f"{', '.join(names)}")
    elif axis.kind == "batch_size":
        for value in axis.values:
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not 1 <= value <= batch_size_limit:
                raise FieldError(where, f"batch sizes must be integers in "
                                 f"1..{batch_size_limit:,}, got {shown(value)}")
    elif axis.kind == "optimizer":
        for value in axis.values:  # each value through the [optimizer] table's own checks
            try:
                _with_value(optimizer, axis.option, value)
            except FieldError as err:
                raise FieldError(where, err.message) from None
    else:
        for value in axis.values:  # each value through the layer's own checks
            try:
                build_layer(_example_spec(axis.layer_type) | {axis.option: value})
            except ConfigError as err:  # named by the axis
                raise FieldError(where, str(err)) from None
        if not any(axis.layer_positions(v.build()) for v in variants):
            at = "" if axis.indices is None else \
                f"at {', '.join(map(str, axis.indices))} "
            raise FieldError(where, f"no variant has a {axis.layer_type} layer {at}to set")


def optax_problems(axes: tuple[SweepAxis, ...],
                   optimizer: OptimizerConfig) -> tuple[str, str] | None:
    """``(sweep.<key>, message)`` for the first optimizer axis value optax does not take
    with the rest of ``optimizer`` (``OptimizerConfig.optax_problem``), else ``None``."""
    for axis in axes:
        if axis.kind != "optimizer":
            continue
        for value in axis.values:
            try:
                problem = _with_value(optimizer, axis.option, value).optax_problem()
            except FieldError as err:  # a value the table itself refuses (a schedule)
                return f"sweep.{axis.key}", err.message
            if problem:
                return f"sweep.{axis.key}", problem[1]
    return None


def _with_value(optimizer: OptimizerConfig, option: str, value: Any) -> OptimizerConfig:
    """``optimizer`` with argument ``option`` (or its learning rate, or its schedule) set
    to ``value``."""
    if option in ("learning_rate", "schedule"):
        return dataclasses.replace(optimizer, **{option: value})
    return dataclasses.replace(optimizer, args={**optimizer.args, option: value})


def _example_spec(layer_type: str) -> dict[str, Any]:
    """A valid table of ``layer_type`` to check one option's value against."""
    return {"type": layer_type, **({"units": 1} if layer_type == "dense" else {}),
            **({"rate": 0.5} if layer_type == "dropout" else {})}


def expand(variants: tuple, axes: tuple[SweepAxis, ...], *, batch_size: int,
           optimizer: OptimizerConfig) -> tuple[Point, ...]:
    """Every point of ``axes`` over ``variants``: variants outermost (in the order of a
    ``variants`` axis, else the file's), then the other axes crossed in file order. Without
    axes, one point per variant, named after it. More than ``MAX_POINTS`` is a
    ``FieldError`` naming ``sweep``."""
    order = next((a.values for a in axes if a.kind == "variants"), None)
    chosen = ([next(v for v in variants if v.name == name) for name in order] if order
              else list(variants))
    others = [a for a in axes if a.kind != "variants"]
    points = []
    for variant in chosen:
        model = variant.build()
        applying = [a for a in others if a.kind != "layer" or a.layer_positions(model)]
        for combination in itertools.product(*(a.values for a in applying)):
            values = tuple((a.key, v) for a, v in zip(applying, combination, strict=True))
            points.append(_point(variant, model, applying, values, batch_size, optimizer))
            if len(points) > MAX_POINTS:
                raise FieldError("sweep", f"more than {MAX_POINTS:,} points; sweep fewer "
                                 "values")
    return tuple(points)


def _point(variant, model: Sequential, axes: list[SweepAxis], values, batch_size: int,
           optimizer: OptimizerConfig) -> Point:
    layer_values = []
    for axis, (_, value) in zip(axes, values, strict=True):
        if axis.kind == "batch_size":
            batch_size = value
        elif axis.kind == "optimizer":
            optimizer = _with_value(optimizer, axis.option, value)
        else:
            layer_values += [(axis.key, i, axis.option, value)
                             for i in axis.layer_positions(model)]
    name = variant.name + ("@" + ",".join(f"{k.removeprefix('optimizer.')}={value_text(v)}"
                                          for k, v in values) if values else "")
    return Point(name, variant.name, values, batch_size, optimizer, variant,
                 tuple(layer_values))


def value_text(value: Any) -> str:
    """How a point's name and the tables write an axis value: ``0.001``, ``1e-05``,
    ``true``, ``32``, ``relu``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(int(value)) + ".0" if value.is_integer() and abs(value) < 1e16 \
            else repr(value)
    return str(value)


def _token(value: Any) -> tuple[str, Any]:
    """A value as a set member that keeps ``1`` and ``1.0`` and ``true`` apart."""
    return (type(value).__name__, value if not (isinstance(value, float) and math.isnan(value))
            else "nan")
