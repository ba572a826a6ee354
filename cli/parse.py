"""Option values the commands share the parsing of."""

from __future__ import annotations

from miro_data.common import MiroError


def floats(text: str, option: str) -> tuple[float, ...]:
    """'0,0.5,1' → (0.0, 0.5, 1.0); anything else is one line naming the option."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise MiroError(f"{option}: expected comma-separated numbers, got {text!r}") from None
