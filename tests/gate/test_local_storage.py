"""The local backend's own promises: keys never leave the root, key-ordered paging, atomic
create-only writes, the mtime retention clock, no leaked descriptors, and reads that never wait
for the disk on the event loop where the filesystem can tell."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

from server.storage.base import HEAD_BYTES, StorageError, StorageUnavailable
from server.storage.local import LocalStorage

pytestmark = pytest.mark.anyio


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "root", fsync=False)


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize(
    "key", ["../escape", "a/../../escape", "/etc/passwd", "a//b", "a/./b", "", "a/", "sp ace", "a/b\\c", "ü"]
)
async def test_bad_keys_are_refused_before_the_filesystem(tmp_path: Path, store: LocalStorage, key: str) -> None:
    before = tree(tmp_path)
    with pytest.raises(ValueError, match="bad storage key"):
        await store.write(key, b"x", 1, {}, create_only=True)
    for call in (store.read, store.stat, store.delete, store.touch):
        with pytest.raises(ValueError, match="bad storage key"):
            await call(key)
    assert tree(tmp_path) == before


async def test_list_pages_in_key_order(store: LocalStorage) -> None:
    # Names chosen so that directory order and string order would differ if done naively.
    keys = ["a-c", "a/b", "a/b0", "a0", "a.b/x", "ac/ns/00/k1", "ac/ns/ff/k2", "ac/ns2/0a/k3", "b", "A"]
    for key in keys:
        assert await store.write(key, key.encode(), len(key), {"k": key}, create_only=True)
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = await store.list("", page_token=token, limit=3)
        assert len(page.items) <= 3
        seen += [item.key for item in page.items]
        pages += 1
        token = page.next_token
        if token is None:
            break
    assert seen == sorted(keys)
    assert pages == 4  # 10 keys, 3 a page, and no empty last page
    assert [i.key for i in (await store.list("ac/ns/")).items] == ["ac/ns/00/k1", "ac/ns/ff/k2"]
    assert [i.key for i in (await store.list("ac/ns")).items] == ["ac/ns/00/k1", "ac/ns/ff/k2", "ac/ns2/0a/k3"]
    assert [i.key for i in (await store.list("a/b")).items] == ["a/b", "a/b0"]
    assert (await store.list("zz/")).items == []
    info = (await store.list("a-c")).items[0]
    assert (info.size, dict(info.metadata)) == (3, {"k": "a-c"})


async def test_list_skips_temp_files_and_foreign_names(store: LocalStorage) -> None:
    await store.write("d/real", b"1", 1, {}, create_only=True)
    (store.root / "d" / ".~tmp-abc").write_bytes(b"partial")
    (store.root / "d" / "has space").write_bytes(b"foreign")
    assert [i.key for i in (await store.list("")).items] == ["d/real"]


async def test_bad_page_tokens(store: LocalStorage) -> None:
    await store.write("p/a", b"1", 1, {}, create_only=True)
    await store.write("p/b", b"1", 1, {}, create_only=True)
    await store.write("q/a", b"1", 1, {}, create_only=True)
    page = await store.list("p/", limit=1)
    assert page.next_token is not None
    with pytest.raises(ValueError, match="bad page token"):
        await store.list("p/", page_token="%%%not base64")
    with pytest.raises(ValueError, match="bad page token"):
        await store.list("q/", page_token=page.next_token)  # made for another prefix
    assert [i.key for i in (await store.list("p/", page_token=page.next_token)).items] == ["p/b"]


async def test_create_only_keeps_the_first_and_overwrite_replaces(store: LocalStorage) -> None:
    assert await store.write("k", b"first", 5, {"v": "1"}, create_only=True) is True
    assert await store.write("k", b"second", 6, {"v": "2"}, create_only=True) is False
    reader = await store.read("k")
    assert reader is not None and reader.head == b"first"
    assert await store.write("k", b"second", 6, {"v": "2"}, create_only=False) is True
    info = await store.stat("k")
    assert info is not None and dict(info.metadata) == {"v": "2"} and info.size == 6
    assert sorted(os.listdir(store.root)) == ["k"]  # no temp files left behind


async def test_write_checks_the_size(store: LocalStorage) -> None:
    with pytest.raises(ValueError, match="size"):
        await store.write("k", b"four", 5, {}, create_only=True)
    assert await store.stat("k") is None and os.listdir(store.root) == []


async def test_fsync_on(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "durable", fsync=True)
    assert await store.write("a/b", b"kept", 4, {}, create_only=True)
    reader = await store.read("a/b")
    assert reader is not None and reader.head == b"kept"


async def test_touch_moves_custom_time(store: LocalStorage) -> None:
    await store.write("t", b"x", 1, {}, create_only=True)
    info = await store.stat("t")
    assert info is not None and info.custom_time is None
    os.utime(store.root / "t", ns=(1, 1))  # as if written long ago, then touched
    await store.touch("t")
    info = await store.stat("t")
    assert info is not None and info.custom_time is not None and info.custom_time > info.updated
    await store.touch("missing")  # ignored


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_large_objects_stream_and_release_their_descriptor(store: LocalStorage) -> None:
    body = os.urandom(HEAD_BYTES * 2 + 123)
    await store.write("big", body, len(body), {}, create_only=True)
    before = open_fds()
    reader = await store.read("big")
    assert reader is not None and reader.rest is not None and len(reader.head) == HEAD_BYTES
    assert reader.head + b"".join([c async for c in reader.rest]) == body
    assert open_fds() == before
    reader = await store.read("big")  # abandoned before reading the rest
    assert reader is not None
    await reader.aclose()
    assert open_fds() == before


async def test_unusable_root_fails_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError) as caught:
        LocalStorage(blocker / "store")
    assert str(caught.value) == f"storage.path {blocker / 'store'}: Not a directory"


async def test_check_reports_a_vanished_root(store: LocalStorage) -> None:
    await store.check()
    os.rmdir(store.root)
    with pytest.raises(StorageUnavailable):
        await store.check()


async def test_foreign_file_is_a_storage_error(store: LocalStorage) -> None:
    (store.root / "junk").write_bytes(b"not an object file")
    with pytest.raises(StorageError, match="not an object file"):
        await store.read("junk")
    with pytest.raises(StorageError, match="not an object file"):
        await store.stat("junk")


async def test_header_longer_than_allowed_is_a_storage_error(store: LocalStorage) -> None:
    """A header length past the metadata bound, though the file is long enough to hold it."""
    (store.root / "long").write_bytes(b"GCL1" + (100 << 10).to_bytes(4, "big") + bytes(200 << 10))
    with pytest.raises(StorageError, match="not an object file"):
        await store.read("long")


class _Hops:
    """Counts what the local backend hands to worker threads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        real = anyio.to_thread.run_sync

        async def counting(func: Callable[..., object], *args: object, **kwargs: Any) -> object:
            self.calls.append(getattr(func, "__name__", repr(func)))
            return await real(func, *args, **kwargs)

        monkeypatch.setattr(anyio.to_thread, "run_sync", counting)


def _evict(path: Path) -> None:
    """Drop a file's clean pages from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


async def test_cached_heads_are_read_inline_and_the_disk_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the filesystem answers RWF_NOWAIT reads, a cached head costs no thread hop; a head
    that must come from the disk goes to a worker thread and arrives whole."""
    store = LocalStorage(tmp_path / "root")
    if not store._nowait:
        pytest.skip(f"{tmp_path} is on a filesystem without RWF_NOWAIT reads")
    body = os.urandom(600 << 10)
    await store.write("a/b", body, len(body), {}, create_only=True)
    hops = _Hops(monkeypatch)
    reader = await store.read("a/b")
    assert reader is not None and reader.head == body and hops.calls == []
    _evict(store.root / "a" / "b")
    reader = await store.read("a/b")
    assert reader is not None and reader.head == body
    assert hops.calls == ["_read_into"]


async def test_without_nowait_reads_only_the_first_64_kib_run_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    """On tmpfs (no RWF_NOWAIT) a head past 64 KiB is read in a thread, as a disk read would be."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as root:
        store = LocalStorage(root, fsync=False)
        assert not store._nowait  # tmpfs answers RWF_NOWAIT with EOPNOTSUPP
        small, large = os.urandom(4 << 10), os.urandom(600 << 10)
        await store.write("small", small, len(small), {}, create_only=True)
        await store.write("large", large, len(large), {}, create_only=True)
        hops = _Hops(monkeypatch)
        small_reader, large_reader = await store.read("small"), await store.read("large")
        assert small_reader is not None and small_reader.head == small
        assert large_reader is not None and large_reader.head == large
        assert hops.calls == ["_read_into"]
