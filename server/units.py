"""Numbers as people read them, for the CLI's tables and the cost report's text formats."""

from __future__ import annotations

import math

__all__ = ["hours", "human_bytes", "money", "percent", "times"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: int | float) -> str:
    """``1536`` → ``1.5 KiB``; three significant digits at most."""
    value, step = float(n), 0
    while abs(value) >= 1024 and step < len(_UNITS) - 1:
        value /= 1024
        step += 1
    unit = _UNITS[step]
    if unit == "B":
        return f"{int(value)} B"
    return f"{value:.3g} {unit}" if value < 1000 else f"{value:.0f} {unit}"


def _small(value: float) -> str:
    """Two significant digits, in plain decimals: ``0.000046``."""
    if abs(value) < 1e-9:
        return "0"
    decimals = min(max(2, 1 - math.floor(math.log10(abs(value)))), 9)
    return f"{value:.{decimals}f}"


def money(usd: float) -> str:
    """Dollars with cents; amounts under a cent with two significant digits (a small cache's
    costs are fractions of a cent, and they still need telling apart)."""
    if usd == 0:
        return "$0"
    sign = "-" if usd < 0 else ""
    if abs(usd) >= 0.995:
        return f"{sign}${abs(usd):,.2f}"
    return f"{sign}${_small(abs(usd))}"


def hours(value: float) -> str:
    """CPU hours: ``1,234``, ``12.3``, ``0.0021``."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return "0" if value == 0 else _small(value)


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def times(ratio: float | None) -> str:
    """A return as a multiple: ``12.3x``."""
    if ratio is None:
        return "-"
    return f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.2f}x"
