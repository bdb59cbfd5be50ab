"""The streamed prefetch: many entries in one answer, read from storage many at a time.

go asks its helper for entries about two at a time, so a remote-warm build pays one storage
latency per entry, one after the other. The helper instead posts the ids its command is about to
need (from the command's manifest, ``server/manifests.py``) and this module answers with every
one that exists, in one streamed response: up to ``parallel`` entries are read from storage at
once (each through ``EntryService.get``: one storage read, or none on a hot-tier hit), and sent
as they complete, roughly in the order asked.

Memory stays bounded: an entry holds its slot from the start of its read until its last byte is
sent, so at most ``parallel`` entries are open, each at most ``HEAD_BYTES`` in memory (larger
ones stream their rest from storage while being sent). Small frames are batched into writes of
about 64 KiB. A client that goes away cancels every read still running.

The stream (the helper's ``cacheprog/prefetch.py`` reads it)::

    b"GCP1" frame* b"Z" u32(entries sent)
    frame = b"E" action(32) output(32) u64 size, i64 put-time ms, i64 compute ms (-1: none),
                 u8 encoding (0 identity, 1 zstd), u64 length, payload(length)
          | b"M" action(32)   no such entry
          | b"S" action(32)   not sent: storage failed or the entry is unreadable; ask for it alone

Payloads go as stored (zstd stays zstd): the helper decodes and checks every one against its
output id before go sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from .entries import CorruptEntry, EntryService, Hit
from .errors import BadRequest
from .manifests import MAX_IDS
from .storage.base import StorageError

__all__ = ["MAGIC", "PARALLEL", "PrefetchCounts", "parse_ids", "stream_entries"]

log = logging.getLogger("gocachegate.prefetch")

MAGIC = b"GCP1"
#: Storage reads in flight per prefetch.
PARALLEL = 64
_ENTRY = struct.Struct(">c32s32sQqqBQ")
_END = struct.Struct(">cI")
_BATCH = 64 << 10


def parse_ids(body: bytes) -> list[bytes]:
    """The 32-byte action ids of a prefetch request; raises BadRequest."""
    if len(body) % 32:
        raise BadRequest("prefetch body is not whole 32-byte action ids")
    if len(body) // 32 > MAX_IDS:
        raise BadRequest(f"prefetch asks for more than {MAX_IDS} entries")
    return [body[i : i + 32] for i in range(0, len(body), 32)]


@dataclass
class PrefetchCounts:
    """What one stream did, for the caller's metrics (filled while it runs)."""

    sent: int = 0
    missing: int = 0
    skipped: int = 0
    corrupt: int = 0
    bytes: int = 0


def _put_ms(put_time: str) -> int:
    try:
        return int(datetime.fromisoformat(put_time.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


def _entry_frame(action: bytes, hit: Hit) -> bytes:
    header = hit.header
    return _ENTRY.pack(
        b"E",
        action,
        bytes.fromhex(header.output_id),
        header.size,
        _put_ms(header.put_time),
        -1 if header.compute_ms is None else header.compute_ms,
        1 if hit.content_encoding == "zstd" else 0,
        hit.length,
    )


_Result = Hit | None | BaseException


async def stream_entries(
    entries: EntryService, namespace: str, actions: list[bytes], counts: PrefetchCounts, *, parallel: int = PARALLEL
) -> AsyncIterator[bytes]:
    """The prefetch stream of ``actions`` (see the module docstring)."""
    slots = asyncio.Semaphore(parallel)
    done: asyncio.Queue[tuple[bytes, _Result]] = asyncio.Queue()
    reads: set[asyncio.Task[None]] = set()

    async def read(action: bytes) -> None:
        result: _Result
        try:
            result = await entries.get(namespace, action.hex(), accept_zstd=True)
        except (CorruptEntry, StorageError) as exc:
            result = exc
        except Exception as exc:  # a bug: that entry is skipped, the stream goes on
            log.error("prefetch: reading %s failed", action.hex(), exc_info=exc)
            result = exc
        done.put_nowait((action, result))

    async def start_reads() -> None:
        for action in actions:
            await slots.acquire()  # released once the entry is sent
            task = asyncio.create_task(read(action))
            reads.add(task)
            task.add_done_callback(reads.discard)

    starter = asyncio.create_task(start_reads())
    batch = bytearray(MAGIC)
    try:
        for _ in range(len(actions)):
            action, result = await done.get()
            try:
                if isinstance(result, Hit):
                    batch += _entry_frame(action, result)
                    counts.sent += 1
                    counts.bytes += result.length
                    if result.body is not None:
                        batch += result.body
                    else:
                        assert result.chunks is not None
                        yield bytes(batch)
                        batch.clear()
                        try:
                            async for chunk in result.chunks:
                                yield chunk
                        finally:
                            await _close(result.chunks)
                elif result is None:
                    batch += b"M" + action
                    counts.missing += 1
                else:
                    batch += b"S" + action
                    counts.skipped += 1
                    if isinstance(result, CorruptEntry):
                        counts.corrupt += 1
                    elif isinstance(result, StorageError):
                        log.warning("prefetch: reading %s failed: %s", action.hex(), result)
            finally:
                slots.release()
            if len(batch) >= _BATCH or (done.empty() and batch):
                yield bytes(batch)
                batch.clear()
        batch += _END.pack(b"Z", counts.sent)
        yield bytes(batch)
    finally:
        starter.cancel()
        for task in list(reads):
            task.cancel()
        await asyncio.gather(starter, *reads, return_exceptions=True)
        while not done.empty():  # read but never sent: close their streams
            _, result = done.get_nowait()
            if isinstance(result, Hit) and result.chunks is not None:
                await _close(result.chunks)


async def _close(chunks: AsyncIterator[bytes]) -> None:
    """Close an entry's stream (its storage response) whether or not it was read to the end."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
