"""A method's options, declared once: a dataclass whose fields carry defaults, types, allowed
ranges and a search range for tuning.

    @dataclass
    class Options(DistillationModule.Options):
        at_weight: float = weight(1000.0, search=(1.0, 1e4, "log"))   # β
        p: float = positive(2.0, "the exponent of the attention maps; the paper uses 2")

:func:`parse_options` checks a config's ``method.*`` against it — unknown keys, types, ranges,
and the dataclass's own ``__post_init__`` cross-checks — before any data is loaded or a teacher
trained, and returns the instance the module keeps (``module.options``; each field is also an
attribute of the module, ``module.at_weight``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from typing import Any

# (low, high[, "log"]): where a tuner should search an option (e.g. an Optuna interval).
Search = tuple


def option(
    default: Any,
    why: str = "",
    *,
    low: float | None = None,
    high: float | None = None,
    strict: bool = False,
    min_items: int = 0,
    search: Search | None = None,
) -> Any:
    """A dataclass field with its checks: ``low``/``high`` bound numbers (``strict``: excluded),
    ``min_items`` bounds lists; ``why`` explains the bound in error messages."""
    meta = {"why": why, "low": low, "high": high, "strict": strict, "min_items": min_items, "search": search}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def weight(default: float | None, why: str = "a loss weight; 0 switches the term off", search: Search | None = None) -> Any:
    """A loss weight: >= 0."""
    return option(default, why, low=0.0, search=search)


def switched_off(why: str) -> Any:
    """A loss weight held at 0: the method learns through terms of its own, any other value is refused."""
    return option(0.0, why, low=0.0, high=0.0)


def positive(default: float, why: str = "", search: Search | None = None) -> Any:
    """A number > 0 (temperatures, exponents)."""
    return option(default, why, low=0.0, strict=True, search=search)


def at_least(default: int, minimum: int, why: str = "") -> Any:
    """An integer >= ``minimum``."""
    return option(default, why, low=minimum)


def search_space(options_cls: type) -> dict[str, Search]:
    """``{"method.<name>": (low, high[, "log"])}`` for every option that declares a search range."""
    return {
        f"method.{f.name}": f.metadata["search"]
        for f in dataclasses.fields(options_cls)
        if f.metadata.get("search") is not None
    }


def _why(meta: dict[str, Any]) -> str:
    return f" ({meta['why']})" if meta.get("why") else ""


def _check_number(key: str, value: Any, meta: dict[str, Any], integer: bool) -> Any:
    kind = "an integer" if integer else "a number"
    low, high, strict = meta.get("low"), meta.get("high"), meta.get("strict")
    bound = " and ".join(
        b for b in (f"{'>' if strict else '>='} {low:g}" if low is not None else "",
                    f"<= {high:g}" if high is not None else "") if b
    )
    wrong_type = isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
    if wrong_type or (not integer and not math.isfinite(value)):
        raise ValueError(f"method.{key} must be {'a finite number' if not integer else kind}{' ' + bound if bound else ''}{_why(meta)}, got {value!r}")
    if (low is not None and (value <= low if strict else value < low)) or (high is not None and value > high):
        subject = f"{kind} {bound}" if integer else bound
        raise ValueError(f"method.{key} must be {subject}{_why(meta)}, got {value!r}")
    return value if integer else float(value)


def _check_value(key: str, value: Any, hint: Any, meta: dict[str, Any]) -> Any:
    """``value`` checked against the type ``hint`` and the field's bounds (converted: int → float)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    origin = typing.get_origin(hint) or hint
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"method.{key} must be true or false{_why(meta)}, got {value!r}")
        return value
    if hint in (int, float):
        return _check_number(key, value, meta, integer=hint is int)
    if origin in (list, Sequence, tuple):
        if isinstance(value, str) or not isinstance(value, Sequence) or len(value) < meta.get("min_items", 0):
            n = meta.get("min_items", 0)
            kind = "a non-empty list" if n == 1 else f"a list of at least {n}" if n else "a list"
            raise ValueError(f"method.{key} must be {kind}{_why(meta)}, got {value!r}")
        return [str(v) for v in value] if args and args[0] is str else list(value)
    return value


def parse_options(options_cls: type, values: dict[str, Any], method: str) -> Any:
    """An ``options_cls`` instance from a config's ``method.*`` (without ``name``), or a
    ValueError naming the key: an unknown option, a wrong type, a value out of range."""
    fields = {f.name: f for f in dataclasses.fields(options_cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"method {method!r} has no option(s) {unknown}; allowed: {list(fields)}")
    hints = typing.get_type_hints(options_cls)
    checked = {
        key: _check_value(key, value, hints[key], dict(fields[key].metadata))
        for key, value in values.items()
    }
    return options_cls(**checked)  # __post_init__ does the cross-option checks
