"""The ``[optimizer]`` table: any optax optimizer by name, with its keyword arguments.

    [optimizer]
    name = "adam"          # optax.adam
    learning_rate = 1e-3
    b1 = 0.8               # any other argument of optax.adam, of the kind of its default
    schedule = "cosine"    # the learning rate over the run (default "constant")

``schedule = "cosine"`` decays the learning rate η over the run's T training steps as
η_t = η · ½ (1 + cos(π t / T)) (Loshchilov & Hutter 2017, SGDR without restarts; PyTorch's
``CosineAnnealingLR`` with ``T_max`` = T, ``optax.cosine_decay_schedule``); the step count
lives in the optimizer state, so a resumed run goes on where it stopped.

An ``OptimizerConfig`` checks its form when it is built: a name, a finite positive learning
rate within float32, and arguments that are numbers, strings, booleans or arrays of them,
each finite. Whether optax takes them (its signature, the kind of each default, and one
``init`` + ``update`` traced, never run) is ``optax_problem``, asked once per config: by the
file's parser, so that a wrong argument is an error naming its line before any run starts,
and by ``build``, the one place bnlab builds an optimizer. Reading a stored run therefore
never needs optax (nor JAX).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bnlab.config.checks import (
    FLOAT32_MAX,
    MAX_SHOWN,
    Fail,
    FieldError,
    kind_name,
    same_kind,
    shown,
    typed,
    value_problem,
)
from bnlab.errors import ConfigError

KNOWN = "adam, adamw, sgd, rmsprop, lamb, lion, nadam, …"
SCHEDULES = ("constant", "cosine")
TABLE_KEYS = ("name", "learning_rate", "schedule")  # the others are optax arguments


@dataclass(frozen=True)
class OptimizerConfig:
    """``optax.<name>(learning_rate, **args)``, the learning rate following ``schedule``; a
    malformed one is a ``FieldError`` naming ``name``, ``learning_rate``, ``schedule`` or the
    argument."""

    name: str = "sgd"
    learning_rate: float = 1e-3
    args: dict[str, Any] = field(default_factory=dict)
    schedule: str = "constant"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier() \
                or self.name.startswith("_"):
            raise FieldError("name", f"{shown(self.name)} is not an optax optimizer (e.g. "
                             f"{KNOWN})")
        rate = self.learning_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) \
                or not 0 < rate < float("inf"):  # written so that NaN fails too
            raise FieldError("learning_rate", f"must be a finite positive number, got "
                             f"{shown(rate)}")
        if rate > FLOAT32_MAX:
            raise FieldError("learning_rate", f"must be a finite positive number, got "
                             f"{shown(rate)}, beyond float32's largest ({FLOAT32_MAX:.4g})")
        if not isinstance(self.args, Mapping):
            raise FieldError("", f"arguments must be a table, got {shown(self.args)}")
        if self.schedule not in SCHEDULES:
            raise FieldError("schedule", f"must be one of {', '.join(SCHEDULES)}, got "
                             f"{shown(self.schedule)}")
        for key, value in self.args.items():
            if not isinstance(key, str) or key in TABLE_KEYS:
                raise FieldError(str(key), "not an optimizer argument")
            if problem := value_problem(value):
                raise FieldError(key, problem)
        object.__setattr__(self, "learning_rate", float(rate))
        object.__setattr__(self, "args", dict(self.args))

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> OptimizerConfig:
        """The ``[optimizer]`` table, or its stored copy, checked for its form only: every
        key but ``name``, ``learning_rate`` and ``schedule`` is an optax argument."""
        return cls(table.get("name", "sgd"), table.get("learning_rate", 1e-3),
                   {k: v for k, v in table.items() if k not in TABLE_KEYS},
                   table.get("schedule", "constant"))

    def optax_problem(self) -> tuple[str, str] | None:
        """``(key, message)`` when optax does not take this optimizer (``key``: ``name``, an
        argument, or ``""`` for the whole table), else ``None``; asked of optax once per
        table (the same name and arguments in another config reuse the answer)."""
        try:
            text = json.dumps(self.args, sort_keys=True, allow_nan=False)
            plain = json.loads(text) == self.args  # no tuple, no NumPy number
        except (TypeError, ValueError):
            plain = False
        if plain:
            return _cached_problem(self.name, self.learning_rate, text)
        return _optax_problem(self.name, self.learning_rate, self.args)

    def build(self, steps: int | None = None, **overrides: Any):
        """``optax.<name>(learning_rate, **args)`` with any argument replaced by
        ``overrides`` (a sweep member's values, traced), the learning rate decaying over
        ``steps`` training steps as ``schedule`` says (``None``: for the optimizer state's
        structure only, as templates and checks need it): the one place bnlab builds an
        optimizer; one optax does not take is a ``ConfigError``."""
        if problem := self.optax_problem():
            key, message = problem
            raise ConfigError(f"optimizer{'.' + key if key else ''}: {message}")
        arguments = {"learning_rate": self.learning_rate, **self.args, **overrides}
        if self.schedule == "cosine":
            import optax

            arguments["learning_rate"] = optax.cosine_decay_schedule(
                arguments["learning_rate"], steps or 1)
        return _factory(self.name)(**arguments)

    def to_dict(self) -> dict[str, Any]:
        """The table as a file writes it: ``{"name", "learning_rate", **args}``, and
        ``schedule`` unless constant (so a run from before schedules reads back the same)."""
        schedule = {} if self.schedule == "constant" else {"schedule": self.schedule}
        return {"name": self.name, "learning_rate": self.learning_rate, **self.args,
                **schedule}


def parse_optimizer(raw: Any, fail: Fail) -> OptimizerConfig:
    """The ``[optimizer]`` table as an ``OptimizerConfig`` that optax takes; a mistake fails
    naming ``optimizer.<key>`` (located by its line)."""
    if not isinstance(raw, dict):
        raise fail("optimizer", "must be a table: [optimizer] name = \"sgd\" …")
    name = typed(raw, "name", str, fail, default="sgd", prefix="optimizer.")
    try:
        config = OptimizerConfig.from_table({**raw, "name": name})
        problem = config.optax_problem()
    except FieldError as err:
        problem = err.key, err.message
    if problem:
        key, message = problem
        raise fail(f"optimizer.{key}" if key else "optimizer", message)
    return config


def _factory(name: str):
    import optax

    return getattr(optax, name)


@functools.lru_cache(maxsize=256)
def _cached_problem(name: str, learning_rate: float, args_json: str) -> tuple[str, str] | None:
    return _optax_problem(name, learning_rate, json.loads(args_json))


def _optax_problem(name: str, learning_rate: float,
                   args: Mapping[str, Any]) -> tuple[str, str] | None:
    """``OptimizerConfig.optax_problem``: the signature of ``optax.<name>``, the kind of each
    argument against its default, the arguments it needs, then one traced ``init`` +
    ``update``."""
    args = dict(args)
    parameters = _parameters(name)
    if parameters is None or "learning_rate" not in parameters:
        return "name", f"{shown(name)} is not an optax optimizer (e.g. {KNOWN})"
    allowed = [p for p in parameters if p != "learning_rate"]
    for key, value in args.items():
        if key not in parameters:
            return key, f"not an argument of optax.{name}; allowed: {', '.join(allowed)}"
        default = parameters[key].default
        if not same_kind(value, default):
            return key, (f"must be {kind_name(default)} like its default {shown(default)}, "
                         f"got {shown(value)}")
    missing = [p.name for p in parameters.values()
               if p.default is inspect.Parameter.empty and p.name != "learning_rate"
               and p.kind is not p.VAR_KEYWORD and p.kind is not p.VAR_POSITIONAL
               and p.name not in args]
    if missing:
        return "", f"optax.{name} needs {', '.join(missing)}"
    if problem := _trial(name, learning_rate, args):
        key = _culprit(name, learning_rate, args)
        what = ("this argument (check its type and value)" if key
                else "these arguments (check their types and values)")
        return key or "", f"optax.{name} fails with {what}: {problem}"
    return None


def _parameters(name: str) -> Mapping[str, inspect.Parameter] | None:
    """The parameters of the optax function ``name``; ``None`` when there is no such public
    function (a class, a module, a constant, or a callable without a signature)."""
    import optax

    factory = getattr(optax, name, None)
    if name.startswith("_") or not callable(factory) or inspect.isclass(factory):
        return None
    try:
        return inspect.signature(factory).parameters
    except (TypeError, ValueError):  # optax.Schedule, a typing alias, has none
        return None


def _trial(name: str, learning_rate: float, args: dict[str, Any]) -> str | None:
    """``None`` when ``optax.<name>(learning_rate=…, **args)`` builds an optimizer whose
    ``init`` + ``update`` trace (never run) on a tiny tree; otherwise what failed, in one
    line. So an argument of the wrong kind (``momentum = "fast"``) is caught here, not in a
    run."""
    import jax
    import jax.numpy as jnp
    import optax

    params = {"w": jax.ShapeDtypeStruct((2, 2), jnp.float32)}
    try:
        optimizer = _factory(name)(learning_rate=learning_rate, **args)
        if not isinstance(optimizer, optax.GradientTransformation):
            return f"it gives a {type(optimizer).__name__}, not an optimizer"
        jax.eval_shape(lambda p: optimizer.update(p, optimizer.init(p), p), params)
    except Exception as err:  # any failure here means the arguments are bad
        lines = str(err).strip().splitlines()
        return f"{type(err).__name__}: {lines[0][:MAX_SHOWN] if lines else 'no message'}"
    return None


def _culprit(name: str, learning_rate: float, args: dict[str, Any]) -> str | None:
    """The argument to blame when ``_trial`` fails with all of ``args``: the first that fails
    on its own, else the first whose removal lets the rest pass; ``None`` when no single one
    is to blame (the name or the learning rate is, or a combination)."""
    for key, value in args.items():
        if _trial(name, learning_rate, {key: value}):
            return key
    for key in args:
        if not _trial(name, learning_rate, {k: v for k, v in args.items() if k != key}):
            return key
    return None
