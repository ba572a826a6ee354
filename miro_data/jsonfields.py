"""Checked fields of JSON records: each check returns the value normalised (numpy scalars →
Python, non-finite floats → None) or raises FieldError saying which field is what, not what
it should be. The records' `__post_init__` use them, so writing and reading check alike."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


class FieldError(ValueError):
    """A field that does not hold what its record says (the message names it)."""


def is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def string(name: str, v: Any, optional: bool = False) -> str | None:
    if (v is None and optional) or isinstance(v, str):
        return v
    raise FieldError(f"{name!r} is {describe(v)}, not a string" + (" or null" if optional else ""))


def integer(name: str, v: Any, minimum: int | None = None) -> int:
    if not is_int(v) or (minimum is not None and v < minimum):
        low = "" if minimum is None else f" ≥ {minimum}"
        raise FieldError(f"{name!r} is {describe(v)}, not an integer{low}")
    return int(v)


def finite_or_none(name: str, v: Any) -> float | None:
    """A float; None (null) for a missing value, and for NaN/±inf, which JSON cannot hold."""
    if v is None:
        return None
    if not is_number(v):
        raise FieldError(f"{name!r} is {describe(v)}, not a number or null")
    return float(v) if math.isfinite(v) else None


def optional_int(name: str, v: Any) -> int | None:
    return None if v is None else integer(name, v)


def mapping(name: str, v: Any, value: Callable[[str, Any], Any]) -> dict[str, Any]:
    """An object with string keys; `value(name.key, x)` checks each value."""
    if not isinstance(v, Mapping) or not all(isinstance(k, str) for k in v):
        raise FieldError(f"{name!r} is {describe(v)}, not an object")
    return {k: value(f"{name}.{k}", x) for k, x in v.items()}


def describe(v: Any) -> str:
    """What a JSON value is, for messages: 'a string', 'the number 3', 'null'…"""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if is_number(v):
        return f"the number {v}"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, Mapping):
        return "an object"
    return "an array" if isinstance(v, list | tuple) else f"a {type(v).__name__}"


def load_object(data: bytes | str) -> dict[str, Any]:
    """Parse JSON text that must hold an object."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError
        raise FieldError(f"invalid JSON ({str(err)[:200]})") from None
    if not isinstance(obj, dict):
        raise FieldError(f"the JSON is {describe(obj)}, not an object")
    return obj


def required(obj: Mapping[str, Any], names: tuple[str, ...]) -> None:
    missing = [n for n in names if n not in obj]
    if missing:
        raise FieldError(f"no {', '.join(repr(n) for n in missing)}")


def array(name: str, v: Any) -> list:
    if not isinstance(v, list):
        raise FieldError(f"{name!r} is {describe(v)}, not an array")
    return v


def fields(name: str, v: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The `names` of a nested object, all required (others are ignored)."""
    if not isinstance(v, dict):
        raise FieldError(f"{name!r} is {describe(v)}, not an object")
    required(v, names)
    return {n: v[n] for n in names}
