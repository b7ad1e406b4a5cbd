"""The one error type users see, and the checks that raise it.

A :class:`ConfigError` is a setting or input that cannot work, explained in one sentence that
names the key, the value and the fix. Entry points (``train.py``, ``eval.py``,
``python -m vit_rope.*``) print it without a traceback and exit with status 2; any other
exception is a bug and keeps its traceback.

Every option is checked once, where it is typed (a dataclass's ``__post_init__`` or a data
module's ``__init__``), with the helpers below, so that the messages read alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A bad setting or input; the message names the value and the fix."""


def check_choice(key: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``, else a :class:`ConfigError` listing them."""
    choices = tuple(choices)
    if value not in choices:
        listed = ", ".join(str(c) for c in choices)
        raise ConfigError(f"Unknown {key} '{value}'; choose one of {listed}.")
    return value


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    return f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"


def check_range(
    key: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    optional: bool = False,
) -> Any:
    """``value`` if it is a (finite) number in the interval, else a :class:`ConfigError`.

    Args:
        key: The config key as the user types it, e.g. ``optim.lr``.
        low, high: Bounds; ``None`` leaves that side open to infinity.
        low_open, high_open: Exclude the bound itself.
        integer: The value must be a whole number.
        optional: ``None`` is accepted as "not set".
    """
    if value is None and optional:
        return value
    rng = _interval(low, high, low_open, high_open)
    kind = "a whole number" if integer else "a number"
    ok_type = isinstance(value, int | float) and not isinstance(value, bool)
    if integer:
        ok_type = ok_type and float(value).is_integer()
    if not ok_type or not math.isfinite(float(value)):
        raise ConfigError(f"{key}={value!r} is not {kind}; set {key} to {kind} in {rng}.")
    v = float(value)
    too_low = low is not None and (v < low or (low_open and v == low))
    too_high = high is not None and (v > high or (high_open and v == high))
    if too_low or too_high:
        raise ConfigError(f"{key}={value!r} is out of range; set {key} to {kind} in {rng}.")
    return int(value) if integer else value


def check_divisible(key: str, value: int, divisor: int, divisor_name: str) -> int:
    """``value`` if it is a multiple of ``divisor``, else a :class:`ConfigError` that proposes the
    two nearest multiples (``divisor_name`` says what the divisor is, e.g. "the patch size")."""
    if value % divisor != 0:
        lower = value // divisor * divisor
        raise ConfigError(
            f"{key} {value} is not a multiple of {divisor_name} {divisor}; "
            f"use a multiple of {divisor} such as {lower or divisor} or {lower + divisor}."
        )
    return value


class PositionConfigError(ConfigError):
    """A position-encoding option (or test-time strategy) that cannot work."""
