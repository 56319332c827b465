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
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import optax

from bnlab.config.checks import Fail, kind_name, same_kind, typed


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
    other keyword arguments, each checked against optax's own signature."""
    if not isinstance(raw, dict):
        raise fail("optimizer", "must be a table: [optimizer] name = \"sgd\" …")
    name = typed(raw, "name", str, fail, default="sgd", prefix="optimizer.")
    factory = getattr(optax, name, None)
    if name.startswith("_") or not callable(factory) or inspect.isclass(factory) \
            or "learning_rate" not in inspect.signature(factory).parameters:
        known = "adam, adamw, sgd, rmsprop, lamb, lion, nadam, …"
        raise fail("optimizer.name", f"{name!r} is not an optax optimizer (e.g. {known})")
    learning_rate = raw.get("learning_rate", 1e-3)
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, int | float) \
            or not 0 < learning_rate < float("inf"):  # written so that NaN fails too
        raise fail("optimizer.learning_rate", f"must be a finite positive number, got "
                   f"{learning_rate!r}")
    args = {k: v for k, v in raw.items() if k not in ("name", "learning_rate")}
    parameters = inspect.signature(factory).parameters
    allowed = [p for p in parameters if p != "learning_rate"]
    for key, value in args.items():
        if key not in parameters:
            raise fail(f"optimizer.{key}", f"not an argument of optax.{name}; allowed: "
                       f"{', '.join(allowed)}")
        default = parameters[key].default
        if not same_kind(value, default):
            raise fail(f"optimizer.{key}", f"must be {kind_name(default)} like its default "
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


def _try_one_update(optimizer: optax.GradientTransformation, name: str, fail: Fail) -> None:
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
