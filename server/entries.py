"""Cache entries: how an action's output is keyed, framed, stored and served.

Key layout::

    ac/{namespace}/{action[:2]}/{action}

The namespace comes first so that one namespace is listed, measured and purged by prefix; the
two-hex-digit fan-out keeps local directories and listing pages small.

An entry object is a frame, so that a hit is exactly one storage read whose head carries the
header::

    b"GCE1" | u32 big-endian n | n bytes of header JSON | payload

The header holds ``output_id`` (hex SHA-256 of the decoded output), ``size`` (decoded bytes),
``encoding`` (``identity`` or ``zstd``: how the payload is stored), ``put_time`` (RFC 3339, UTC),
``writer`` (the subject that put it) and ``compute_ms`` (how long go took to produce it, or
null). The same fields are the object's metadata, as strings (``compute_ms`` left out when
null), so listings and stats need no reads.

Puts are create-only: an entry is never replaced, a second put of the same action writes
nothing. A put is checked whole (sizes, and the SHA-256 of the decoded bytes against
``output_id``) before anything is written. A plain body over ``compression.min_bytes`` is stored
zstd-compressed when that saves at least 10%; a zstd body is stored as received when it is
smaller than the plain size. Gets send stored zstd as is to clients that accept it, and decode
it for the others.

Retention: a hit moves the entry's retention clock (``storage.touch``) in the background, at most
once a day per entry and replica, and not in the entry's first day (its write time counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import struct
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio.to_thread

from .bodies import (
    INLINE_CPU_BYTES,
    Receiver,
    Spool,
    compress_spool,
    decompress_bytes,
    decompress_spool,
    decompressed_chunks,
    framed_file,
)
from .config import CompressionSettings, LimitsSettings
from .errors import BadRequest, NotFound, TooLarge
from .storage.base import HEAD_BYTES, Body, ObjectReader, Storage, StorageError

__all__ = [
    "ENTRY_PREFIX",
    "CorruptEntry",
    "EntryHeader",
    "EntryService",
    "Hit",
    "PutResult",
    "Upload",
    "entry_key",
    "namespace_prefix",
    "parse_frame",
]

log = logging.getLogger("gocachegate.entries")

ENTRY_PREFIX = "ac/"
_MAGIC = b"GCE1"
_LENGTH = struct.Struct(">I")
_ENCODINGS = ("identity", "zstd")
_MIN_SAVING = 0.10
_BATCH = 256 << 10  # received bytes handed to a worker thread at a time
_DAY = 86400.0
_TOUCH_MEMORY = 100_000  # entries whose touch is remembered (by key hash: ~12 MB at most)
_TOUCH_PENDING = 10_000  # touches queued at most; beyond, a hit skips (a later one retries)
_TOUCH_PARALLEL = 16


def namespace_prefix(namespace: str) -> str:
    return f"{ENTRY_PREFIX}{namespace}/"


def entry_key(namespace: str, action: str) -> str:
    return f"{ENTRY_PREFIX}{namespace}/{action[:2]}/{action}"


def _rfc3339_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class EntryHeader:
    output_id: str
    size: int
    encoding: str
    put_time: str
    writer: str
    compute_ms: int | None

    def frame_prefix(self) -> bytes:
        header = json.dumps(
            {
                "output_id": self.output_id,
                "size": self.size,
                "encoding": self.encoding,
                "put_time": self.put_time,
                "writer": self.writer,
                "compute_ms": self.compute_ms,
            },
            separators=(",", ":"),
        ).encode()
        return _MAGIC + _LENGTH.pack(len(header)) + header

    def metadata(self) -> dict[str, str]:
        meta = {
            "output_id": self.output_id,
            "size": str(self.size),
            "encoding": self.encoding,
            "put_time": self.put_time,
            "writer": self.writer,
        }
        if self.compute_ms is not None:
            meta["compute_ms"] = str(self.compute_ms)
        return meta


def parse_frame(head: bytes) -> tuple[EntryHeader, int]:
    """The header of a stored entry and where its payload starts; ValueError if it is not one."""
    if len(head) < 8 or head[:4] != _MAGIC:
        raise ValueError("not an entry frame")
    end = 8 + _LENGTH.unpack_from(head, 4)[0]
    if end > len(head):
        raise ValueError("truncated frame header")
    fields = json.loads(head[8:end])
    if not isinstance(fields, dict):
        raise ValueError("frame header is not an object")
    compute_ms = fields.get("compute_ms")
    header = EntryHeader(
        output_id=fields["output_id"],
        size=fields["size"],
        encoding=fields["encoding"],
        put_time=fields["put_time"],
        writer=fields.get("writer", ""),
        compute_ms=compute_ms,
    )
    if (
        not isinstance(header.output_id, str)
        or not isinstance(header.size, int)
        or header.size < 0
        or header.encoding not in _ENCODINGS
        or not isinstance(header.put_time, str)
        or not (compute_ms is None or isinstance(compute_ms, int))
    ):
        raise ValueError("bad frame header fields")
    return header, end


class CorruptEntry(NotFound):
    """A stored entry that cannot be served: answered as a miss, and removed so a put repairs it."""


@dataclass(frozen=True, slots=True)
class Upload:
    """What a put announces about its body (from its headers)."""

    output_id: str
    size: int  # decoded bytes (X-Go-Size)
    encoding: str  # of the body as sent: "identity" or "zstd"
    content_length: int | None
    compute_ms: int | None


@dataclass(frozen=True, slots=True)
class PutResult:
    created: bool
    received: int  # body bytes on the wire (0 when the entry was already there: nothing was read)
    stored_size: int | None = None  # bytes of the stored object
    encoding: str | None = None  # of the stored payload


@dataclass(frozen=True, slots=True)
class Hit:
    """An entry to send: ``length`` bytes, either whole in ``body`` or streamed by ``chunks``."""

    header: EntryHeader
    content_encoding: str | None  # "zstd" when sent compressed
    length: int
    body: bytes | None = None
    chunks: AsyncIterator[bytes] | None = None


async def _payload_chunks(first: bytes, reader: ObjectReader) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        if reader.rest is not None:
            async for chunk in reader.rest:
                yield chunk
    finally:
        await reader.aclose()


class EntryService:
    def __init__(self, storage: Storage, limits: LimitsSettings, compression: CompressionSettings) -> None:
        self.storage = storage
        self.limits = limits
        self.compression = compression
        # hash(key) -> when the entry is due for its next touch; a hash collision at worst
        # skips one touch for a day.
        self._touch_due: OrderedDict[int, float] = OrderedDict()
        self._touches: set[asyncio.Task[None]] = set()
        self._touch_slots = asyncio.Semaphore(_TOUCH_PARALLEL)

    # -- get ---------------------------------------------------------------------------------------

    async def get(self, namespace: str, action: str, *, accept_zstd: bool) -> Hit | None:
        """The entry, or None on a miss; raises CorruptEntry for one that cannot be served."""
        key = entry_key(namespace, action)
        reader = await self.storage.read(key)
        if reader is None:
            return None
        try:
            header, start = parse_frame(reader.head)
            stored = reader.size - start
            if header.encoding == "identity" and stored != header.size:
                raise ValueError(f"payload is {stored} bytes, header says {header.size}")
        except (ValueError, KeyError, TypeError) as exc:
            await reader.aclose()
            await self._remove_corrupt(key, exc)
            raise CorruptEntry("no such entry (the stored one was unreadable and has been removed)") from exc
        self._maybe_touch(key, header.put_time)
        first = reader.head[start:]
        if header.encoding == "identity" or accept_zstd:
            encoding = "zstd" if header.encoding == "zstd" else None
            if reader.rest is None:
                return Hit(header, encoding, stored, body=first)
            return Hit(header, encoding, stored, chunks=_payload_chunks(first, reader))
        if reader.rest is None and header.size <= HEAD_BYTES:
            try:
                if len(first) > INLINE_CPU_BYTES:
                    plain = await anyio.to_thread.run_sync(decompress_bytes, first, header.size)
                else:
                    plain = decompress_bytes(first, header.size)
                if len(plain) != header.size:
                    raise ValueError(f"payload decodes to {len(plain)} bytes, header says {header.size}")
            except Exception as exc:  # zstandard raises ZstdError, and plain Exception for some errors
                await self._remove_corrupt(key, exc)
                raise CorruptEntry("no such entry (the stored one was unreadable and has been removed)") from exc
            return Hit(header, None, header.size, body=plain)
        return Hit(header, None, header.size, chunks=decompressed_chunks(_payload_chunks(first, reader), header.size))

    async def verify(self, namespace: str, action: str) -> bool | None:
        """Read an entry whole and check it against its header (size, SHA-256 of the decoded bytes);
        remove it if it fails. True: whole; False: it was corrupt and is gone; None: no such entry.
        A client's say-so never removes an entry: this check does (one storage read)."""
        try:
            hit = await self.get(namespace, action, accept_zstd=False)
        except CorruptEntry:
            return False
        if hit is None:
            return None
        digest = hashlib.sha256()
        size = 0
        try:
            if hit.body is not None:
                digest.update(hit.body)
                size = len(hit.body)
            else:
                assert hit.chunks is not None
                async for chunk in hit.chunks:
                    digest.update(chunk)
                    size += len(chunk)
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - zstandard raises ZstdError, and plain Exception for some
            await self._remove_corrupt(entry_key(namespace, action), exc)
            return False
        if size != hit.header.size or digest.hexdigest() != hit.header.output_id:
            await self._remove_corrupt(entry_key(namespace, action), ValueError("digest or size mismatch"))
            return False
        return True

    async def _remove_corrupt(self, key: str, exc: BaseException) -> None:
        log.warning("removing unreadable entry %s: %s", key, exc)
        with contextlib.suppress(StorageError):
            await self.storage.delete(key)

    def _maybe_touch(self, key: str, put_time: str) -> None:
        now = time.time()
        slot = hash(key)
        due = self._touch_due.get(slot)
        if due is None:
            try:
                due = datetime.fromisoformat(put_time).timestamp() + _DAY
            except ValueError:
                due = now
        if now >= due:
            if len(self._touches) >= _TOUCH_PENDING:
                return
            due = now + _DAY
            task = asyncio.get_running_loop().create_task(self._touch(key))
            self._touches.add(task)
            task.add_done_callback(self._touches.discard)
        self._touch_due[slot] = due
        self._touch_due.move_to_end(slot)
        if len(self._touch_due) > _TOUCH_MEMORY:
            self._touch_due.popitem(last=False)

    async def _touch(self, key: str) -> None:
        async with self._touch_slots:
            try:
                await self.storage.touch(key)
            except StorageError as exc:
                log.info("retention touch of %s failed: %s", key, exc)
                self._touch_due.pop(hash(key), None)  # a later hit tries again

    async def aclose(self) -> None:
        """Stop background touches (they are best effort: a missed one is retried by a later hit)."""
        for task in list(self._touches):
            task.cancel()
        await asyncio.gather(*self._touches, return_exceptions=True)

    # -- put ---------------------------------------------------------------------------------------

    async def put(
        self, namespace: str, action: str, upload: Upload, body: AsyncIterator[bytes], writer: str
    ) -> PutResult:
        """Store an entry unless it exists. Raises BadRequest or TooLarge, writing nothing."""
        limit = self.limits.max_entry_bytes
        if upload.size > limit:
            raise TooLarge(f"X-Go-Size {upload.size} is over the limit of {limit} bytes")
        if upload.content_length is not None:
            if upload.content_length > limit:
                raise TooLarge(f"Content-Length {upload.content_length} is over the limit of {limit} bytes")
            if upload.encoding == "identity" and upload.content_length != upload.size:
                raise BadRequest("Content-Length does not match X-Go-Size")
        key = entry_key(namespace, action)
        if await self.storage.stat(key) is not None:
            return PutResult(created=False, received=0)
        received = await self._receive(upload, body)
        try:
            payload, encoding = await self._stored_form(received)
            try:
                header = EntryHeader(
                    output_id=upload.output_id,
                    size=upload.size,
                    encoding=encoding,
                    put_time=_rfc3339_now(),
                    writer=writer,
                    compute_ms=upload.compute_ms,
                )
                prefix = header.frame_prefix()
                size = len(prefix) + payload.size
                data = payload.in_memory
                frame: Body = prefix + data if data is not None else framed_file(prefix, payload.reader(), payload.size)
                created = await self.storage.write(key, frame, size, header.metadata(), create_only=True)
            finally:
                if payload is not received.spool:
                    payload.close()
        finally:
            received.close()
        return PutResult(created=created, received=received.received, stored_size=size, encoding=encoding)

    async def _receive(self, upload: Upload, body: AsyncIterator[bytes]) -> Receiver:
        """The body spooled and checked; small batches are processed inline, large in a thread."""
        receiver = Receiver(
            encoding=upload.encoding,
            size=upload.size,
            output_id=upload.output_id,
            max_bytes=self.limits.max_entry_bytes,
        )
        try:
            batch: list[bytes] = []
            batched = 0
            async for chunk in body:
                receiver.count(len(chunk))
                batch.append(chunk)
                batched += len(chunk)
                if batched >= _BATCH:
                    await anyio.to_thread.run_sync(receiver.feed, b"".join(batch))
                    batch, batched = [], 0
            if batched > INLINE_CPU_BYTES:
                await anyio.to_thread.run_sync(receiver.feed, b"".join(batch))
            elif batched:
                receiver.feed(b"".join(batch))
            receiver.finish()
        except BaseException:
            receiver.close()
            raise
        return receiver

    async def _stored_form(self, received: Receiver) -> tuple[Spool, str]:
        """The payload to store and its encoding: whichever of plain and zstd is worth keeping."""
        spool = received.spool
        if received.encoding == "zstd":
            if spool.size < received.size:
                return spool, "zstd"
            return await anyio.to_thread.run_sync(decompress_spool, spool), "identity"
        if spool.size <= self.compression.min_bytes:
            return spool, "identity"
        level = self.compression.level
        if spool.size > INLINE_CPU_BYTES:
            packed = await anyio.to_thread.run_sync(compress_spool, spool, level)
        else:
            packed = compress_spool(spool, level)
        if packed.size <= spool.size * (1 - _MIN_SAVING):
            return packed, "zstd"
        packed.close()
        return spool, "identity"
