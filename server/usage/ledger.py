"""One replica's usage counts, kept in memory and flushed to storage.

Counts are kept per hour and ``Dims``. Every ``usage.flush_seconds`` (and at shutdown) the replica
writes one segment per hour that changed since its last flush, holding its running totals for that
hour (see ``segments``). A failed write leaves the hour marked changed, so the next flush writes it
again, totals included: nothing is lost to a passing storage failure, and nothing is counted twice.
An hour is forgotten once it is over and its final totals are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Sequence
from datetime import datetime

from ..storage.base import Storage, StorageError
from .attribution import AttributedStorage, bind_context, bind_current
from .counters import GATE_DIMS, OP_FIELD, OTHER, Counts, Dims
from .query import UsageTable, usage_tables
from .segments import encode_segment, hour_label, segment_key
from .settings import UsageSettings

__all__ = ["MAX_UNFLUSHED_HOURS", "UsageLedger", "current_hour", "new_replica_id"]

log = logging.getLogger("gocachegate.usage")

#: Hours a replica keeps trying to flush; older counts are dropped, because compaction may have
#: taken in that hour's segments already and a late rewrite would then count twice.
MAX_UNFLUSHED_HOURS = 24
_NOT_KEY = re.compile(r"[^A-Za-z0-9._-]+")


def current_hour() -> int:
    return int(time.time()) // 3600


def new_replica_id() -> str:
    """Unique per process, and readable in a segment listing: ``{host}-{pid}-{random}``."""
    host = _NOT_KEY.sub("-", socket.gethostname()).strip("-.")[:60] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


class UsageLedger:
    def __init__(self, settings: UsageSettings, *, replica: str | None = None) -> None:
        self.settings = settings
        self.enabled = settings.enabled
        self.replica = replica or new_replica_id()
        self._hours: dict[int, dict[Dims, Counts]] = {}
        self._dirty: set[int] = set()
        self._storage: Storage | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._failing = False
        self._attributed: AttributedStorage | None = None

    def attribute(self, backend: Storage) -> Storage:
        """The backend, wrapped so that its operations are charged to the requests that cause them."""
        if not self.enabled:
            return backend
        self._attributed = AttributedStorage(backend, self._add_ops)
        return self._attributed

    def row(self, dims: Dims) -> Counts:
        """The counts of ``dims`` in the current hour, to add to."""
        hour = int(time.time()) // 3600
        rows = self._hours.get(hour)
        if rows is None:
            rows = self._hours[hour] = {}
        self._dirty.add(hour)
        counts = rows.get(dims)
        if counts is not None:
            return counts
        limit = self.settings.max_rows_per_hour
        if len(rows) >= limit:
            # Fold into the namespace's "(other)" row; past a tenth more, into one row for all.
            folded = Dims(dims.namespace, OTHER, OTHER, OTHER)
            if folded not in rows and len(rows) >= limit + limit // 10:
                folded = Dims(OTHER, OTHER, OTHER, OTHER)
            dims = folded
            counts = rows.get(dims)
            if counts is not None:
                return counts
        counts = rows[dims] = Counts()
        return counts

    def charge_context(self, dims: Dims) -> None:
        """Charge the storage operations of this context to ``dims`` from now on (see ``attribution``)."""
        bind_context(dims, self._add_ops)

    def _add_ops(self, dims: Dims, op_class: str, n: int) -> None:
        counts = self.row(dims)
        field = OP_FIELD[op_class]
        setattr(counts, field, getattr(counts, field) + n)

    async def start(self, storage: Storage) -> None:
        """Flush to ``storage`` from now on, every ``flush_seconds``."""
        self._storage = storage
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-flush")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_seconds)
            with contextlib.suppress(StorageError):  # logged by flush; the counts wait for the next one
                await self.flush()

    async def flush(self) -> int:
        """Write the segment of every hour that changed; the number written.

        Raises ``StorageError`` if a write fails; the hours not written stay marked for the next flush.
        """
        storage = self._storage
        if storage is None or not self.enabled:
            return 0
        async with self._lock:
            if self._attributed is not None:
                self._attributed.sweep()  # operations no request claimed count before they are written
            now = current_hour()
            written = 0
            try:
                for hour in sorted(self._dirty):
                    if hour < now - MAX_UNFLUSHED_HOURS:
                        log.error("dropping the usage counts of %s: not written for a day", hour_label(hour))
                        self._dirty.discard(hour)
                        self._hours.pop(hour, None)
                        continue
                    body = encode_segment(self.replica, hour, self._hours[hour])
                    self._dirty.discard(hour)  # counts added during the write mark it again
                    try:
                        await storage.write(segment_key(hour, self.replica), body, len(body), {}, create_only=False)
                    except BaseException:
                        self._dirty.add(hour)
                        raise
                    written += 1
            except StorageError as exc:
                if not self._failing:
                    log.warning("usage flush failed (the counts are kept for the next one): %s", exc)
                self._failing = True
                raise
            finally:
                bind_current(GATE_DIMS)  # the ledger's own writes are the gate's
            if self._failing:
                log.info("usage flush works again")
                self._failing = False
            for hour in [h for h in self._hours if h < now and h not in self._dirty]:
                del self._hours[hour]
            return written

    async def read(self, since: datetime, until: datetime, *group_bys: Sequence[str]) -> list[UsageTable]:
        """Usage tables from storage, this replica's latest counts flushed first (other replicas' are
        at most ``flush_seconds`` behind). ValueError for an empty range."""
        if self._storage is None:
            raise RuntimeError("the ledger is not started")
        with contextlib.suppress(StorageError):  # logged by flush: the report lacks the last minutes
            await self.flush()
        return await usage_tables(self._storage, since, until, *group_bys)

    async def aclose(self) -> None:
        """Stop flushing periodically and flush one last time (shutdown: SIGTERM, lifespan exit)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except StorageError as exc:
            log.error("the usage counts of this replica since its last flush are lost: %s", exc)
