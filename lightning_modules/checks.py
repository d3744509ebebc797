"""Argument checks shared by nets, data, callbacks and the module.

Each raises :class:`ConfigError` (a ``ValueError``) naming the argument, what was expected and what
was received: "Expected argument `x` to be ... but got ...". Booleans are never numbers here
(``True`` is an ``int`` to Python, not a width or a learning rate to us); nan and inf are not numbers
either.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable, NoReturn, Optional


class ConfigError(ValueError):
    """A configuration the suite cannot run (a bad value, a missing file, a refused resume): the CLI
    reports it as one line and exits with code 2. Any other exception is a bug and keeps its traceback."""


def is_integer(value: object) -> bool:
    """Whether ``value`` is an integer and not a boolean.

    >>> is_integer(3), is_integer(True), is_integer(3.0)
    (True, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """Whether ``value`` is a finite real number and not a boolean.

    >>> is_number(0.5), is_number(2), is_number(False), is_number(float("inf"))
    (True, True, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _fail(name: str, expected: str, value: object) -> NoReturn:
    raise ConfigError(f"Expected argument `{name}` to be {expected} but got {value!r}")


def check_choice(name: str, value: object, allowed: Iterable) -> None:
    """Raise unless ``value`` is one of ``allowed``.

    >>> check_choice("loss", "l1", ("mse", "hinge"))
    Traceback (most recent call last):
    lightning_modules.checks.ConfigError: Expected argument `loss` to be one of mse, hinge but got 'l1'
    """
    allowed = tuple(allowed)
    if value not in allowed:
        _fail(name, f"one of {', '.join(map(str, allowed))}", value)


def check_bool(name: str, value: object) -> None:
    """Raise unless ``value`` is ``True`` or ``False`` (not 0, 1 or a string).

    >>> check_bool("bias", 1)
    Traceback (most recent call last):
    lightning_modules.checks.ConfigError: Expected argument `bias` to be a boolean but got 1
    """
    if not isinstance(value, bool):
        _fail(name, "a boolean", value)


def check_int(name: str, value: object, minimum: Optional[int] = None, maximum: Optional[int] = None, allow_none: bool = False) -> None:
    """Raise unless ``value`` is an integer (not a boolean) in [minimum, maximum], or None when ``allow_none``.

    >>> check_int("depth", 20, minimum=8)
    >>> check_int("depth", True, minimum=1)
    Traceback (most recent call last):
    lightning_modules.checks.ConfigError: Expected argument `depth` to be a positive integer but got True
    >>> check_int("k", 9, minimum=1, maximum=5)
    Traceback (most recent call last):
    lightning_modules.checks.ConfigError: Expected argument `k` to be an integer in [1, 5] but got 9
    """
    if allow_none and value is None:
        return
    ok = is_integer(value) and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        if minimum == 1 and maximum is None:
            expected = "a positive integer"
        elif minimum is not None and maximum is not None:
            expected = f"an integer in [{minimum}, {maximum}]"
        else:
            expected = "an integer" + (f" >= {minimum}" if minimum is not None else "") + (f" <= {maximum}" if maximum is not None else "")
        _fail(name, expected + (" or null" if allow_none else ""), value)


def check_number(
    name: str,
    value: object,
    minimum: Optional[float] = None,
    maximum: Optional[float] = None,
    *,
    strict_minimum: bool = False,
    strict_maximum: bool = False,
    allow_none: bool = False,
) -> None:
    """Raise unless ``value`` is a finite real number (not a boolean, nan or inf) with
    ``minimum <= value <= maximum`` (``<`` where ``strict_*``), or None when ``allow_none``.

    >>> check_number("momentum", 0.9, 0.0, 1.0, strict_maximum=True)
    >>> check_number("rho", -1, 0.0, strict_minimum=True)
    Traceback (most recent call last):
    lightning_modules.checks.ConfigError: Expected argument `rho` to be a finite number > 0 but got -1
    >>> check_number("lr", float("nan"), 0.0)
    Traceback (most recent call last):
    lightning_modules.checks.ConfigError: Expected argument `lr` to be a finite number >= 0 but got nan
    """
    if allow_none and value is None:
        return
    ok = is_number(value)
    if ok and minimum is not None:
        ok = value > minimum if strict_minimum else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if strict_maximum else value <= maximum
    if not ok:
        bounds = []
        if minimum is not None:
            bounds.append(f"{'>' if strict_minimum else '>='} {minimum:g}")
        if maximum is not None:
            bounds.append(f"{'<' if strict_maximum else '<='} {maximum:g}")
        expected = " ".join(["a finite number", " and ".join(bounds)]).strip()
        _fail(name, expected + (" or null" if allow_none else ""), value)


def check_probability(name: str, value: object, allow_one: bool = True) -> None:
    """Raise unless ``value`` is a number in [0, 1] (in [0, 1) when not ``allow_one``).

    >>> check_probability("dropout", 1.0, allow_one=False)
    Traceback (most recent call last):
    lightning_modules.checks.ConfigError: Expected argument `dropout` to be a probability in [0, 1) but got 1.0
    """
    ok = is_number(value) and 0 <= value and (value <= 1 if allow_one else value < 1)
    if not ok:
        _fail(name, f"a probability in [0, 1{']' if allow_one else ')'}", value)


def check_positive(name: str, value: object) -> None:
    """Raise unless ``value`` is a finite number > 0."""
    check_number(name, value, 0.0, strict_minimum=True)


def check_positive_int(name: str, value: object, allow_none: bool = False) -> None:
    """Raise unless ``value`` is a positive integer (booleans are not), or None when ``allow_none``."""
    check_int(name, value, minimum=1, allow_none=allow_none)


def check_sizes(**sizes: object) -> None:
    """:func:`check_positive_int` for each keyword, e.g. ``check_sizes(width=width, depth=depth)``."""
    for name, value in sizes.items():
        check_positive_int(name, value)
