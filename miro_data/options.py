"""Command options, declared once beside the config field they set, and the parsers of their text.

A stage's config dataclass is its command's declaration: a field whose metadata holds an
`Option` (`field(default=…, metadata=opt("--steps", help="Euler steps."))`) is a command
option, with the field's type and default; a nested config dataclass contributes its own
options. `cli/options.py` turns that into Typer parameters; this module imports neither
typer nor click, so configs stay plain library code.

The parsers read the text of list options — names, numbers, `KEY=VALUE` pairs — by one set
of rules: items are comma-separated, spaces around an item are dropped, empty items are
skipped (so `a,,b` is `a,b` and `,` is an empty list, which the config then refuses by its
own rule). Bad text is one `MiroError` line that names the option.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from miro_data.common import MiroError

OPTION = "miro.option"  # the metadata key of a field's Option


@dataclass(frozen=True)
class Parser:
    """How an option's text becomes its field's value, and a default value becomes text."""

    parse: Callable[[str, str], Any]  # (text, option) → value; bad text is a MiroError
    format: Callable[[Any], str]  # value → the text that parses back to it


@dataclass(frozen=True)
class Option:
    """How a config field is set on the command line."""

    flags: tuple[str, ...] = ()  # () → --field-name (a bool: --field-name/--no-field-name)
    help: str = ""
    parser: Parser | None = None  # the option is text, read into the field's type


def opt(*flags: str, help: str = "", parser: Parser | None = None) -> dict[str, Option]:
    """Field metadata declaring a command option: `field(default=…, metadata=opt(…))`."""
    return {OPTION: Option(flags, help, parser)}


def option_of(field: dataclasses.Field) -> Option | None:
    """The option a config field declares, or None: the field is not on the command line."""
    return field.metadata.get(OPTION)


# ----------------------------------------------------------------------------
# The parsers
# ----------------------------------------------------------------------------


def items(text: str) -> list[str]:
    """'a, b,,c ' → ['a', 'b', 'c']: the one splitting rule of every list option."""
    return [item.strip() for item in text.split(",") if item.strip()]


def names(text: str, option: str) -> tuple[str, ...]:
    """'a, b,c' → ('a', 'b', 'c'); whether the names exist is the config's check."""
    return tuple(items(text))


def numbers(text: str, option: str) -> tuple[float, ...]:
    """'0,0.5,1' → (0.0, 0.5, 1.0); anything else is one line naming the option."""
    try:
        return tuple(float(item) for item in items(text))
    except ValueError:
        raise MiroError(f"{option}: expected comma-separated numbers, got {text!r}") from None


def format_numbers(values: tuple[float, ...]) -> str:
    return ",".join(f"{value:g}" for value in values)


def key_values(
    text: str,
    option: str,
    *,
    key: str = "NAME",
    check_key: Callable[[str], None] | None = None,
    missing: tuple[str, ...] = (),
    bounds: tuple[float, float] | None = None,
) -> dict[str, float | None]:
    """'a=0.5, b=1' → {'a': 0.5, 'b': 1.0}: comma-separated KEY=VALUE pairs of numbers.

    `check_key` refuses unknown keys; a value in `missing` (e.g. 'none') reads as None;
    `bounds` is the closed range a value must be in (NaN never is). A key given twice keeps
    its last value.
    """
    out: dict[str, float | None] = {}
    for item in items(text):
        name, sep, raw = (part.strip() for part in item.partition("="))
        if not sep or not name:
            raise MiroError(f"{option}: {item!r} is not {key}=VALUE")
        if check_key is not None:
            check_key(name)
        if raw.lower() in missing:
            out[name] = None
            continue
        try:
            value = float(raw)
        except ValueError:
            raise MiroError(f"{option}: {name}={raw!r} is not a number") from None
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            raise MiroError(f"{option}: {name}={value} is outside [{bounds[0]:g}, {bounds[1]:g}]")
        out[name] = value
    return out


def format_key_values(values: Mapping[str, float | None]) -> str:
    return ",".join(f"{k}={'none' if v is None else f'{v:g}'}" for k, v in values.items())


NAMES = Parser(names, ",".join)
NUMBERS = Parser(numbers, format_numbers)
