"""The ``[optimizer]`` table: any optax optimizer by name, with its keyword arguments.

    [optimizer]
    name = "adam"          # optax.adam
    learning_rate = 1e-3
    b1 = 0.8               # any other argument of optax.adam, of the kind of its default

The arguments are checked against the optimizer's signature, and one ``init`` + ``update`` is
traced (never run), so a wrong argument is an error naming its line before any run starts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import optax

from bnlab.config.checks import (
    FLOAT32_MAX,
    MAX_SHOWN,
    Fail,
    kind_name,
    same_kind,
    shown,
    typed,
    value_problem,
)


@dataclass(frozen=True)
class OptimizerConfig:
    """``optax.<name>(learning_rate, **args)``."""

    name: str = "sgd"
    learning_rate: float = 1e-3
    args: dict[str, Any] = field(default_factory=dict)

    def build(self) -> optax.GradientTransformation:
        return getattr(optax, self.name)(learning_rate=self.learning_rate, **self.args)

    def to_dict(self) -> dict[str, Any]:
        """The table as a file writes it: ``{"name", "learning_rate", **args}``."""
        return {"name": self.name, "learning_rate": self.learning_rate, **self.args}


def parse_optimizer(raw: Any, fail: Fail) -> OptimizerConfig:
    """The ``[optimizer]`` table: ``name`` (an optax optimizer), ``learning_rate`` and its
    other keyword arguments, each checked against optax's own signature, each number finite
    and within float32 (``checks.value_problem``). An argument that optax rejects, or that
    makes its first update fail, is named by its own line."""
    if not isinstance(raw, dict):
        raise fail("optimizer", "must be a table: [optimizer] name = \"sgd\" …")
    name = typed(raw, "name", str, fail, default="sgd", prefix="optimizer.")
    parameters = _parameters(name)
    if parameters is None or "learning_rate" not in parameters:
        known = "adam, adamw, sgd, rmsprop, lamb, lion, nadam, …"
        raise fail("optimizer.name", f"{shown(name)} is not an optax optimizer (e.g. {known})")
    learning_rate = raw.get("learning_rate", 1e-3)
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, int | float) \
            or not 0 < learning_rate < float("inf"):  # written so that NaN fails too
        raise fail("optimizer.learning_rate", f"must be a finite positive number, got "
                   f"{shown(learning_rate)}")
    if learning_rate > FLOAT32_MAX:
        raise fail("optimizer.learning_rate", f"must be a finite positive number, got "
                   f"{shown(learning_rate)}, beyond float32's largest ({FLOAT32_MAX:.4g})")
    args = {k: v for k, v in raw.items() if k not in ("name", "learning_rate")}
    allowed = [p for p in parameters if p != "learning_rate"]
    for key, value in args.items():
        if key not in parameters:
            raise fail(f"optimizer.{key}", f"not an argument of optax.{name}; allowed: "
                       f"{', '.join(allowed)}")
        default = parameters[key].default
        if not same_kind(value, default):
            raise fail(f"optimizer.{key}", f"must be {kind_name(default)} like its default "
                       f"{shown(default)}, got {shown(value)}")
        if problem := value_problem(value):
            raise fail(f"optimizer.{key}", problem)
    missing = [p.name for p in parameters.values()
               if p.default is inspect.Parameter.empty and p.name != "learning_rate"
               and p.kind is not p.VAR_KEYWORD and p.kind is not p.VAR_POSITIONAL
               and p.name not in args]
    if missing:
        raise fail("optimizer", f"optax.{name} needs {', '.join(missing)}")
    factory = getattr(optax, name)
    if problem := _trial(factory, learning_rate, args):
        key = _culprit(factory, learning_rate, args)
        which = f"optimizer.{key}" if key else "optimizer"
        what = ("this argument (check its type and value)" if key
                else "these arguments (check their types and values)")
        raise fail(which, f"optax.{name} fails with {what}: {problem}")
    return OptimizerConfig(name, float(learning_rate), args)


def _parameters(name: str) -> Mapping[str, inspect.Parameter] | None:
    """The parameters of the optax function ``name``; ``None`` when there is no such public
    function (a class, a module, a constant, or a callable without a signature)."""
    factory = getattr(optax, name, None)
    if name.startswith("_") or not callable(factory) or inspect.isclass(factory):
        return None
    try:
        return inspect.signature(factory).parameters
    except (TypeError, ValueError):  # optax.Schedule, a typing alias, has none
        return None


def _trial(factory: Callable[..., Any], learning_rate: float,
           args: dict[str, Any]) -> str | None:
    """``None`` when ``factory(learning_rate=…, **args)`` builds an optimizer whose ``init``
    + ``update`` trace (never run) on a tiny tree; otherwise what failed, in one line. So an
    argument of the wrong kind (``momentum = "fast"``) is caught here, not in a run."""
    params = {"w": jax.ShapeDtypeStruct((2, 2), jnp.float32)}
    try:
        optimizer = factory(learning_rate=learning_rate, **args)
        if not isinstance(optimizer, optax.GradientTransformation):
            return f"it gives a {type(optimizer).__name__}, not an optimizer"
        jax.eval_shape(lambda p: optimizer.update(p, optimizer.init(p), p), params)
    except Exception as err:  # any failure here means the arguments are bad
        lines = str(err).strip().splitlines()
        return f"{type(err).__name__}: {lines[0][:MAX_SHOWN] if lines else 'no message'}"
    return None


def _culprit(factory: Callable[..., Any], learning_rate: float,
             args: dict[str, Any]) -> str | None:
    """The argument to blame when ``_trial`` fails with all of ``args``: the first that fails
    on its own, else the first whose removal lets the rest pass; ``None`` when no single one
    is to blame (the name or the learning rate is, or a combination)."""
    for key, value in args.items():
        if _trial(factory, learning_rate, {key: value}):
            return key
    for key in args:
        if not _trial(factory, learning_rate, {k: v for k, v in args.items() if k != key}):
            return key
    return None
