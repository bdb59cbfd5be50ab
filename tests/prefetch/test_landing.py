"""Where the prefetch puts what it receives: into L1 ahead of go while the manifest proves right,
in memory (landed by the get that asks) once go asks for much the manifest lacks.

The cache, L1 and the prefetch are the real ones; the gate is a stand-in that answers the
manifest and a stream built with the real frame format, released by the test when it wants.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from cacheprog import prefetch, warming
from cacheprog.cache import Cache
from cacheprog.config import Config
from cacheprog.l1 import L1
from cacheprog.manifest import CommandKey, encode
from cacheprog.prefetch import _EVIDENCE, _LEAD, ENTRY, MAGIC, PrefetchSettings
from cacheprog.stats import Stats


class _Stream:
    """The prefetch answer: bytes the test releases with ``send``; ``b""`` ends it."""

    def __init__(self) -> None:
        self.wire_bytes = 0
        self._chunks: queue.Queue[bytes] = queue.Queue()

    def send(self, data: bytes) -> None:
        self._chunks.put(data)

    def read(self, n: int) -> bytes:
        data = self._chunks.get(timeout=10)
        self.wire_bytes += len(data)
        return data

    def abort(self) -> None:
        self._chunks.put(b"")

    def finish(self, ok: bool) -> None:
        pass


class _Gate:
    """What the cache asks of the remote in these tests: a manifest, one stream, no single gets."""

    open_reason = None

    def __init__(self, manifest: list[bytes]) -> None:
        self.manifest = manifest
        self.stream = _Stream()
        self.opened = threading.Event()
        self.gets: list[str] = []
        self.sessions: list[dict[str, object]] = []

    def get_manifest(self, key: str) -> bytes:
        return encode(self.manifest, "test")

    def open_prefetch(self, action_ids: bytes) -> _Stream:
        self.opened.set()
        return self.stream

    def get(self, action_hex: str) -> None:
        self.gets.append(action_hex)
        return None  # not in the gate: a miss

    def post_session(self, report: dict[str, object]) -> None:
        self.sessions.append(report)


def _entry(n: int) -> tuple[bytes, bytes, bytes]:
    """(action id, output id, frame) of a zstd entry of a few KB."""
    body = (b"entry %d " % n) * 700
    action, output = hashlib.sha256(b"action %d" % n).digest(), hashlib.sha256(body).digest()
    payload = zstandard.ZstdCompressor(level=1).compress(body)
    return action, output, b"E" + ENTRY.pack(action, output, len(body), 0, 5, 1, len(payload)) + payload


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


MakeCache = Callable[..., tuple[Cache, _Gate, L1]]  # (manifest, wait_seconds=1.0)


@pytest.fixture
def make_cache(tmp_path: Path) -> MakeCache:
    def make(manifest: list[bytes], wait_seconds: float = 1.0) -> tuple[Cache, _Gate, L1]:
        l1 = L1(str(tmp_path / "l1"), 1 << 30)
        gate = _Gate(manifest)
        cfg = Config(url="http://gate.invalid", namespace="ns", dir=l1.root, read_only=True)
        cache = Cache(cfg, l1, gate, Stats(), say=lambda message: None,  # type: ignore[arg-type]
                      prefetch=PrefetchSettings(wait_seconds=wait_seconds))
        cache._key = CommandKey("test-key", "test")  # no go command started this helper
        assert cache.prefetch is not None
        cache.prefetch.start()
        _wait_for(gate.opened.is_set, "the prefetch request")
        return cache, gate, l1

    return make


def _stream_all(gate: _Gate, entries: list[tuple[bytes, bytes, bytes]]) -> None:
    gate.stream.send(MAGIC + b"".join(frame for _, _, frame in entries) + b"Z" + len(entries).to_bytes(4, "big"))


def _in_l1(l1: L1, entries: list[tuple[bytes, bytes, bytes]]) -> int:
    return sum(l1.get(a) is not None for a, _, _ in entries)


def test_a_manifest_that_proves_right_is_landed_before_go_asks(make_cache: MakeCache) -> None:
    entries = [_entry(n) for n in range(4 * _LEAD)]
    cache, gate, l1 = make_cache([a for a, _, _ in entries])
    _stream_all(gate, entries)
    # Before go asked for anything, a few are landed ahead, no more: the manifest may be stale.
    _wait_for(lambda: _in_l1(l1, entries) == _LEAD, f"{_LEAD} entries in L1")
    time.sleep(0.2)
    assert _in_l1(l1, entries) == _LEAD

    for n, (action, output, _) in enumerate(entries):
        if n == _EVIDENCE:  # go asked for what the manifest listed: the rest is landed ahead
            _wait_for(lambda: _in_l1(l1, entries) == len(entries), "every entry in L1")
        entry, ask_remote = cache.lookup(action)  # go's get: an L1 hit, no wait, no thread
        assert entry is not None and not ask_remote and entry.output_id == output
    cache.close()
    s = cache.stats.snapshot()
    assert s["prefetched"] == s["prefetch_hits"] == s["remote_hits"] == len(entries), s
    assert s["prefetch_wasted"] == s["local_hits"] == s["corrupt"] == 0, s


def test_a_manifest_found_stale_after_it_arrived_lands_no_more_than_the_lead(make_cache: MakeCache) -> None:
    entries = [_entry(n) for n in range(4 * _LEAD)]
    cache, gate, l1 = make_cache([a for a, _, _ in entries])
    _stream_all(gate, entries)
    _wait_for(lambda: _in_l1(l1, entries) == _LEAD, f"{_LEAD} entries in L1")
    for _ in range(_EVIDENCE):  # go asks for what the manifest does not list
        assert cache.lookup(os.urandom(32)) == (None, True)
    time.sleep(0.2)
    assert _in_l1(l1, entries) == _LEAD
    cache.close()
    assert cache.stats.snapshot()["prefetch_wasted"] == len(entries), cache.stats.snapshot()


def test_a_stale_manifest_is_held_in_memory_and_landed_only_when_asked(make_cache: MakeCache) -> None:
    entries = [_entry(n) for n in range(40)]
    cache, gate, l1 = make_cache([a for a, _, _ in entries])
    for _ in range(20):  # go asks for entries the manifest does not list: it is stale
        entry, ask_remote = cache.lookup(os.urandom(32))
        assert entry is None and ask_remote
    _stream_all(gate, entries)
    _wait_for(lambda: cache.stats.snapshot()["prefetched"] == 40, "the stream")
    time.sleep(0.2)  # a lander that wrongly took them would be writing now
    assert all(l1.get(a) is None for a, _, _ in entries), "entries of a stale manifest were written ahead"

    action, output, _ = entries[7]
    entry, ask_remote = cache.lookup(action)
    assert entry is None and ask_remote  # not in L1 ...
    fetched = cache.fetch(action)  # ... so the get lands it from memory, checked, without asking the gate
    assert fetched is not None and fetched.output_id == output
    assert hashlib.sha256(Path(fetched.path).read_bytes()).digest() == output
    cache.close()
    s = cache.stats.snapshot()
    assert s["prefetch_hits"] == 1 and s["prefetch_wasted"] == 39 and s["misses"] == 0, s
    assert sum(l1.get(a) is not None for a, _, _ in entries) == 1


def test_a_corrupt_entry_landed_ahead_is_counted_and_never_served(make_cache: MakeCache) -> None:
    entries = [_entry(n) for n in range(3)]
    bad_action, bad_output, frame = entries[1]
    # The same frame with a payload that declares a far larger body than the entry's size (a bomb).
    bomb = zstandard.ZstdCompressor(level=1).compress(b"\0" * (64 << 20))
    head = frame[:1 + ENTRY.size]
    fields = list(ENTRY.unpack(head[1:]))
    fields[-1] = len(bomb)
    entries[1] = (bad_action, bad_output, b"E" + ENTRY.pack(*fields) + bomb)
    cache, gate, l1 = make_cache([a for a, _, _ in entries])
    _stream_all(gate, entries)
    _wait_for(lambda: l1.get(entries[2][0]) is not None and cache.stats.snapshot()["corrupt"] == 1, "the stream")
    assert l1.get(bad_action) is None
    entry, ask_remote = cache.lookup(bad_action)
    assert entry is None and ask_remote
    assert cache.fetch(bad_action) is None  # a miss, never the bomb ...
    assert gate.gets == []  # ... at once: asking the gate alone would bring the same stored bytes
    cache.close()
    s = cache.stats.snapshot()
    assert s["corrupt"] == 1 and s["misses"] == 1, s  # counted once
    assert [report.get("corrupt_actions") for report in gate.sessions] == [[bad_action.hex()]]  # for quarantine


def test_entries_over_the_whole_bound_are_landed_from_the_stream_and_checked(
        make_cache: MakeCache, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefetch, "_WHOLE", 1024)  # every entry of a few KB takes the streamed way
    entries = [_entry(n) for n in range(_LEAD + 3)]  # all landed as they come, beyond the lead too
    bad_action, _, frame = entries[1]
    entries[1] = (bad_action, os.urandom(32), frame[:1 + 32] + os.urandom(32) + frame[1 + 64:])  # wrong digest
    cache, gate, l1 = make_cache([a for a, _, _ in entries])
    _stream_all(gate, entries)
    # counted once recorded as landed: a lookup before that could find the files and count a local hit
    _wait_for(lambda: cache.stats.snapshot()["corrupt"] == 1
              and cache.stats.snapshot()["prefetched"] == len(entries) - 1, "the stream")
    assert _in_l1(l1, entries) == len(entries) - 1
    for action, output, _ in (entries[0], entries[-1]):
        entry, ask_remote = cache.lookup(action)
        assert entry is not None and not ask_remote and entry.output_id == output
        assert hashlib.sha256(Path(entry.path).read_bytes()).digest() == output
    assert cache.lookup(bad_action) == (None, True)
    assert cache.fetch(bad_action) is None and gate.gets == []  # never served, not asked for again
    cache.close()
    s = cache.stats.snapshot()
    assert s["prefetched"] == len(entries) - 1 and s["prefetch_hits"] == 2, s
    assert s["corrupt"] == 1 and s["misses"] == 1, s


def test_a_get_for_an_entry_being_landed_waits_off_the_protocol_loop(
        make_cache: MakeCache, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [_entry(n) for n in range(3)]
    slow_action, slow_output, _ = entries[1]
    inside, release = threading.Event(), threading.Event()
    land_whole = prefetch._land_whole

    def slow_landing(l1: L1, action_id: bytes, held: object) -> object:
        if action_id == slow_action:  # a big entry: tens of milliseconds, here until released
            inside.set()
            release.wait(10)
        return land_whole(l1, action_id, held)  # type: ignore[arg-type]

    monkeypatch.setattr(prefetch, "_land_whole", slow_landing)
    cache, gate, _ = make_cache([a for a, _, _ in entries])
    _stream_all(gate, entries)
    _wait_for(inside.is_set, "the lander to start on the slow entry")
    answered: list[tuple[object, bool]] = []
    loop = threading.Thread(target=lambda: answered.append(cache.lookup(slow_action)))
    loop.start()
    loop.join(2)
    assert answered == [(None, True)], "the protocol loop waited for a landing"  # a worker will
    release.set()
    fetched = cache.fetch(slow_action)
    assert fetched is not None and fetched.output_id == slow_output and gate.gets == []
    cache.close()
    s = cache.stats.snapshot()
    assert s["prefetch_hits"] == s["remote_hits"] == 1 and s["local_hits"] == s["misses"] == 0, s


def test_entries_land_in_the_scratch_directory_once_l1_cannot_be_written(
        make_cache: MakeCache, tmp_path: Path) -> None:
    (tmp_path / "l1").write_bytes(b"")  # a file where L1's directory should be: nothing can be created in it
    entries = [_entry(n) for n in range(8)]
    cache, gate, l1 = make_cache([a for a, _, _ in entries])
    _stream_all(gate, entries)
    _wait_for(lambda: cache.stats.snapshot()["prefetched"] == len(entries), "the stream")
    paths = []
    for action, output, _ in entries:
        entry, ask_remote = cache.lookup(action)
        if entry is None:  # not landed ahead yet: the get waits for its landing
            assert ask_remote
            entry = cache.fetch(action)
        assert entry is not None and entry.output_id == output
        assert not entry.path.startswith(l1.root) and hashlib.sha256(Path(entry.path).read_bytes()).digest() == output
        paths.append(Path(entry.path))
    assert gate.gets == []  # every entry came with the prefetch, none fetched alone
    cache.close()
    s = cache.stats.snapshot()
    assert s["prefetch_hits"] == s["remote_hits"] == len(entries) and s["misses"] == 0, s
    assert not any(path.exists() for path in paths), "the scratch directory outlived the command"


def test_a_get_waits_for_its_entry_on_the_stream_and_no_longer_than_wait_seconds(make_cache: MakeCache) -> None:
    entries = [_entry(n) for n in range(3)]
    cache, gate, _ = make_cache([a for a, _, _ in entries], wait_seconds=1.0)
    first, late, last = (action for action, _, _ in entries)
    assert cache.lookup(first) == (None, True)
    got: list[object] = []
    waiting = threading.Thread(target=lambda: got.append(cache.fetch(first)))
    waiting.start()
    time.sleep(0.1)  # the get is waiting for the stream now
    gate.stream.send(MAGIC + entries[0][2])
    waiting.join(0.7)  # woken by the entry's arrival, well before wait_seconds ran out
    assert len(got) == 1 and got[0] is not None and gate.gets == []  # served by the stream, not alone

    assert cache.lookup(late) == (None, True)
    started = time.monotonic()
    assert cache.fetch(late) is None  # nothing came within wait_seconds: asked alone (a miss here)
    assert 1.0 <= time.monotonic() - started < 3 and gate.gets == [late.hex()]
    gate.stream.send(entries[1][2] + entries[2][2] + b"Z" + (3).to_bytes(4, "big"))  # late: skipped
    _wait_for(lambda: cache.stats.snapshot()["prefetched"] == 2, "the rest of the stream")
    entry, ask_remote = cache.lookup(last)
    if entry is None:  # not landed yet: the get waits for its landing
        assert ask_remote
        entry = cache.fetch(last)
    assert entry is not None
    cache.close()
    s = cache.stats.snapshot()
    assert s["prefetch_hits"] == 2 and s["misses"] == 1 and s["prefetched"] == 2, s


class _SilentGate(_Gate):
    """A gate that never answers the manifest request (until the test ends)."""

    def __init__(self) -> None:
        super().__init__([])
        self.asked = threading.Event()
        self.release = threading.Event()

    def get_manifest(self, key: str) -> bytes:
        self.asked.set()
        self.release.wait(30)
        return super().get_manifest(key)


def test_close_does_not_wait_for_a_manifest_request_the_gate_never_answers(tmp_path: Path) -> None:
    l1 = L1(str(tmp_path / "l1"), 1 << 30)
    gate = _SilentGate()
    cfg = Config(url="http://gate.invalid", namespace="ns", dir=l1.root, read_only=True)
    cache = Cache(cfg, l1, gate, Stats(), say=lambda message: None,  # type: ignore[arg-type]
                  prefetch=PrefetchSettings(), key=CommandKey("test-key", "test"))
    assert cache.prefetch is not None
    cache.prefetch.start()
    try:
        _wait_for(gate.asked.is_set, "the manifest request")
        started = time.monotonic()
        cache.close()
        assert time.monotonic() - started < 1, "close waited for the manifest request"
    finally:
        gate.release.set()


def _cache_beside_a_landing(tmp_path: Path, manifest: list[bytes], *,
                            holding: bool) -> tuple[Cache, _Gate, warming.Landing]:
    """A cache started while another process (here: the test) holds the landing lock of its key,
    as a ``gocacheprog warm`` or another helper's child does; ``holding``: that landing found the
    manifest stale before this cache started, and lands only what its own go asks for."""
    l1 = L1(str(tmp_path / "l1"), 1 << 30)
    lock = warming.hold(l1.root, "test-key")
    assert lock is not None
    if holding:
        lock.hold_only()
    gate = _Gate(manifest)
    cfg = Config(url="http://gate.invalid", namespace="ns", dir=l1.root, read_only=True)
    cache = Cache(cfg, l1, gate, Stats(), say=lambda message: None,  # type: ignore[arg-type]
                  prefetch=PrefetchSettings(wait_seconds=30.0), key=CommandKey("test-key", "test"))
    assert cache.prefetch is not None
    cache.prefetch.start()
    return cache, gate, lock


def test_a_follower_stops_waiting_once_the_landing_it_follows_holds(tmp_path: Path) -> None:
    listed = [_entry(n)[0] for n in range(3)]
    cache, gate, lock = _cache_beside_a_landing(tmp_path, listed, holding=False)
    try:
        _wait_for(lambda: cache.prefetch is not None and cache.prefetch.wanted == 3, "following the landing")
        assert cache.lookup(listed[0]) == (None, True)
        got: list[object] = []
        waiting = threading.Thread(target=lambda: got.append(cache.fetch(listed[0])))
        waiting.start()
        time.sleep(0.2)
        assert waiting.is_alive()  # it waits for the landing to bring its entry
        lock.hold_only()  # that landing's go command found the manifest stale: it will never come
        waiting.join(10)  # not the 30 s of wait_seconds
        assert not waiting.is_alive() and got == [None] and gate.gets == [listed[0].hex()]  # asked alone
        assert not gate.opened.is_set()  # nothing streamed
    finally:
        cache.close()
        lock.close()


def test_a_cache_started_beside_a_holding_landing_neither_follows_nor_streams(tmp_path: Path) -> None:
    listed = [_entry(n)[0] for n in range(3)]
    cache, gate, lock = _cache_beside_a_landing(tmp_path, listed, holding=True)
    try:
        assert cache.prefetch is not None and cache.prefetch.finish(10)
        assert cache.prefetch.wanted == 0 and not gate.opened.is_set()
        assert cache.lookup(listed[1]) == (None, True)
        started = time.monotonic()
        assert cache.fetch(listed[1]) is None and gate.gets == [listed[1].hex()]  # the normal way, at once
        assert time.monotonic() - started < 10
    finally:
        cache.close()
        lock.close()
