"""Argument checks shared by nets, data, callbacks and the module: each raises ``ValueError`` naming
the argument, what was expected and what was received."""

from __future__ import annotations

from typing import Iterable


def check_choice(name: str, value: object, allowed: Iterable) -> None:
    """Raise unless ``value`` is one of ``allowed``.

    >>> check_choice("loss", "l1", ("mse", "hinge"))
    Traceback (most recent call last):
    ValueError: Expected argument `loss` to be one of mse, hinge but got 'l1'
    """
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"Expected argument `{name}` to be one of {', '.join(map(str, allowed))} but got {value!r}")


def check_positive(name: str, value: float) -> None:
    """Raise unless ``value`` > 0."""
    if not value > 0:
        raise ValueError(f"Expected argument `{name}` to be > 0 but got {value!r}")


def check_positive_int(name: str, value: object, allow_none: bool = False) -> None:
    """Raise unless ``value`` is a positive integer (booleans are not), or None when ``allow_none``."""
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        expected = "a positive integer or null" if allow_none else "a positive integer"
        raise ValueError(f"Expected argument `{name}` to be {expected} but got {value!r}")


def check_sizes(**sizes: object) -> None:
    """:func:`check_positive_int` for each keyword, e.g. ``check_sizes(width=width, depth=depth)``."""
    for name, value in sizes.items():
        check_positive_int(name, value)


class ConfigError(ValueError):
    """A configuration the suite cannot run (a bad value, a missing file, a refused resume): the CLI
    reports it as one line and exits with code 2. Any other exception is a bug and keeps its traceback."""
