"""What the ``Storage`` protocol promises, checked on every backend (local, gcs on the emulator)."""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
from datetime import UTC, datetime, timedelta

import pytest

from server.storage import Storage
from server.storage.base import HEAD_BYTES, ObjectReader

pytestmark = pytest.mark.anyio

META = {"output-id": "ab" * 32, "size": "5", "writer": "system:serviceaccount:ci:writer"}


async def read_all(reader: ObjectReader) -> bytes:
    parts = [reader.head]
    if reader.rest is not None:
        parts += [chunk async for chunk in reader.rest]
    return b"".join(parts)


async def test_round_trip(store: Storage) -> None:
    before = datetime.now(UTC) - timedelta(seconds=2)
    assert await store.write("ac/ns/ab/abcd", b"hello", 5, META, create_only=True) is True

    reader = await store.read("ac/ns/ab/abcd")
    assert reader is not None
    assert (reader.head, reader.size, reader.rest) == (b"hello", 5, None)

    info = await store.stat("ac/ns/ab/abcd")
    assert info is not None
    assert (info.key, info.size, dict(info.metadata)) == ("ac/ns/ab/abcd", 5, META)
    assert before <= info.updated <= datetime.now(UTC) + timedelta(seconds=2)


async def test_empty_object(store: Storage) -> None:
    assert await store.write("empty", b"", 0, {}, create_only=True)
    reader = await store.read("empty")
    assert reader is not None
    assert (reader.head, reader.size, reader.rest) == (b"", 0, None)


async def test_miss(store: Storage) -> None:
    assert await store.read("ac/ns/00/missing") is None
    assert await store.stat("ac/ns/00/missing") is None
    assert await store.delete("ac/ns/00/missing") is False
    await store.touch("ac/ns/00/missing")  # ignored
    assert await store.stat("ac/ns/00/missing") is None


async def test_create_only_race_has_one_winner(store: Storage) -> None:
    bodies = [os.urandom(4096) for _ in range(2)]
    results = await asyncio.gather(
        *(store.write("race", body, len(body), {"n": str(n)}, create_only=True) for n, body in enumerate(bodies))
    )
    assert sorted(results) == [False, True]
    winner = results.index(True)

    reader = await store.read("race")
    assert reader is not None and await read_all(reader) == bodies[winner]
    info = await store.stat("race")
    assert info is not None and info.metadata == {"n": str(winner)}
    assert [item.key for item in (await store.list("race")).items] == ["race"]


async def test_create_only_never_replaces(store: Storage) -> None:
    assert await store.write("k", b"first", 5, {"v": "1"}, create_only=True)
    assert await store.write("k", b"second", 6, {"v": "2"}, create_only=True) is False
    reader = await store.read("k")
    assert reader is not None and reader.head == b"first"


async def test_overwrite(store: Storage) -> None:
    assert await store.write("ledger/seg", b"old", 3, {"v": "1"}, create_only=False)
    assert await store.write("ledger/seg", b"newer", 5, {"v": "2"}, create_only=False)
    reader = await store.read("ledger/seg")
    assert reader is not None and (reader.head, reader.size) == (b"newer", 5)
    info = await store.stat("ledger/seg")
    assert info is not None and info.metadata == {"v": "2"}


async def test_large_object_streams_the_rest(store: Storage) -> None:
    data = os.urandom(HEAD_BYTES * 2 + 12345)
    with tempfile.TemporaryFile() as spooled:  # large bodies come as a seekable file
        spooled.write(data)
        spooled.seek(0)
        assert await store.write("big", spooled, len(data), {}, create_only=True)

    reader = await store.read("big")
    assert reader is not None
    assert reader.size == len(data)
    assert reader.head == data[:HEAD_BYTES]
    assert reader.rest is not None
    assert await read_all(reader) == data


async def test_large_object_can_be_abandoned(store: Storage) -> None:
    data = os.urandom(HEAD_BYTES + 1)
    assert await store.write("big", io.BytesIO(data), len(data), {}, create_only=True)
    for _ in range(3):  # abandoning must release whatever the read holds
        reader = await store.read("big")
        assert reader is not None and reader.rest is not None
        await reader.aclose()
    reader = await store.read("big")
    assert reader is not None and await read_all(reader) == data


async def test_object_of_exactly_head_bytes(store: Storage) -> None:
    data = os.urandom(HEAD_BYTES)
    assert await store.write("edge", data, len(data), {}, create_only=True)
    reader = await store.read("edge")
    assert reader is not None
    assert reader.head == data
    assert reader.rest is None or b"".join([c async for c in reader.rest]) == b""


async def test_listing_pages_with_tokens(store: Storage) -> None:
    keys = [f"ac/ns/{n:02d}/entry{n}" for n in range(10)]
    for n, key in enumerate(keys):
        assert await store.write(key, b"x" * n, n, {"n": str(n)}, create_only=True)
    assert await store.write("ac/other/00/entry", b"y", 1, {}, create_only=True)  # outside the prefix

    pages = []
    token = None
    while True:
        page = await store.list("ac/ns/", page_token=token, limit=3)
        pages.append(page.items)
        token = page.next_token
        if token is None:
            break
    assert [len(items) for items in pages] == [3, 3, 3, 1]
    items = [item for items in pages for item in items]
    assert [item.key for item in items] == keys
    assert [item.size for item in items] == list(range(10))
    assert [item.metadata["n"] for item in items] == [str(n) for n in range(10)]
    assert all(item.updated.tzinfo is not None for item in items)


async def test_listing_of_nothing(store: Storage) -> None:
    page = await store.list("nothing/here/")
    assert (page.items, page.next_token) == ([], None)


async def test_bad_page_token(store: Storage) -> None:
    for n in range(3):
        await store.write(f"p/{n}", b"x", 1, {}, create_only=True)
    token = (await store.list("p/", limit=1)).next_token
    assert token is not None
    with pytest.raises(ValueError):
        await store.list("p/", page_token="not-a-token", limit=1)
    with pytest.raises(ValueError):
        await store.list("q/", page_token=token, limit=1)  # made for another listing


async def test_delete(store: Storage) -> None:
    await store.write("gone", b"bye", 3, {}, create_only=True)
    assert await store.delete("gone") is True
    assert await store.read("gone") is None
    assert await store.delete("gone") is False
    assert await store.write("gone", b"again", 5, {}, create_only=True) is True


async def test_touch_moves_custom_time(store: Storage) -> None:
    await store.write("kept", b"data", 4, {}, create_only=True)
    first = await store.stat("kept")
    assert first is not None
    await asyncio.sleep(0.05)
    before = datetime.now(UTC) - timedelta(seconds=1)
    await store.touch("kept")
    touched = await store.stat("kept")
    assert touched is not None and touched.custom_time is not None
    assert before <= touched.custom_time <= datetime.now(UTC) + timedelta(seconds=1)
    if first.custom_time is not None:
        assert touched.custom_time > first.custom_time
    reader = await store.read("kept")
    assert reader is not None and reader.head == b"data"  # a touch changes no bytes


async def test_check(store: Storage) -> None:
    await store.check()
