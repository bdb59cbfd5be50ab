"""The storage vocabulary: what every backend stores, and the one interface the gate depends on.

Backends store opaque objects under ``/``-separated keys, each with a small string-to-string
metadata map. They know nothing of HTTP, identities, namespaces or the entry format: the entry
service (``server/entries.py``) frames the bytes and picks the keys, so every backend holds the
same layout and a new backend is a single small module.

Costs are part of the contract, because cost reports and the "one read per hit" promise rest on
them: ``read`` is exactly one storage read, ``write`` exactly one storage write (a create-only write
that loses the race writes nothing), ``stat`` one metadata read, ``list`` one list call per page.

Errors (everything a backend raises is one of these; convert the library's errors at the
boundary with ``raise ... from exc``)::

    StorageError                 anything the backend could not do
    └── StorageUnavailable       transient: 5xx, timeout, unreachable; the gate answers 503
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol

__all__ = [
    "HEAD_BYTES",
    "Body",
    "ListPage",
    "ObjectInfo",
    "ObjectReader",
    "Storage",
    "StorageError",
    "StorageUnavailable",
]

#: How much of an object ``read`` returns eagerly. Objects up to this size are served from
#: memory in one piece; larger ones stream the rest in chunks so the gate's memory stays bounded.
HEAD_BYTES = 1 << 20

#: A body to write: bytes, or a seekable binary file positioned at its start (large bodies are
#: spooled to disk by the gate and never held in memory whole).
Body = bytes | BinaryIO


class StorageError(Exception):
    """The backend could not do what was asked."""


class StorageUnavailable(StorageError):
    """A transient failure (5xx, timeout, unreachable): worth answering 503, not 500."""


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing or ``stat`` knows of an object without reading it."""

    key: str
    size: int  # stored bytes
    metadata: Mapping[str, str]
    updated: datetime  # when it was written (UTC)
    custom_time: datetime | None = None  # the retention clock that ``touch`` moves (UTC)


@dataclass
class ObjectReader:
    """An object opened by exactly one storage read.

    ``head`` holds the first ``HEAD_BYTES`` (or the whole object); ``rest`` yields what follows,
    and is None when ``head`` is everything. Call ``aclose`` when not reading ``rest`` to the end.
    """

    head: bytes
    size: int  # total stored bytes
    rest: AsyncGenerator[bytes, None] | None = None

    async def aclose(self) -> None:
        if self.rest is not None:
            await self.rest.aclose()


@dataclass(frozen=True)
class ListPage:
    items: list[ObjectInfo]
    next_token: str | None  # opaque; pass back as ``page_token`` for the next page


class Storage(Protocol):
    """One bucket-like store. Every method is safe to call concurrently."""

    #: "local", "gcs", ...: named in metrics and readiness answers.
    name: str

    async def read(self, key: str) -> ObjectReader | None:
        """Open an object with one storage read; None if it does not exist."""
        ...

    async def write(
        self, key: str, body: Body, size: int, metadata: Mapping[str, str], *, create_only: bool
    ) -> bool:
        """Store an object whole or not at all.

        With ``create_only`` an existing object is never replaced: the call returns False and
        writes nothing (two racing writers: exactly one wins). Returns True when written.
        """
        ...

    async def stat(self, key: str) -> ObjectInfo | None:
        """Metadata of an object without its bytes; None if it does not exist."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove an object; False if it was not there."""
        ...

    async def list(self, prefix: str, *, page_token: str | None = None, limit: int = 1000) -> ListPage:
        """Objects whose key starts with ``prefix``, in key order, at most ``limit`` per page.

        Memory is bounded by ``limit``, not by how many objects match. A ``page_token`` that the
        backend did not make raises ``ValueError``.
        """
        ...

    async def touch(self, key: str) -> None:
        """Move the object's retention clock (``custom_time``) to now; a missing object is ignored."""
        ...

    async def check(self) -> None:
        """Raise ``StorageUnavailable`` unless the store answers (readiness)."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...
