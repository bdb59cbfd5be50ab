"""Storage operations charged to the request that caused them.

``AttributedStorage`` wraps the real backend (innermost, so that only calls that reach the backend
count, whatever caches sit above it) and records each call's operation class in an ``OpTally`` held
in a context variable. The first call of a task creates the tally; the request's usage hook then
*binds* it to the request's ``Dims`` (``bind_current``), which adds what it holds to the ledger and
forwards every later call made in that context, such as the retention touch a hit starts in the
background (a task created from the request copies its context, tally included). A tally nobody
bound when its task ends (readiness probes, admin listings, the ledger's own writes) is charged to
the namespace of the entry it touched (subject ``(gate)``), or to ``GATE_DIMS`` for keys outside
``ac/``. So every call is counted exactly once, and the hit path pays one context lookup.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextvars import ContextVar

from ..entries import ENTRY_PREFIX
from ..storage.base import Body, ListPage, ObjectInfo, ObjectReader, Storage
from ..storage.metered import OP_CLASS
from .counters import GATE, GATE_DIMS, Dims

__all__ = ["AttributedStorage", "OpSink", "OpTally", "bind_context", "bind_current"]

#: Where a bound tally's operations go: ``sink(dims, op_class, n)``.
OpSink = Callable[[Dims, str, int], None]


class OpTally:
    """Operations of one request: held until bound, then forwarded."""

    __slots__ = ("_held", "_sink", "dims")

    def __init__(self, sink: OpSink) -> None:
        self._sink = sink
        self._held: dict[tuple[str, str | None], int] = {}  # (op class, namespace of the key) -> calls
        self.dims: Dims | None = None

    def record(self, op_class: str, key: str) -> None:
        if self.dims is not None:
            self._sink(self.dims, op_class, 1)
            return
        namespace = _namespace_of(key)
        self._held[op_class, namespace] = self._held.get((op_class, namespace), 0) + 1

    def bind(self, dims: Dims) -> None:
        if self.dims is not None:
            return
        self.dims = dims
        held, self._held = self._held, {}
        for (op_class, _), n in held.items():
            self._sink(dims, op_class, n)

    def settle(self, _task: object = None) -> None:
        """At the end of the task that made it, if no request claimed it: charge the namespaces of the
        entries it touched, and the gate for the rest."""
        if self.dims is not None:
            return
        held, self._held = self._held, {}
        for (op_class, namespace), n in held.items():
            self._sink(GATE_DIMS if namespace is None else Dims(namespace, GATE, "", ""), op_class, n)
        self.dims = GATE_DIMS


def _namespace_of(key: str) -> str | None:
    """``ac/{ns}/...`` -> ``ns``; None for any other key (the ledger's, a listing of everything)."""
    if not key.startswith(ENTRY_PREFIX):
        return None
    namespace, slash, _ = key[len(ENTRY_PREFIX) :].partition("/")
    return namespace if namespace and slash else None


_current: ContextVar[OpTally | None] = ContextVar("gocachegate_usage_ops", default=None)


def bind_current(dims: Dims) -> None:
    """Charge the operations of the running request (so far, and later in its context) to ``dims``.

    The context forgets the tally, so that a keep-alive client whose requests share one context (as
    in-process test clients do) starts the next request afresh.
    """
    tally = _current.get()
    if tally is not None:
        _current.set(None)
        tally.bind(dims)


def bind_context(dims: Dims, sink: OpSink) -> None:
    """Charge every operation from now on in this context, and in the tasks it starts later (a
    streamed answer's reads), to ``dims``; what it did so far as well."""
    bind_current(dims)
    tally = OpTally(sink)
    tally.bind(dims)
    _current.set(tally)


class AttributedStorage:
    """Implements ``Storage`` by delegating to ``inner`` and tallying each call's operation class."""

    def __init__(self, inner: Storage, sink: OpSink) -> None:
        self.inner = inner
        self.name = inner.name
        self._sink = sink

    def _record(self, op: str, key: str = "") -> None:
        tally = _current.get()
        if tally is None:
            tally = OpTally(self._sink)
            _current.set(tally)
            task = asyncio.current_task()
            if task is None:  # not in a task (never in the gate): nobody can bind it later
                tally.settle()
            else:
                task.add_done_callback(tally.settle)
        tally.record(OP_CLASS[op], key)

    async def read(self, key: str) -> ObjectReader | None:
        self._record("read", key)
        return await self.inner.read(key)

    async def write(self, key: str, body: Body, size: int, metadata: Mapping[str, str], *, create_only: bool) -> bool:
        self._record("write", key)
        return await self.inner.write(key, body, size, metadata, create_only=create_only)

    async def stat(self, key: str) -> ObjectInfo | None:
        self._record("stat", key)
        return await self.inner.stat(key)

    async def delete(self, key: str) -> bool:
        self._record("delete", key)
        return await self.inner.delete(key)

    async def list(self, prefix: str, *, page_token: str | None = None, limit: int = 1000) -> ListPage:
        self._record("list", prefix)
        return await self.inner.list(prefix, page_token=page_token, limit=limit)

    async def touch(self, key: str) -> None:
        self._record("touch", key)
        await self.inner.touch(key)

    async def check(self) -> None:
        self._record("check")
        await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()
