"""Early, uniform argument checks: every error names the parameter and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any


class ConfigError(ValueError):
    """A configuration value is outside what the experiment allows."""


def integer(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """Return ``value`` as an int, or raise naming ``name`` and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"{name} must be an integer{_range(lo, hi)}, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{name} must be an integer{_range(lo, hi)}, got {value}")
    return value


def number(name: str, value: Any, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False) -> float:
    """Return ``value`` as a float, or raise naming ``name`` and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number{_range(lo, hi, lo_open)}, got {value!r}")
    value = float(value)
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    if too_low or (hi is not None and value > hi) or value != value:
        raise ConfigError(f"{name} must be a number{_range(lo, hi, lo_open)}, got {value}")
    return value


def choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise listing them."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def non_empty(name: str, values: Any) -> tuple:
    """Return ``values`` as a non-empty tuple (a scalar becomes a 1-tuple)."""
    if isinstance(values, str) and values.lstrip().startswith(("[", "(")):
        raise ConfigError(f"{name} must be a list, got the text {values!r}: papermill's -p "
                          f"passes text; give lists as YAML: -y '{name}: {values.strip()}' "
                          f"or -f FILE (capq params CHAPTER writes one)")
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        values = (values,)
    values = tuple(values)
    if not values:
        raise ConfigError(f"{name} must list at least one value, got an empty list")
    return values


def lists_to_tuples(config: Any) -> None:
    """In a frozen dataclass, turn list fields (as notebooks and YAML give them) into tuples,
    so configs hash and compare the same whichever way they were written."""
    for f in fields(config):
        v = getattr(config, f.name)
        if isinstance(v, list):
            object.__setattr__(config, f.name, tuple(v))


def _range(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""
