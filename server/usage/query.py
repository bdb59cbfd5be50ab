"""Usage over a time range, grouped as the caller asks: the rows of ``/v1/admin/usage`` and of cost
reports.

Ranges are whole hours (the ledger's grain): ``since`` rounds down, ``until`` up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..storage.base import Storage
from ..timespec import rfc3339
from .counters import Counts
from .segments import Row, scan

__all__ = ["GROUPS", "UsageTable", "hour_start", "parse_group_by", "usage_tables"]

#: What rows can be grouped by.
GROUPS: tuple[str, ...] = ("namespace", "subject", "job", "job_type", "hour", "day")


def hour_start(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * 3600, UTC)


_KEYS: dict[str, Callable[[Row], str]] = {
    "namespace": lambda row: row.dims.namespace,
    "subject": lambda row: row.dims.subject,
    "job": lambda row: row.dims.job,
    "job_type": lambda row: row.dims.job_type,
    "hour": lambda row: rfc3339(hour_start(row.hour)),
    "day": lambda row: hour_start(row.hour).date().isoformat(),
}


def parse_group_by(text: str) -> tuple[str, ...]:
    """``namespace``, or several joined by commas (``namespace,job``); ValueError for anything else."""
    parts = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [part for part in parts if part not in GROUPS]
    if unknown or not parts:
        raise ValueError(f"bad group_by {text[:60]!r}: want one or more of {', '.join(GROUPS)}, joined by commas")
    return parts


@dataclass
class UsageTable:
    since: datetime  # whole hours
    until: datetime
    group_by: tuple[str, ...]
    rows: dict[tuple[str, ...], Counts] = field(default_factory=dict)
    totals: Counts = field(default_factory=Counts)

    def add(self, row: Row) -> None:
        key = tuple(_KEYS[name](row) for name in self.group_by)
        counts = self.rows.get(key)
        if counts is None:
            counts = self.rows[key] = Counts()
        counts.add(row.counts)
        self.totals.add(row.counts)

    def sorted_rows(self) -> list[tuple[dict[str, str], Counts]]:
        return [(dict(zip(self.group_by, key, strict=True)), self.rows[key]) for key in sorted(self.rows)]


def _hour_range(since: datetime, until: datetime) -> tuple[int, int]:
    return math.floor(since.timestamp() / 3600), math.ceil(until.timestamp() / 3600)


async def usage_tables(
    storage: Storage, since: datetime, until: datetime, *group_bys: Sequence[str]
) -> list[UsageTable]:
    """The ledger's rows in ``[since, until)``, one table per grouping (one pass over the ledger)."""
    if until <= since:
        raise ValueError("until must be later than since")
    first, end = _hour_range(since, until)
    tables = [UsageTable(hour_start(first), hour_start(end), tuple(group_by)) for group_by in group_bys]

    def visit(row: Row) -> None:
        for table in tables:
            table.add(row)

    await scan(storage, first, end, visit)
    return tables
