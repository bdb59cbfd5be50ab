"""The cost report's arithmetic: what the cache cost over a period, and what it saved.

Per namespace (or per namespace and job):

    storage $     stored GiB now * storage_gb_month * period hours / 730
    operations $  Class A ops / 1000 * class_a_per_1000 + Class B ops / 1000 * class_b_per_1000
    egress $      GiB sent to clients * egress_gb
    total $       storage + operations + egress
    hit ratio     hits / (hits + misses), as the gate answered gets
    CPU hours     compute ms saved / 3,600,000: the larger of what the gate served (the compute ms
                  recorded with each entry a get hit) and what the helpers reported Go used (their
                  session reports, which also count prefetched entries; the gate cannot tell which
                  prefetched entries get used). Each is a lower bound where the other is blind.
    saved $       CPU hours * cpu_vcpu_hour
    return        saved / total

Storage is priced from the bytes stored when the report runs (an inventory, not a history), for the
whole period. Per job, storage belongs to no job: each namespace gets a ``(storage)`` row that
carries it, so rows always add up to the totals. The gate's own operations (ledger writes, admin
listings, readiness probes) show as the namespace ``(gate)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from ..inventory import Inventory, Stats
from ..storage.base import Storage
from ..timespec import rfc3339
from ..usage.counters import Counts
from ..usage.ledger import UsageLedger
from ..usage.query import UsageTable
from .prices import PriceSettings

__all__ = [
    "GIB",
    "HOURS_PER_MONTH",
    "CostReport",
    "CostRow",
    "SeriesPoint",
    "build_report",
    "make_report",
    "series_step",
]

GIB = float(1 << 30)
HOURS_PER_MONTH = 730.0  # Google bills storage per month of 730 hours
STORAGE_JOB = "(storage)"
NO_JOB = "(none)"


class CostRow(BaseModel):
    namespace: str
    job: str | None = Field(default=None, description="with group_by=job; (storage) carries the namespace's storage")
    entries: int = 0
    stored_bytes: int = 0
    requests: int = 0
    hits: int = 0
    misses: int = 0
    hit_ratio: float | None = None
    bytes_out: int = 0
    ops_a: int = 0
    ops_b: int = 0
    storage_usd: float = 0.0
    operations_usd: float = 0.0
    egress_usd: float = 0.0
    total_usd: float = 0.0
    cpu_hours_saved: float = 0.0
    saved_usd: float = 0.0
    roi: float | None = Field(default=None, description="saved_usd / total_usd")


class SeriesPoint(BaseModel):
    start: str
    hits: int
    misses: int


class CostReport(BaseModel):
    since: str
    until: str
    hours: float
    group_by: Literal["namespace", "job"]
    prices: PriceSettings
    total_usd: float
    saved_usd: float
    roi: float | None
    rows: list[CostRow]
    totals: CostRow
    series_step: Literal["hour", "day"]
    series: list[SeriesPoint]


def _priced(row: CostRow, counts: Counts | None, hours: float, prices: PriceSettings) -> CostRow:
    """Fill in the usage fields from ``counts`` and every derived field."""
    compute_ms = 0
    if counts is not None:
        row.requests, row.hits, row.misses = counts.requests, counts.hits, counts.misses
        row.bytes_out, row.ops_a, row.ops_b = counts.bytes_out, counts.ops_a, counts.ops_b
        compute_ms = max(counts.compute_ms_saved, counts.session_compute_ms_saved)
    row.storage_usd = row.stored_bytes / GIB * prices.storage_gb_month * hours / HOURS_PER_MONTH
    row.operations_usd = row.ops_a / 1000 * prices.class_a_per_1000 + row.ops_b / 1000 * prices.class_b_per_1000
    row.egress_usd = row.bytes_out / GIB * prices.egress_gb
    row.cpu_hours_saved = compute_ms / 3_600_000
    row.saved_usd = row.cpu_hours_saved * prices.cpu_vcpu_hour
    return _derived(row)


def _derived(row: CostRow) -> CostRow:
    row.total_usd = row.storage_usd + row.operations_usd + row.egress_usd
    gets = row.hits + row.misses
    row.hit_ratio = row.hits / gets if gets else None
    row.roi = row.saved_usd / row.total_usd if row.total_usd else None
    return row


def _sum(rows: Iterable[CostRow]) -> CostRow:
    total = CostRow(namespace="TOTAL")
    for row in rows:
        for name in ("entries", "stored_bytes", "requests", "hits", "misses", "bytes_out", "ops_a", "ops_b"):
            setattr(total, name, getattr(total, name) + getattr(row, name))
        for name in ("storage_usd", "operations_usd", "egress_usd", "cpu_hours_saved", "saved_usd"):
            setattr(total, name, getattr(total, name) + getattr(row, name))
    return _derived(total)


def _series(table: UsageTable, step: Literal["hour", "day"], since: datetime, until: datetime) -> list[SeriesPoint]:
    """One point per hour or day of the period, zeros included."""
    by_start = {key[0]: counts for key, counts in table.rows.items()}
    points = []
    at = since
    width = timedelta(hours=1) if step == "hour" else timedelta(days=1)
    if step == "day":
        at = at.replace(hour=0)
    while at < until:
        label = rfc3339(at) if step == "hour" else at.date().isoformat()
        counts = by_start.get(label) or Counts()
        points.append(SeriesPoint(start=label, hits=counts.hits, misses=counts.misses))
        at += width
    return points


def series_step(since: datetime, until: datetime) -> Literal["hour", "day"]:
    """Hourly points for up to three days, daily beyond."""
    return "hour" if until - since <= timedelta(days=3) else "day"


def build_report(
    *,
    usage: UsageTable,
    over_time: UsageTable,
    stats: Stats,
    prices: PriceSettings,
    group_by: Literal["namespace", "job"],
) -> CostReport:
    """The report for ``usage`` (grouped by namespace, or by namespace and job) and ``over_time``
    (grouped by hour or day), with storage priced from ``stats``."""
    since, until = usage.since, usage.until
    hours = (until - since).total_seconds() / 3600
    rows: list[CostRow] = []
    if group_by == "namespace":
        namespaces = sorted(set(stats.namespaces) | {key[0] for key in usage.rows})
        for ns in namespaces:
            stored = stats.namespaces.get(ns)
            row = CostRow(
                namespace=ns,
                entries=stored.entries if stored else 0,
                stored_bytes=stored.stored_bytes if stored else 0,
            )
            rows.append(_priced(row, usage.rows.get((ns,)), hours, prices))
    else:
        for (ns, job), counts in usage.rows.items():
            rows.append(_priced(CostRow(namespace=ns, job=job or NO_JOB), counts, hours, prices))
        for ns, stored in stats.namespaces.items():
            row = CostRow(namespace=ns, job=STORAGE_JOB, entries=stored.entries, stored_bytes=stored.stored_bytes)
            rows.append(_priced(row, None, hours, prices))
        rows.sort(key=lambda r: (r.namespace, r.job == STORAGE_JOB, r.job or ""))
    totals = _sum(rows)
    step: Literal["hour", "day"] = "hour" if over_time.group_by == ("hour",) else "day"
    return CostReport(
        since=rfc3339(since),
        until=rfc3339(until),
        hours=hours,
        group_by=group_by,
        prices=prices,
        total_usd=totals.total_usd,
        saved_usd=totals.saved_usd,
        roi=totals.roi,
        rows=rows,
        totals=totals,
        series_step=step,
        series=_series(over_time, step, since, until),
    )


async def make_report(
    ledger: UsageLedger,
    storage: Storage,
    *,
    since: datetime,
    until: datetime,
    group_by: Literal["namespace", "job"],
    prices: PriceSettings,
) -> CostReport:
    """Read the ledger (one pass) and the inventory (one listing) and build the report."""
    grouping = ("namespace",) if group_by == "namespace" else ("namespace", "job")
    usage, over_time = await ledger.read(since, until, grouping, (series_step(since, until),))
    stats = await Inventory(storage).stats()
    return build_report(usage=usage, over_time=over_time, stats=stats, prices=prices, group_by=group_by)
