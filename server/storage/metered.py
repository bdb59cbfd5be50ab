"""Operation counts and latencies around any backend: a decorator, so backends stay plain.

Each call is counted by outcome and by the Cloud Storage operation class it is billed as, which
is what cost reports multiply by the price list::

    op       class   GCS call
    write    A       objects.insert (a create-only write that loses the race is still billed)
    list     A       objects.list
    touch    A       objects.patch (customTime)
    read     B       objects.get (media)
    stat     B       objects.get (metadata)
    check    B       readiness probe
    delete   free    objects.delete

Outcomes: ``ok``, ``miss`` (nothing there), ``exists`` (create-only lost), ``unavailable``
(``StorageUnavailable``), ``error`` (anything else raised).

The counts go to Prometheus (``gocachegate_storage_operations_total`` and the latency histogram
``gocachegate_storage_operation_seconds``) and to plain in-process counters (``snapshot``) that
the usage ledger and tests read without parsing metrics text.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram

from .base import Body, ListPage, ObjectInfo, ObjectReader, Storage, StorageUnavailable

__all__ = ["OP_CLASS", "MeteredStorage", "StorageMetrics"]

OP_CLASS: Final[Mapping[str, str]] = {
    "write": "A",
    "list": "A",
    "touch": "A",
    "read": "B",
    "stat": "B",
    "check": "B",
    "delete": "free",
}


class StorageMetrics:
    """The Prometheus side, registered once per registry and shared by every wrapped backend."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.operations = Counter(
            "gocachegate_storage_operations",
            "Storage operations by backend, operation, GCS operation class and outcome.",
            ["backend", "op", "class", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "gocachegate_storage_operation_seconds",
            "Time to complete a storage operation (for read: until the first bytes are in memory).",
            ["backend", "op"],
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


def _outcome_of(exc: BaseException) -> str:
    return "unavailable" if isinstance(exc, StorageUnavailable) else "error"


class MeteredStorage:
    """Implements ``Storage`` by delegating to ``inner`` and counting every call."""

    def __init__(self, inner: Storage, metrics: StorageMetrics) -> None:
        self.inner = inner
        self.name = inner.name
        self._metrics = metrics
        self._counts: Tally[tuple[str, str]] = Tally()
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def _record(self, op: str, outcome: str, started: float) -> None:
        self._counts[op, outcome] += 1
        children = self._children.get((op, outcome))
        if children is None:
            children = (
                self._metrics.operations.labels(self.name, op, OP_CLASS[op], outcome),
                self._metrics.seconds.labels(self.name, op),
            )
            self._children[op, outcome] = children
        children[0].inc()
        children[1].observe(time.perf_counter() - started)

    def snapshot(self) -> dict[tuple[str, str], int]:
        """Calls so far by (op, outcome)."""
        return dict(self._counts)

    def by_class(self) -> dict[str, int]:
        """Calls so far by operation class ("A", "B", "free"), whatever their outcome."""
        totals: Tally[str] = Tally()
        for (op, _), count in self._counts.items():
            totals[OP_CLASS[op]] += count
        return dict(totals)

    async def read(self, key: str) -> ObjectReader | None:
        started = time.perf_counter()
        try:
            reader = await self.inner.read(key)
        except BaseException as exc:
            self._record("read", _outcome_of(exc), started)
            raise
        self._record("read", "miss" if reader is None else "ok", started)
        return reader

    async def write(self, key: str, body: Body, size: int, metadata: Mapping[str, str], *, create_only: bool) -> bool:
        started = time.perf_counter()
        try:
            written = await self.inner.write(key, body, size, metadata, create_only=create_only)
        except BaseException as exc:
            self._record("write", _outcome_of(exc), started)
            raise
        self._record("write", "ok" if written else "exists", started)
        return written

    async def stat(self, key: str) -> ObjectInfo | None:
        started = time.perf_counter()
        try:
            info = await self.inner.stat(key)
        except BaseException as exc:
            self._record("stat", _outcome_of(exc), started)
            raise
        self._record("stat", "miss" if info is None else "ok", started)
        return info

    async def delete(self, key: str) -> bool:
        started = time.perf_counter()
        try:
            deleted = await self.inner.delete(key)
        except BaseException as exc:
            self._record("delete", _outcome_of(exc), started)
            raise
        self._record("delete", "ok" if deleted else "miss", started)
        return deleted

    async def list(self, prefix: str, *, page_token: str | None = None, limit: int = 1000) -> ListPage:
        started = time.perf_counter()
        try:
            page = await self.inner.list(prefix, page_token=page_token, limit=limit)
        except BaseException as exc:
            self._record("list", _outcome_of(exc), started)
            raise
        self._record("list", "ok", started)
        return page

    async def touch(self, key: str) -> None:
        started = time.perf_counter()
        try:
            await self.inner.touch(key)
        except BaseException as exc:
            self._record("touch", _outcome_of(exc), started)
            raise
        self._record("touch", "ok", started)

    async def check(self) -> None:
        started = time.perf_counter()
        try:
            await self.inner.check()
        except BaseException as exc:
            self._record("check", _outcome_of(exc), started)
            raise
        self._record("check", "ok", started)

    async def aclose(self) -> None:
        await self.inner.aclose()
