"""The small checks every part of an experiment file goes through, and how they fail.

A check that fails raises through ``fail(key, message)``, a ``Fail`` that the file's parser
builds: it turns a dotted key (``variants[1].layers[2]``) into ``file:line: key: message``
(``config.lines.line_of``), so every mistake is one line naming the file, the line, the key
and what is allowed.

Every number a file gives must be finite and within float32's range (``value_problem``):
a run computes in float32, where ``learning_rate = 1e308`` or ``epsilon = 1e39`` would be
``inf``, so they are refused at the file, not found as a NaN in the middle of a run.
"""

from __future__ import annotations

import datetime
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

import numpy as np

from bnlab.config.lines import line_of
from bnlab.errors import ConfigError


class FieldError(ConfigError):
    """A ``ConfigError`` about one ``key`` of an experiment, dotted as a file writes it
    (``layers[2]``, ``learning_rate``; ``""``: the whole object), raised where the value is
    checked; a file's parser locates it by its line (``fail(prefix + key, message)``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


Fail = Callable[[str, str], ConfigError]
"""``fail(dotted_key, message) -> ConfigError`` (raise what it returns)."""

FLOAT32_MAX = float(np.finfo(np.float32).max)  # 3.4028235e+38
MAX_SHOWN = 80  # characters of a value a message quotes


def failing_at(source: str, text: str) -> Fail:
    """The ``Fail`` of one file: ``source`` names it, ``text`` (its TOML, or ``""``) locates
    the key's line."""

    def fail(key: str, message: str) -> ConfigError:
        line = line_of(text, key) if text else None
        where = f"{source}:{line}" if line else source
        return ConfigError(one_line(f"{where}: {key}: {message}"))

    return fail


def one_line(text: str) -> str:
    """``text`` with every unprintable character (a newline in a quoted TOML key, say)
    escaped as ``repr`` would, so that a message stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def typed(raw: dict, key: str, kind: type, fail: Fail, default: Any = None,
          prefix: str = "") -> Any:
    """``raw[key]`` when it is a ``kind`` (never a bool for a number), ``default`` when the
    key is absent; anything else fails naming ``prefix + key``."""
    if key not in raw:
        return default
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise fail(f"{prefix}{key}", f"must be {kind.__name__}, got {shown(value)}")
    if problem := value_problem(value):
        raise fail(f"{prefix}{key}", problem)
    return value


def shown(value: Any) -> str:
    """``repr(value)`` as a message quotes it: at most ``MAX_SHOWN`` characters, and never
    an error (an int of more than 4,300 digits, or an array nested too deeply, has no
    ``repr``)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # sys.get_int_max_str_digits; nested too deeply
        return f"a {type(value).__name__} too large to show"
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 1] + "…"


def value_problem(value: Any) -> str | None:
    """Why ``value``, or any value inside it (an array or a table), cannot come from an
    experiment: a number that is NaN, ±inf or beyond float32 (|x| > 3.4e38, ``inf`` in a
    run's float32 arithmetic), or a TOML date or time (nothing takes one, and a run's
    ``config.json`` cannot hold it); ``None`` when there is none."""
    pending = [value]  # a stack, not recursion: however deep a value, no RecursionError
    while pending:
        value = pending.pop()
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float) and not abs(value) <= FLOAT32_MAX:  # NaN too
            return (f"must be a finite number of magnitude at most {FLOAT32_MAX:.4g} "
                    f"(float32's largest), got {shown(value)}")
        if isinstance(value, datetime.date | datetime.time):
            return (f"must be a number, string, boolean, array or table, got the date or "
                    f"time {value}")
        if isinstance(value, dict):
            pending.extend(reversed(value.values()))
        elif isinstance(value, list | tuple):
            pending.extend(reversed(value))
    return None


def reject_unknown(raw: dict, allowed: set[str], prefix: str, fail: Fail) -> None:
    """Fail on the first key of ``raw`` that is not in ``allowed``, listing those."""
    for key in raw:
        if key not in allowed:
            raise fail(f"{prefix}{key}", f"unknown key; allowed: {', '.join(sorted(allowed))}")


def option_type(hint: Any) -> tuple[Any, str]:
    """``(accepts(value) -> bool, description)`` for a layer option annotated ``hint``
    (``int``, ``float``, ``str``, ``bool``, ``Literal[...]``, ``tuple[int, int]`` or
    ``tuple[int, ...]`` — a TOML array —, or a union of those, ``| None`` included)."""
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        return (lambda v: isinstance(v, str) and v in choices,
                "one of " + ", ".join(repr(c) for c in choices))
    if typing.get_origin(hint) is tuple:
        item, *rest = typing.get_args(hint)
        length = None if rest == [Ellipsis] else 1 + len(rest)
        accepts_item, item_description = option_type(item)
        return (lambda v: isinstance(v, list | tuple) and len(v) == (length or len(v) or -1)
                and all(accepts_item(i) for i in v),
                f"an array of {length or 'one or more'} ({item_description} each)")
    if isinstance(hint, types.UnionType):  # TOML has no null: None is never given
        options = [option_type(arg) for arg in typing.get_args(hint) if arg is not type(None)]
        return (lambda v: any(accepts(v) for accepts, _ in options),
                " or ".join(description for _, description in options))
    if hint is bool:
        return (lambda v: isinstance(v, bool)), "true or false"
    if hint is int:
        return (lambda v: isinstance(v, int) and not isinstance(v, bool)), "an integer"
    if hint is float:
        return (lambda v: isinstance(v, int | float) and not isinstance(v, bool)), "a number"
    return (lambda v: isinstance(v, hint)), f"a {hint.__name__}"


def same_kind(value: Any, default: Any) -> bool:
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


def kind_name(default: Any) -> str:
    """How a message names the kind of ``default``: "a number", "true or false", …"""
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int | float):
        return "a number" if isinstance(default, float) else "an integer"
    return "a string" if isinstance(default, str) else type(default).__name__
