"""The landing in a child process (``cacheprog/lander.py``): its messages reach the parent whole and
in order, a stop ends it, and the parent's gets are settled by its word: an entry on its way is
waited for, an absent one is a miss, and go's gets that show the manifest stale stop the child.

Each test forks a real child that speaks the real message format (``_Pipe``, ``_Reporter``); the
parent side is the real cache and prefetch, with the stand-in gate of test_landing.py for the
gets the child leaves to it.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import pytest

from cacheprog import lander, warming
from cacheprog.cache import Cache
from cacheprog.config import Config
from cacheprog.l1 import L1, L1Entry
from cacheprog.manifest import CommandKey, encode
from cacheprog.prefetch import _EVIDENCE, ABSENT, FETCH, PrefetchSettings
from cacheprog.stats import Stats
from tests.prefetch.test_landing import _Gate, _wait_for

_PUT = datetime(2026, 1, 2, tzinfo=UTC)


Child = Callable[[lander._Reporter, lander._Pipe, int, int], None]


def _fork(child: Child) -> tuple[lander.Lander, int]:
    """A real child running ``child(reporter, pipe, control_fd, commands_fd)``: the test sends it
    two-byte orders on the control pipe, its Lander sends commands on the other."""
    read_fd, write_fd = os.pipe()
    commands_read, commands_write = os.pipe()
    control_read, control_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            for fd in (read_fd, commands_write, control_write):
                os.close(fd)
            pipe = lander._Pipe(write_fd, threading.Event())
            child(lander._Reporter(pipe), pipe, control_read, commands_read)
            code = 0
        finally:
            os._exit(code)
    for fd in (write_fd, commands_read, control_read):
        os.close(fd)
    return lander.Lander(pid, read_fd, commands_write), control_write


def _ids(n: int) -> list[bytes]:
    return [hashlib.sha256(b"action %d" % i).digest() for i in range(n)]


def _body(i: int) -> bytes:
    return b"body %d " % i * (10 + i)


def _entry(i: int) -> L1Entry:
    return L1Entry(hashlib.sha256(_body(i)).digest(), len(_body(i)), _PUT, "unused")


def _reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_the_child_s_messages_reach_the_parent_whole_and_in_order() -> None:
    ids = _ids(5000)  # more than one message of ids, and more than one pipe buffer
    manifest = encode(ids, "test")

    def child(reporter: lander._Reporter, pipe: lander._Pipe, control: int, commands: int) -> None:
        reporter.wanted(ids, manifest)
        for i in range(3):
            reporter.landed(ids[i], _entry(i), compute_ms=i)
        reporter.settled(ids[3], ABSENT)
        reporter.settled(ids[4], FETCH)
        pipe.send(b"E", lander._END.pack(3, 12345, 2))

    handle, _ = _fork(child)
    messages = list(handle.messages())
    assert _reaped(handle.pid)
    kinds = [kind for kind, _ in messages]
    assert kinds == [b"I", b"I", b"I", b"K", b"L", b"L", b"L", b"A", b"F", b"E"], kinds
    assert b"".join(payload for kind, payload in messages if kind == b"I") == b"".join(ids)
    assert messages[3][1] == manifest
    for i, (_, payload) in enumerate(messages[4:7]):
        action, entry, compute_ms = lander.landed_entry(payload, lambda output: output.hex())
        assert (action, entry.output_id, entry.size, entry.put_time, compute_ms) == (
            ids[i], _entry(i).output_id, len(_body(i)), _PUT, i)
        assert entry.path == entry.output_id.hex()
    assert messages[7][1] == ids[3] and messages[8][1] == ids[4]
    assert lander.end_counts(messages[9][1]) == (3, 12345, 2)


class _Stoppable:
    """What the child's command thread (``lander._obey``) stops: says so to the parent."""

    def __init__(self, pipe: lander._Pipe) -> None:
        self._pipe = pipe

    def stop(self) -> None:
        self._pipe.send(b"T", b"stopped\0the prefetch was stopped")


class _NoLock:
    def hold_only(self) -> None:
        pass


def test_stop_ends_a_child_that_is_still_at_work() -> None:
    """Through the end of the command pipe, read by the child's own command thread. Not a signal:
    a SIGTERM handler that stopped the prefetch could take a lock the interrupted main thread held,
    and the child hung for ever with the landing lock."""

    def child(reporter: lander._Reporter, pipe: lander._Pipe, control: int, commands: int) -> None:
        stopping = threading.Event()
        threading.Thread(target=lander._obey, args=(commands, _Stoppable(pipe), _NoLock(), stopping),
                         daemon=True).start()
        reporter.wanted(_ids(2), b"")
        if stopping.wait(30):  # as the real child's main thread does, once its prefetch stopped
            pipe.send(b"T", b"stopping\0set")

    handle, _ = _fork(child)
    messages = handle.messages()
    assert next(messages)[0] == b"I"
    started = time.monotonic()
    handle.stop()
    handle.stop()  # once is enough; twice is harmless
    assert [(kind, payload.partition(b"\0")[0]) for kind, payload in messages] == [
        (b"K", b""), (b"T", b"stopped"), (b"T", b"stopping")]
    assert time.monotonic() - started < 5 and _reaped(handle.pid)


def test_a_child_whose_main_thread_is_stuck_still_exits_soon_after_the_parent_says_stop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lander, "_EXIT_AFTER_STOP_S", 0.2)  # the child is forked with it

    def child(reporter: lander._Reporter, pipe: lander._Pipe, control: int, commands: int) -> None:
        threading.Thread(target=lander._obey, args=(commands, _Stoppable(pipe), _NoLock(), threading.Event()),
                         daemon=True).start()
        reporter.wanted([], b"")
        threading.Event().wait(60)  # stuck: a bug, a disk that hangs

    handle, _ = _fork(child)
    messages = handle.messages()
    assert next(messages)[0] == b"K"
    started = time.monotonic()
    handle.stop()
    assert [kind for kind, _ in messages] == [b"T"]  # the prefetch was told to stop; then it exited
    assert time.monotonic() - started < 10 and _reaped(handle.pid)


def test_commands_after_the_child_is_gone_never_reach_a_reused_descriptor() -> None:
    def child(reporter: lander._Reporter, pipe: lander._Pipe, control: int, commands: int) -> None:
        reporter.wanted([], b"")

    handle, _ = _fork(child)
    assert [kind for kind, _ in handle.messages()] == [b"K"]
    # Its descriptors are closed now; a socket or file opened next may get their numbers.
    reused = [os.pipe() for _ in range(4)]
    try:
        handle.hold()
        handle.want(_ids(1)[0])
        handle.stop()
        for read_end, _ in reused:
            os.set_blocking(read_end, False)
            with pytest.raises(BlockingIOError):
                os.read(read_end, 64)
    finally:
        for fds in reused:
            for fd in fds:
                os.close(fd)


class _Scripted:
    """A child that lists ``ids`` (at once, or when told ``I``) and then does what the test tells
    it: ``P`` + n writes entry n into L1, ``L`` + n says it landed, ``A`` + n that it is absent;
    anything else ends it, and so does the end of its command pipe. Told to hold, it says so
    (``T``); asked for an entry while holding, it lands it."""

    def __init__(self, ids: list[bytes], l1: L1, *, list_at_once: bool = True) -> None:
        self.ids = ids
        self.l1 = l1
        self.list_at_once = list_at_once

    def _obey(self, reporter: lander._Reporter, pipe: lander._Pipe, commands: int) -> None:
        while len(command := os.read(commands, lander._COMMAND.size)) == lander._COMMAND.size:
            kind, action_id = lander._COMMAND.unpack(command)
            if kind == b"H":
                pipe.send(b"T", b"hold\0told to hold")
            elif kind == b"W":
                reporter.landed(action_id, _entry(self.ids.index(action_id)), compute_ms=7)
        os._exit(0)  # the command pipe ended: the parent said stop (or is gone), as for the real child

    def __call__(self, reporter: lander._Reporter, pipe: lander._Pipe, control: int, commands: int) -> None:
        threading.Thread(target=self._obey, args=(reporter, pipe, commands), daemon=True).start()
        if self.list_at_once:
            reporter.wanted(self.ids, encode(self.ids, "test"))
        while len(command := os.read(control, 2)) == 2 and command[:1] in b"IPLA":
            kind, n = command[:1], command[1]
            if kind == b"I":
                reporter.wanted(self.ids, encode(self.ids, "test"))
            elif kind == b"P":
                self.l1.put(self.ids[n], _entry(n).output_id, _body(n), _PUT)
            elif kind == b"L":
                reporter.landed(self.ids[n], _entry(n), compute_ms=7)
            else:
                reporter.settled(self.ids[n], ABSENT)


class _Parent(NamedTuple):
    cache: Cache
    child: lander.Lander
    control: int  # orders to the scripted child
    said: list[str]  # what the helper told a person


@pytest.fixture
def parent(tmp_path: Path) -> Iterator[Callable[..., _Parent]]:
    """A cache whose prefetch follows a scripted child (``list_at_once``: see ``_Scripted``)."""
    caches: list[Cache] = []
    controls: list[int] = []

    def make(ids: list[bytes], *, list_at_once: bool = True) -> _Parent:
        l1 = L1(str(tmp_path / "l1"), 1 << 30)
        child, control = _fork(_Scripted(ids, l1, list_at_once=list_at_once))
        controls.append(control)
        cfg = Config(url="http://gate.invalid", namespace="ns", dir=l1.root, read_only=True)
        said: list[str] = []
        cache = Cache(cfg, l1, _Gate([]), Stats(), say=said.append,  # type: ignore[arg-type]
                      prefetch=PrefetchSettings(wait_seconds=5.0), key=CommandKey("k", "test"), lander=child)
        assert cache.prefetch is not None
        cache.prefetch.start()
        if list_at_once:
            _wait_for(lambda: cache.prefetch is not None and cache.prefetch.wanted == len(ids), "the child's list")
        caches.append(cache)
        return _Parent(cache, child, control, said)

    yield make
    for cache in caches:
        cache.close()
    for control in controls:
        os.close(control)


def test_a_get_for_an_entry_on_its_way_waits_for_the_child_s_word(parent: Callable[[list[bytes]], _Parent]) -> None:
    ids = _ids(3)
    cache, child, control, _ = parent(ids)
    # Landed before go asks: answered on the protocol loop, from the child's word alone.
    os.write(control, b"L\x00")
    _wait_for(lambda: cache.prefetch is not None and cache.prefetch.landed == 1, "the first entry")
    entry, ask_remote = cache.lookup(ids[0])
    assert entry is not None and not ask_remote and entry.output_id == _entry(0).output_id
    assert entry.path == cache.l1.output_path(entry.output_id)

    # On its way: the get waits off the loop, even once its files are in L1: the child's word
    # says it is whole (and the get counts as the prefetch's, not as a local hit).
    os.write(control, b"P\x01")
    _wait_for(lambda: cache.l1.get(ids[1]) is not None, "the second entry's files")
    assert cache.lookup(ids[1]) == (None, True)
    fetched: list[L1Entry | None] = []
    waiting = threading.Thread(target=lambda: fetched.append(cache.fetch(ids[1])))
    waiting.start()
    time.sleep(0.1)
    assert waiting.is_alive()
    os.write(control, b"L\x01")
    waiting.join(5)
    assert fetched and fetched[0] is not None and fetched[0].output_id == _entry(1).output_id

    # Absent: a miss at once, without asking the gate.
    os.write(control, b"A\x02")
    assert cache.lookup(ids[2]) == (None, True)
    assert cache.fetch(ids[2]) is None
    gate = cache.remote
    assert isinstance(gate, _Gate) and gate.gets == []
    cache.close()
    assert _reaped(child.pid)
    s = cache.stats.snapshot()
    assert s["prefetch_hits"] == 2 and s["remote_hits"] == 2 and s["misses"] == 1 and s["local_hits"] == 0, s


def test_gets_that_show_the_manifest_stale_make_the_child_land_only_what_go_asks_for(
        parent: Callable[[list[bytes]], _Parent]) -> None:
    ids = _ids(40)
    cache, child, _, said = parent(ids)
    fetched: list[L1Entry | None] = []
    assert cache.lookup(ids[0]) == (None, True)  # listed, on its way: a get waits for it
    waiting = threading.Thread(target=lambda: fetched.append(cache.fetch(ids[0])))
    waiting.start()
    for _ in range(_EVIDENCE):  # go asks for what the manifest does not list
        assert cache.lookup(os.urandom(32)) == (None, True)
    # The child is told to hold, and asked for the entry the get waits for: it lands that one.
    waiting.join(5)
    assert fetched and fetched[0] is not None and fetched[0].output_id == _entry(0).output_id
    assert "told to hold" in said
    # A later get for a listed entry asks the child for it too.
    assert cache.lookup(ids[1]) == (None, True)
    entry = cache.fetch(ids[1])
    assert entry is not None and entry.output_id == _entry(1).output_id
    gate = cache.remote
    assert isinstance(gate, _Gate) and gate.gets == []  # none went to the gate alone
    assert not _reaped(child.pid)  # the child goes on holding the rest


def test_an_entry_go_fetched_before_the_child_s_list_came_is_counted_wasted_once_the_child_lands_it(
        parent: Callable[..., _Parent]) -> None:
    ids = _ids(2)
    cache, _, control, _ = parent(ids, list_at_once=False)
    assert cache.lookup(ids[0]) == (None, True)  # before the list: the get asks the gate itself
    assert cache.fetch(ids[0]) is None
    os.write(control, b"I\x00")
    _wait_for(lambda: cache.prefetch is not None and cache.prefetch.wanted == 1, "the child's list")
    os.write(control, b"L\x00L\x01")  # the child landed both: the first for nobody
    _wait_for(lambda: cache.prefetch is not None and cache.prefetch.landed == 1, "the second entry")
    entry, ask_remote = cache.lookup(ids[1])
    assert entry is not None and not ask_remote
    cache.close()
    s = cache.stats.snapshot()
    assert s["prefetch_wasted"] == 1 and s["prefetch_hits"] == 1, s


def test_a_stopped_child_exits_and_frees_the_landing_lock_even_while_its_manifest_request_hangs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, and never answers
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
    monkeypatch.setenv("GOCACHEGATE_MANIFEST_KEY", "hanging")
    cfg = Config(url=f"http://127.0.0.1:{silent.getsockname()[1]}", namespace="ns", dir=str(tmp_path / "l1"),
                 read_only=True, timeout=30.0)
    handle = lander.start(cfg, PrefetchSettings())
    assert handle is not None
    try:
        _wait_for(lambda: bool(held), "the child's manifest request")
        assert warming.hold(cfg.dir, "hanging") is None  # the child holds the landing lock
        started = time.monotonic()
        handle.stop()
        assert list(handle.messages()) == []  # nothing to say: it never had a manifest
        assert time.monotonic() - started < 3, "the child waited for its request to time out"
        lock = warming.hold(cfg.dir, "hanging")
        assert lock is not None
        lock.close()
    finally:
        silent.close()
        for conn in held:
            conn.close()


def test_after_a_child_that_left_the_landing_to_another_gets_read_l1_on_the_loop(tmp_path: Path) -> None:
    """The child found the key's landing lock held (``B``) and exited: the parent follows that
    landing. An entry already in L1 is then a local hit on the protocol loop; waiting for the
    word of a child that is gone would send every listed get through a worker thread."""
    ids = _ids(3)
    l1 = L1(str(tmp_path / "l1"), 1 << 30)
    lock = warming.hold(l1.root, "k")  # another process lands this key
    assert lock is not None
    child, control = _fork(lambda reporter, pipe, control, commands: pipe.send(b"B"))
    cfg = Config(url="http://gate.invalid", namespace="ns", dir=l1.root, read_only=True)
    cache = Cache(cfg, l1, _Gate(ids), Stats(), say=lambda message: None,  # type: ignore[arg-type]
                  prefetch=PrefetchSettings(wait_seconds=5.0), key=CommandKey("k", "test"), lander=child)
    assert cache.prefetch is not None
    cache.prefetch.start()
    try:
        _wait_for(lambda: cache.prefetch is not None and cache.prefetch.wanted == len(ids), "following the landing")
        l1.put(ids[0], _entry(0).output_id, _body(0), _PUT)  # what the other landing wrote
        entry, ask_remote = cache.lookup(ids[0])
        assert entry is not None and not ask_remote and entry.output_id == _entry(0).output_id
        assert _reaped(child.pid)
    finally:
        cache.close()
        lock.close()
        os.close(control)
    assert cache.stats.snapshot()["local_hits"] == 1
