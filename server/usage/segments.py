"""The ledger in storage: segments per replica and hour, compacted into one object per day.

Layout, beside the entries (``ac/``) and never under them::

    usage/v1/h/{YYYY-MM-DDTHH}/{replica}.json    one replica's counts of one hour
    usage/v1/d/{YYYY-MM-DD}.json                 a compacted day: its rows and the segments it holds

A replica rewrites its segment of the current hour with its running totals at every flush, so a
segment always holds everything that replica counted in that hour, and a report adds up the
segments of all replicas: nothing is counted twice, however often a replica flushes or however many
replicas there are. Replica ids are unique per process, so two replicas never share a segment.

Compaction folds the hour segments of whole days into the day object, which names the segments it
took in (``sources``) before they are deleted. Readers skip any segment a day object names, so a
compaction interrupted between writing the day and deleting its segments counts nothing twice.
Replicas never write segments older than a day (``ledger.MAX_UNFLUSHED_HOURS``), and compaction
only takes days older than ``MIN_COMPACT_AGE``, so a segment cannot change after it was compacted.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from ..storage.base import ListPage, Storage, StorageError
from .counters import Counts, Dims

__all__ = [
    "MIN_COMPACT_AGE",
    "PREFIX",
    "CompactResult",
    "Row",
    "compact",
    "decode_segment",
    "encode_segment",
    "hour_label",
    "scan",
    "segment_key",
]

log = logging.getLogger("gocachegate.usage")

PREFIX = "usage/v1/"
_HOURS = PREFIX + "h/"
_DAYS = PREFIX + "d/"
_VERSION = 1
_PARALLEL_READS = 16
_LIST_PAGE = 1000
MIN_COMPACT_AGE = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class Row:
    hour: int  # hours since the epoch (UTC)
    dims: Dims
    counts: Counts


def hour_label(hour: int) -> str:
    return datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y-%m-%dT%H")


def _parse_hour(label: str) -> int:
    instant = datetime.strptime(label, "%Y-%m-%dT%H").replace(tzinfo=UTC)
    return int(instant.timestamp()) // 3600


def _day_of(hour: int) -> date:
    return datetime.fromtimestamp(hour * 3600, UTC).date()


def segment_key(hour: int, replica: str) -> str:
    return f"{_HOURS}{hour_label(hour)}/{replica}.json"


def _day_key(day: date) -> str:
    return f"{_DAYS}{day.isoformat()}.json"


def _row_json(row: Row, with_hour: bool) -> dict[str, object]:
    d = row.dims
    out: dict[str, object] = {"hour": hour_label(row.hour)} if with_hour else {}
    out.update(namespace=d.namespace, subject=d.subject, job=d.job, job_type=d.job_type, counts=row.counts.to_json())
    return out


def encode_segment(replica: str, hour: int, rows: Mapping[Dims, Counts]) -> bytes:
    body = {
        "version": _VERSION,
        "replica": replica,
        "hour": hour_label(hour),
        "rows": [_row_json(Row(hour, dims, counts), with_hour=False) for dims, counts in rows.items()],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _encode_day(day: date, sources: Iterable[str], rows: Iterable[Row]) -> bytes:
    body = {
        "version": _VERSION,
        "day": day.isoformat(),
        "sources": sorted(sources),
        "rows": [_row_json(row, with_hour=True) for row in rows],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_segment(data: bytes) -> tuple[list[Row], frozenset[str]]:
    """The rows of an hour segment or a day object, and the segments a day object took in."""
    try:
        body = json.loads(data)
        if not isinstance(body, dict) or body.get("version") != _VERSION:
            raise ValueError("not a usage segment of version 1")
        fixed_hour = _parse_hour(body["hour"]) if "hour" in body else None
        rows = []
        for item in body["rows"]:
            hour = fixed_hour if fixed_hour is not None else _parse_hour(item["hour"])
            dims = Dims(str(item["namespace"]), str(item["subject"]), str(item["job"]), str(item["job_type"]))
            rows.append(Row(hour, dims, Counts.from_json(item["counts"])))
        sources = frozenset(str(key) for key in body.get("sources", ()))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bad usage segment: {exc}") from exc
    return rows, sources


async def _read_all(storage: Storage, key: str) -> bytes | None:
    reader = await storage.read(key)
    if reader is None:
        return None
    data = reader.head
    if reader.rest is not None:
        chunks = [data]
        async for chunk in reader.rest:
            chunks.append(chunk)
        data = b"".join(chunks)
    return data


async def _keys(storage: Storage, prefix: str) -> AsyncIterator[str]:
    token: str | None = None
    while True:
        page: ListPage = await storage.list(prefix, page_token=token, limit=_LIST_PAGE)
        for item in page.items:
            yield item.key
        token = page.next_token
        if token is None:
            return


async def _read_many(storage: Storage, keys: list[str]) -> list[tuple[str, list[Row], frozenset[str]]]:
    """Segments read with bounded concurrency; an unreadable one is logged and skipped (a report
    without it beats no report)."""
    slots = asyncio.Semaphore(_PARALLEL_READS)

    async def one(key: str) -> tuple[str, list[Row], frozenset[str]] | None:
        async with slots:
            data = await _read_all(storage, key)
        if data is None:  # compacted (or deleted) since it was listed
            return None
        try:
            rows, sources = decode_segment(data)
        except ValueError as exc:
            log.warning("skipping usage segment %s: %s", key, exc)
            return None
        return key, rows, sources

    done = await asyncio.gather(*(one(key) for key in keys))
    return [item for item in done if item is not None]


async def scan(storage: Storage, since_hour: int, until_hour: int, visit: Callable[[Row], None]) -> None:
    """Call ``visit`` for every ledger row with ``since_hour <= hour < until_hour``.

    Day objects are read first; hour segments they took in are skipped. A segment is read only if
    its hour (or day) overlaps the range, and rows are handed over as they come, so memory holds one
    batch of segments, not the whole range.
    """
    first_day, last_day = _day_of(since_hour), _day_of(until_hour - 1)
    day_keys: list[str] = []
    async for key in _keys(storage, _DAYS):
        try:
            day = date.fromisoformat(key.removeprefix(_DAYS).removesuffix(".json"))
        except ValueError:
            continue
        if first_day <= day <= last_day:
            day_keys.append(key)
    taken_in: set[str] = set()
    for _, rows, sources in await _read_many(storage, day_keys):
        taken_in |= sources
        for row in rows:
            if since_hour <= row.hour < until_hour:
                visit(row)
    batch: list[str] = []
    async for key in _keys(storage, _HOURS):
        hour = _hour_of_segment(key)
        if hour is None or not since_hour <= hour < until_hour or key in taken_in:
            continue
        batch.append(key)
        if len(batch) >= _LIST_PAGE:
            _visit_all(await _read_many(storage, batch), visit)
            batch = []
    _visit_all(await _read_many(storage, batch), visit)


def _visit_all(segments: list[tuple[str, list[Row], frozenset[str]]], visit: Callable[[Row], None]) -> None:
    for _, rows, _ in segments:
        for row in rows:
            visit(row)


def _hour_of_segment(key: str) -> int | None:
    label, _, name = key.removeprefix(_HOURS).partition("/")
    if not name.endswith(".json") or "/" in name:
        return None
    try:
        return _parse_hour(label)
    except ValueError:
        return None


@dataclass(frozen=True)
class CompactResult:
    days: int  # day objects written
    segments: int  # hour segments folded in and deleted


async def compact(storage: Storage, before: datetime) -> CompactResult:
    """Fold the hour segments of every whole day before ``before`` into day objects.

    Safe to repeat, and to resume after an interruption: a day object keeps the names of what it
    took in, its rows are only ever added to, and a segment it names is deleted (again) by the next
    run. Refuses days younger than ``MIN_COMPACT_AGE``: replicas may still rewrite those segments.
    """
    if before > datetime.now(UTC) - MIN_COMPACT_AGE:
        raise ValueError(f"only days older than {MIN_COMPACT_AGE.days} days can be compacted")
    end_day = before.date()
    by_day: dict[date, list[str]] = {}
    async for key in _keys(storage, _HOURS):
        hour = _hour_of_segment(key)
        if hour is not None and _day_of(hour) < end_day:
            by_day.setdefault(_day_of(hour), []).append(key)
    days = segments = 0
    for day, keys in sorted(by_day.items()):
        day_key = _day_key(day)
        merged: dict[tuple[int, Dims], Counts] = {}
        sources: set[str] = set()
        existing = await _read_all(storage, day_key)
        if existing is not None:
            rows, taken = decode_segment(existing)
            sources |= taken
            _merge(merged, rows)
        read = await _read_many(storage, [key for key in keys if key not in sources])
        for key, rows, _ in read:
            sources.add(key)
            _merge(merged, rows)
        if read:
            body = _encode_day(day, sources, (Row(h, d, c) for (h, d), c in sorted(merged.items(), key=_order)))
            await storage.write(day_key, body, len(body), {"kind": "usage-day"}, create_only=False)
            days += 1
        # Only what the day object names: an unreadable segment stays (and stays skipped) for a human.
        for key in (key for key in keys if key in sources):
            try:
                if await storage.delete(key):
                    segments += 1
            except StorageError as exc:  # the day object names it: readers skip it, the next run retries
                log.warning("compaction could not delete %s: %s", key, exc)
    return CompactResult(days=days, segments=segments)


def _merge(into: dict[tuple[int, Dims], Counts], rows: Iterable[Row]) -> None:
    for row in rows:
        counts = into.get((row.hour, row.dims))
        if counts is None:
            into[row.hour, row.dims] = counts = Counts()
        counts.add(row.counts)


def _order(item: tuple[tuple[int, Dims], Counts]) -> tuple[int, str, str, str, str]:
    (hour, d), _ = item
    return hour, d.namespace, d.subject, d.job, d.job_type
