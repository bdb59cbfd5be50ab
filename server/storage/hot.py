"""The hot tier: an in-memory LRU of recently read objects in front of any backend, per replica.

When several jobs warm from the same entries at once (a merge queue, a fan-out of presubmits),
each would pay the storage latency and a billed read for every entry. With the hot tier the
first read of an object keeps its bytes; the others are answered from memory, and reads of the
same object that arrive while the first is still in flight wait for it instead of going out
again. A hot hit costs no storage read, so the metered wrapper underneath (and the cost
reports) never see it.

What is kept: whole objects (``rest`` is None, so at most ``HEAD_BYTES``) whose key starts with
``prefix`` (``ac/``: entries, which are never replaced) and whose size is at most
``max_object_bytes``; the least recently used go first once ``max_bytes`` is reached. A write
or delete through this wrapper drops the key; an object deleted by another replica (a purge)
can still be served from here for at most ``ttl_seconds`` (its bytes are still the right
output for its action: the helper checks every digest).

Configured by the gate config's ``hot_tier:`` section (off unless ``enabled: true``)::

    hot_tier:
      enabled: true
      max_bytes: 268435456       # 256 MiB of object bytes per replica
      max_object_bytes: 1048576  # larger objects always go to storage
      ttl_seconds: 300
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field

from .base import HEAD_BYTES, Body, ListPage, ObjectInfo, ObjectReader, Storage

__all__ = ["HotStorage", "HotTierMetrics", "HotTierSettings", "with_hot_tier"]

_RETRY = object()  # what a read in flight tells the reads waiting for it: read for yourselves


class HotTierSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    max_bytes: int = Field(default=256 << 20, ge=0)
    max_object_bytes: int = Field(default=HEAD_BYTES, ge=0, le=HEAD_BYTES)
    ttl_seconds: float = Field(default=300.0, gt=0)
    prefix: str = "ac/"


class HotTierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.reads = Counter(
            "gocachegate_hot_tier_reads",
            "Reads of cacheable keys by result: hit (from memory), coalesced (waited for the same "
            "read in flight), miss (went to storage).",
            ["result"],
            registry=registry,
        )
        self.hits = self.reads.labels("hit")
        self.coalesced = self.reads.labels("coalesced")
        self.misses = self.reads.labels("miss")
        self.evictions = Counter("gocachegate_hot_tier_evictions", "Objects dropped to stay in bounds.",
                                 registry=registry)
        self.bytes = Gauge("gocachegate_hot_tier_bytes", "Object bytes held in the hot tier.", registry=registry)
        self.objects = Gauge("gocachegate_hot_tier_objects", "Objects held in the hot tier.", registry=registry)


class HotStorage:
    """Implements ``Storage``: reads of cacheable keys from memory when it can, the rest from ``inner``."""

    def __init__(self, inner: Storage, settings: HotTierSettings, metrics: HotTierMetrics) -> None:
        self.inner = inner
        self.name = inner.name
        self._settings = settings
        self._metrics = metrics
        self._lru: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # key -> (object, expiry)
        self._bytes = 0
        self._flights: dict[str, asyncio.Future[object]] = {}

    def _cacheable(self, key: str) -> bool:
        return key.startswith(self._settings.prefix)

    def _drop(self, key: str) -> None:
        held = self._lru.pop(key, None)
        if held is not None:
            self._bytes -= len(held[0])

    def _keep(self, key: str, data: bytes) -> None:
        if len(data) > self._settings.max_object_bytes or len(data) > self._settings.max_bytes:
            return
        self._drop(key)
        self._lru[key] = (data, time.monotonic() + self._settings.ttl_seconds)
        self._bytes += len(data)
        while self._bytes > self._settings.max_bytes:
            _, (old, _) = self._lru.popitem(last=False)
            self._bytes -= len(old)
            self._metrics.evictions.inc()
        self._metrics.bytes.set(self._bytes)
        self._metrics.objects.set(len(self._lru))

    def _held(self, key: str) -> bytes | None:
        held = self._lru.get(key)
        if held is None:
            return None
        if held[1] < time.monotonic():
            self._drop(key)
            return None
        self._lru.move_to_end(key)
        return held[0]

    async def read(self, key: str) -> ObjectReader | None:
        if not self._cacheable(key):
            return await self.inner.read(key)
        data = self._held(key)
        if data is not None:
            self._metrics.hits.inc()
            return ObjectReader(head=data, size=len(data))
        while (flight := self._flights.get(key)) is not None:
            result = await asyncio.shield(flight)
            if result is None or isinstance(result, bytes):
                self._metrics.coalesced.inc()
                return None if result is None else ObjectReader(head=result, size=len(result))
        self._metrics.misses.inc()
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        outcome: object = _RETRY
        try:
            reader = await self.inner.read(key)
            if reader is None:
                outcome = None
            elif reader.rest is None and reader.size <= self._settings.max_object_bytes:
                outcome = reader.head
                self._keep(key, reader.head)
            return reader
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.set_result(outcome)

    async def write(self, key: str, body: Body, size: int, metadata: Mapping[str, str], *, create_only: bool) -> bool:
        self._drop(key)
        return await self.inner.write(key, body, size, metadata, create_only=create_only)

    async def stat(self, key: str) -> ObjectInfo | None:
        return await self.inner.stat(key)

    async def delete(self, key: str) -> bool:
        self._drop(key)
        return await self.inner.delete(key)

    async def list(self, prefix: str, *, page_token: str | None = None, limit: int = 1000) -> ListPage:
        return await self.inner.list(prefix, page_token=page_token, limit=limit)

    async def touch(self, key: str) -> None:
        await self.inner.touch(key)

    async def check(self) -> None:
        await self.inner.check()

    async def aclose(self) -> None:
        self._lru.clear()
        self._bytes = 0
        await self.inner.aclose()


def with_hot_tier(storage: Storage, settings: HotTierSettings, registry: CollectorRegistry) -> Storage:
    """``storage`` behind a hot tier when the settings enable one, else ``storage`` itself."""
    if not settings.enabled or settings.max_bytes == 0:
        return storage
    return HotStorage(storage, settings, HotTierMetrics(registry))
