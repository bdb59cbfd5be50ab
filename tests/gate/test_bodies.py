"""The byte plumbing of puts and gets: spooling, framing a spooled payload, bounded decoding."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator

import pytest
import zstandard

from server.bodies import SPOOL_MEMORY, Receiver, Spool, decompressed_chunks, framed_file
from server.errors import BadRequest


def test_spool_moves_to_a_file_past_the_memory_bound() -> None:
    spool = Spool()
    spool.write(b"a" * SPOOL_MEMORY)
    assert spool.in_memory is not None
    spool.write(b"b")
    assert spool.in_memory is None and spool.size == SPOOL_MEMORY + 1
    assert spool.reader().read() == b"a" * SPOOL_MEMORY + b"b"
    spool.close()


def test_framed_file_reads_seeks_and_measures_like_one_file() -> None:
    prefix, payload = b"HEADER", os.urandom(100_000)
    framed = framed_file(prefix, io.BytesIO(payload), len(payload))
    whole = prefix + payload
    assert framed.seek(0, io.SEEK_END) == len(whole)
    framed.seek(3)
    assert framed.tell() == 3
    assert framed.read(10) == whole[3:13]  # across the prefix boundary
    framed.seek(0)
    pieces = []
    while chunk := framed.read(7777):
        pieces.append(chunk)
    assert b"".join(pieces) == whole


def test_receiver_stops_a_bomb_at_the_declared_size() -> None:
    bomb = zstandard.ZstdCompressor().compress(bytes(64 << 20))
    receiver = Receiver(encoding="zstd", size=1000, output_id="0" * 64, max_bytes=1 << 30)
    with pytest.raises(BadRequest, match="decoded size exceeds X-Go-Size"):
        receiver.feed(bomb)
    assert receiver.decoded <= 1000 + (256 << 10)  # at most one decoded piece past the limit
    receiver.close()


@pytest.mark.anyio
async def test_decompressed_chunks_are_bounded_pieces() -> None:
    plain = bytes(8 << 20)
    packed = zstandard.ZstdCompressor().compress(plain)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(packed), 1000):
            yield packed[i : i + 1000]

    sizes = [len(piece) async for piece in decompressed_chunks(chunks(), len(plain))]
    assert sum(sizes) == len(plain) and max(sizes) <= 256 << 10


@pytest.mark.anyio
async def test_decompressed_chunks_refuse_a_wrong_size() -> None:
    packed = zstandard.ZstdCompressor().compress(b"x" * 5000)

    async def chunks() -> AsyncIterator[bytes]:
        yield packed

    with pytest.raises(ValueError, match="decodes to 5000 bytes"):
        async for _ in decompressed_chunks(chunks(), 4000):
            pass
