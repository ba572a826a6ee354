"""Option checks: each stage's config validates its options with these, in `__post_init__`,
so a bad value is one line (MiroError) before any work."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from miro_data.common import MiroError

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")


def check_identifier(name: str, what: str = "name") -> str:
    """Reward names become SQL columns and file names: keep them to [a-z][a-z0-9_]*."""
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        raise MiroError(f"invalid {what} {name!r}: use lowercase letters, digits and '_'")
    return name


def check_count(option: str, value: object, low: int, high: int | None = None) -> int:
    """An integer option within [low, high], or a one-line MiroError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MiroError(f"{option} must be an integer, not {value!r}")
    if value < low:
        raise MiroError(f"{option} must be {low} or more, not {value}")
    if high is not None and value > high:
        raise MiroError(f"{option} must be at most {high:,}, not {value:,}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int | None = None) -> None:
    """An integer option, at least `minimum` when given."""
    if not _is_int(value):
        raise MiroError(f"{name} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        bound = {0: "0 or more", 1: "positive"}.get(minimum, f"at least {minimum}")
        raise MiroError(f"{name} must be {bound}, not {value}")


def check_positive(name: str, value: Any) -> None:
    check_int(name, value, 1)


def check_optional_positive(name: str, value: Any) -> None:
    if value is not None:
        check_int(name, value, 1)


def check_seed(name: str, value: Any) -> None:
    """Seeds feed numpy and torch generators: a non-negative integer below 2**32."""
    check_int(name, value, 0)
    if value >= 2**32:
        raise MiroError(f"{name} must be below 2**32, not {value}")


def check_finite(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> None:
    """A finite number, within [low, high] (either end open when asked)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MiroError(f"{name} must be a number, not {value!r}")
    if not math.isfinite(value):
        raise MiroError(f"{name} must be a finite number, not {value}")
    too_low = low is not None and (value <= low if open_low else value < low)
    too_high = high is not None and (value >= high if open_high else value > high)
    if too_low or too_high:
        if high is None and low == 0:
            bound = "positive" if open_low else "0 or more"
        else:
            lo = "-inf" if low is None else f"{low:g}"
            hi = "inf" if high is None else f"{high:g}"
            bound = f"in {'(' if open_low else '['}{lo}, {hi}{')' if open_high else ']'}"
        raise MiroError(f"{name} must be {bound}, not {value:g}")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise MiroError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def check_device(name: str, value: Any) -> None:
    """auto, cpu, cuda, cuda:N (or mps): what torch.device and the CLI's --device accept."""
    if not isinstance(value, str) or not DEVICE.match(value):
        raise MiroError(f"{name} must be auto, cpu, cuda or cuda:N, not {value!r}")


def check_nonempty_text(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise MiroError(f"{name} must not be empty")


def check_names(name: str, value: tuple[str, ...] | None, identifiers: bool = True) -> None:
    """An optional list of names (None: the default set); given, it names at least one."""
    if value is None:
        return
    if not value:
        raise MiroError(f"{name} names no reward")
    for item in value:
        if identifiers:
            check_identifier(item, "reward name")
        else:
            check_nonempty_text(name, item)
