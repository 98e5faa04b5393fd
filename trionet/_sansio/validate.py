"""Checks of option values that every layer shares: counts and timeouts.

Pure, so that an adapter (``bind_listening_sockets``, ``Resolver``) and an
endpoint (``serve_tcp``, ``serve_unix``) check the same option the same way
without the lower layer importing the higher one.
"""

from __future__ import annotations

__all__ = ["check_count", "check_grace", "check_optional_count", "check_positive", "check_timeout"]


def check_count(name: str, value: object, *, minimum: int = 1) -> int:
    """Validate a required count option: an int (not a bool) of at least ``minimum``.

    Raises:
      TypeError: ``value`` is not an int (``True`` is not a count).
      ValueError: ``value`` is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value!r}")
    return value


def check_optional_count(name: str, value: int | None, *, minimum: int = 1) -> int | None:
    """Validate a count option that may be off: ``None``, or an int (not a bool) of at least ``minimum``.

    Raises:
      TypeError: ``value`` is not an int (``True`` is not a count).
      ValueError: ``value`` is below ``minimum``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum} (or None), not {value!r}")
    return value


def check_timeout(name: str, value: float | None) -> float | None:
    """Validate a timeout option that may be off: ``None``, or a positive number of seconds.

    Raises:
      TypeError: ``value`` is not a number (a bool is not one).
      ValueError: ``value`` is zero, negative or NaN.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {value!r}")
    if not value > 0:  # also rejects NaN
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def check_positive(name: str, value: float) -> float:
    """Validate a timeout option that cannot be off: a positive number of seconds.

    Raises:
      TypeError: ``value`` is not a number (``None`` and bools are not).
      ValueError: ``value`` is zero, negative or NaN.
    """
    if value is None:
        raise TypeError(f"{name} must be a number of seconds, not None")
    checked = check_timeout(name, value)
    assert checked is not None
    return checked


def check_grace(name: str, value: float) -> float:
    """Validate a grace period: a number of seconds, zero allowed (no grace).

    Raises:
      TypeError: ``value`` is not a number (a bool is not one).
      ValueError: ``value`` is negative or NaN.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
    return float(value)
