"""Numbers read from the environment for the server's limits; a bad value fails the start with one
line naming the variable and what it expects."""

from __future__ import annotations

from collections.abc import Mapping


def _raw(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    return raw or None


def whole_number(env: Mapping[str, str], name: str, default: int, unit: str) -> int:
    """A whole number > 0 of `unit`, else the default when unset."""
    raw = _raw(env, name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) <= 0:
        raise ValueError(f"{name}={raw!r}: expected a whole number of {unit} > 0")
    return int(raw)


def seconds(env: Mapping[str, str], name: str, default: float, allow_zero: bool) -> float:
    """A finite number of seconds (> 0, or >= 0 with allow_zero), else the default when unset."""
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (0 <= value < float("inf")) or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={raw!r}: expected a number of seconds {bound}")
    return value
