"""Durations and instants as admins type them, for purges, usage and cost reports.

    7d, 12h, 90m, 2w, 1d12h         a duration (s, m, h, d, w)
    now, 7d                         an instant: now, or that long ago
    2026-11-01                      an instant: midnight UTC of that day
    2026-11-01T08:00:00Z            an instant: RFC 3339 (no offset means UTC)

Errors are ``ValueError`` with a one-line reason; the API turns them into 400, the CLI into exit 2.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

__all__ = ["parse_duration", "parse_instant", "rfc3339"]

_PART = re.compile(r"(\d{1,9})([smhdw])")
_DURATION = re.compile(r"(?:\d{1,9}[smhdw])+")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MAX = timedelta(days=100 * 366)


def parse_duration(text: str) -> timedelta:
    """``7d`` → 7 days; several parts add up (``1d12h``)."""
    value = text.strip().lower()
    if _DURATION.fullmatch(value) is None:
        raise ValueError(f"bad duration {text[:40]!r}: want a number and a unit (s, m, h, d, w), e.g. 7d or 12h")
    seconds = sum(int(n) * _SECONDS[unit] for n, unit in _PART.findall(value))
    duration = timedelta(seconds=seconds)
    if duration > _MAX:
        raise ValueError(f"bad duration {text[:40]!r}: longer than a century")
    return duration


def parse_instant(text: str, now: datetime) -> datetime:
    """An instant in UTC: ``now``, a duration ago, a date, or an RFC 3339 timestamp."""
    value = text.strip()
    if value.lower() == "now":
        return now
    if _DURATION.fullmatch(value.lower()):
        return now - parse_duration(value)
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        instant = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"bad time {text[:40]!r}: want now, a duration ago (7d), a date (2026-11-01) or RFC 3339"
        ) from None
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def rfc3339(instant: datetime) -> str:
    """``2026-11-25T13:00:00Z``: seconds precision, UTC."""
    return instant.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
