"""Entry bodies in motion: spooled, checked, compressed and decompressed with bounded memory.

No function here holds a whole large body in memory: bodies up to ``SPOOL_MEMORY`` stay in a
buffer, larger ones go to an anonymous temp file; zstd streams are decoded in pieces of
``_PIECE`` bytes, so a small "zip bomb" costs CPU up to the size its sender declared and never
memory. The CPU-heavy steps are plain functions: the caller decides what runs in a thread.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import threading
from collections.abc import AsyncIterator
from typing import BinaryIO

import anyio.from_thread
import anyio.to_thread
import zstandard

from .errors import BadRequest, TooLarge

__all__ = [
    "INLINE_CPU_BYTES",
    "SPOOL_MEMORY",
    "Receiver",
    "Spool",
    "compress_spool",
    "decompress_bytes",
    "decompress_spool",
    "decompressed_chunks",
    "framed_file",
]

#: Bodies up to this size are buffered in memory; larger ones are spooled to a temp file.
SPOOL_MEMORY = 1 << 20
#: CPU work (hashing, compression) on more bytes than this runs in a worker thread.
INLINE_CPU_BYTES = 64 << 10
#: Largest zstd window accepted: what levels up to 19 use; a frame asking for more is refused.
MAX_WINDOW = 1 << 23
_PIECE = 256 << 10
_COPY = 1 << 20

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """One compression context per thread and level: contexts are not thread-safe, and costly to make."""
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    cctx = cache.get(level)
    if cctx is None:
        cctx = cache[level] = zstandard.ZstdCompressor(level=level)
    return cctx


def _decompressor() -> zstandard.ZstdDecompressor:
    """For one-shot calls only: a stream that outlives the call (and may hop threads) needs its own."""
    dctx: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if dctx is None:
        dctx = _local.decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
    return dctx


class Spool:
    """Bytes written once, then read back: in memory up to ``SPOOL_MEMORY``, else a temp file."""

    def __init__(self) -> None:
        self._memory = bytearray()
        self._file: BinaryIO | None = None
        self.size = 0

    def write(self, data: bytes) -> None:
        if self._file is None and len(self._memory) + len(data) <= SPOOL_MEMORY:
            self._memory += data
        else:
            if self._file is None:
                self._file = tempfile.TemporaryFile()  # noqa: SIM115 - owned by the spool, closed in close()
                self._file.write(self._memory)
                self._memory = bytearray()
            self._file.write(data)
        self.size += len(data)

    @property
    def in_memory(self) -> bytes | None:
        return bytes(self._memory) if self._file is None else None

    def reader(self) -> BinaryIO:
        """The contents as a file positioned at the start."""
        if self._file is None:
            return io.BytesIO(self._memory)
        self._file.flush()
        self._file.seek(0)
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._memory = bytearray()


class _DecodedSink:
    """Where a zstd stream writer puts decoded bytes: hashed, counted, never kept."""

    def __init__(self, receiver: Receiver) -> None:
        self._receiver = receiver

    def write(self, data: bytes) -> int:
        self._receiver.take_decoded(data)
        return len(data)


class Receiver:
    """Takes an upload as it arrives and checks it: wire size, decoded size and SHA-256.

    The bytes are spooled as received (compressed or not); ``feed`` is CPU work the caller may
    run in a thread, ``count`` is cheap and runs first so limits fire before any work is done.
    """

    def __init__(self, *, encoding: str, size: int, output_id: str, max_bytes: int) -> None:
        self.encoding = encoding
        self.size = size
        self.output_id = output_id
        self.max_bytes = max_bytes
        self.received = 0
        self.decoded = 0
        self.spool = Spool()
        self._sha = hashlib.sha256()
        self._writer = (
            zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).stream_writer(_DecodedSink(self), write_size=_PIECE)  # type: ignore[arg-type]
            if encoding == "zstd"
            else None
        )

    def count(self, n: int) -> None:
        self.received += n
        if self.received > self.max_bytes:
            raise TooLarge(f"body is over the limit of {self.max_bytes} bytes")
        if self._writer is None and self.received > self.size:
            raise BadRequest("body is longer than X-Go-Size")

    def feed(self, data: bytes) -> None:
        self.spool.write(data)
        if self._writer is None:
            self.take_decoded(data)
            return
        try:
            self._writer.write(data)
        except zstandard.ZstdError as exc:
            raise BadRequest(f"bad zstd body: {exc}") from exc

    def take_decoded(self, data: bytes) -> None:
        self.decoded += len(data)
        if self.decoded > self.size:
            raise BadRequest("decoded size exceeds X-Go-Size")
        self._sha.update(data)

    def finish(self) -> None:
        """Raise unless the whole body arrived and matches X-Go-Size and X-Go-Output-Id."""
        if self.decoded != self.size:
            what = "decoded body" if self._writer is not None else "body"
            raise BadRequest(f"{what} is {self.decoded} bytes, X-Go-Size says {self.size}")
        if self._sha.hexdigest() != self.output_id:
            raise BadRequest("digest mismatch: SHA-256 of the body is not X-Go-Output-Id")

    def close(self) -> None:
        """Release the spool and the zstd context. The context and its sink refer back to this
        receiver, and zstandard's objects are invisible to the garbage collector: without the
        explicit break every zstd upload leaked its decoder (a window and 256 KiB of buffers)."""
        self.spool.close()
        self._writer = None


def compress_spool(spool: Spool, level: int) -> Spool:
    """A zstd copy of ``spool`` (blocking: run large ones in a thread)."""
    out = Spool()
    try:
        data = spool.in_memory
        if data is not None:
            out.write(_compressor(level).compress(data))
            return out
        src = spool.reader()
        with _compressor(level).stream_reader(src, size=spool.size, read_size=_COPY, closefd=False) as reader:
            while chunk := reader.read(_COPY):
                out.write(chunk)
        return out
    except BaseException:
        out.close()
        raise


def decompress_spool(spool: Spool) -> Spool:
    """The decoded copy of a checked zstd ``spool`` (blocking: run it in a thread)."""
    out = Spool()
    try:
        with _decompressor().stream_reader(
            spool.reader(), read_size=_COPY, read_across_frames=True, closefd=False
        ) as reader:
            while chunk := reader.read(_COPY):
                out.write(chunk)
        return out
    except BaseException:
        out.close()
        raise


def decompress_bytes(data: bytes, size: int) -> bytes:
    """Decode a small stored zstd payload whose decoded ``size`` is known."""
    with _decompressor().stream_reader(data, read_across_frames=True) as reader:
        return reader.read(size + 1)


class _Pull:
    """A blocking file-like over an async iterator, read from a worker thread.

    Lets zstd's stream reader pull compressed input on demand, so decoding emits bounded pieces
    whatever the compression ratio.
    """

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    async def _next(self) -> bytes:
        return await anext(self._chunks)

    def read(self, n: int = -1) -> bytes:
        while not self._buffer:
            try:
                self._buffer = anyio.from_thread.run(self._next)
            except StopAsyncIteration:
                return b""
        if n < 0 or n >= len(self._buffer):
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data


async def decompressed_chunks(compressed: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """Decode a stored zstd stream into pieces of at most 256 KiB; raises ValueError if the
    decoded length is not ``size`` (the caller has already promised ``size`` to the client)."""
    source = _Pull(compressed)
    dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
    reader = dctx.stream_reader(source, read_size=_PIECE, read_across_frames=True, closefd=False)  # type: ignore[arg-type]
    produced = 0
    try:
        while produced <= size:
            piece: bytes = await anyio.to_thread.run_sync(reader.read, _PIECE)
            if not piece:
                break
            produced += len(piece)
            yield piece
    finally:
        reader.close()  # type: ignore[no-untyped-call]
    if produced != size:
        raise ValueError(f"stored entry decodes to {produced} bytes, its header says {size}")


class _Framed(io.RawIOBase):
    """A header followed by a file's contents, read as one seekable file without copying."""

    def __init__(self, prefix: bytes, payload: BinaryIO, payload_size: int) -> None:
        super().__init__()
        self._prefix = prefix
        self._payload = payload
        self._size = len(prefix) + payload_size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        if self._pos < len(self._prefix):
            part = self._prefix[self._pos : self._pos + len(view)]
            view[: len(part)] = part
            done = len(part)
        if done < len(view) and self._pos + done < self._size:
            self._payload.seek(self._pos + done - len(self._prefix))
            got = self._payload.readinto(view[done:])  # type: ignore[attr-defined]
            done += got or 0
        self._pos += done
        return done


def framed_file(prefix: bytes, payload: BinaryIO, payload_size: int) -> BinaryIO:
    """``prefix`` then ``payload`` as one buffered, seekable binary file."""
    return io.BufferedReader(_Framed(prefix, payload, payload_size), buffer_size=_COPY)
