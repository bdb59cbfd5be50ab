"""The prefetch's landing in a child process, so that go's answers never wait for its GIL.

Landing std's 160 MiB (decode, hash, write) takes a few threads' worth of C calls with Python
between them. In the helper's own process those threads and the protocol loop take turns at the
GIL: the loop, which go waits on for every get, spent 50-100 ms per build waiting for it
(docs/prefetch.md). So right after the handshake, before it starts any thread, the helper forks.
The child lands the manifest exactly as ``gocacheprog warm`` does (``Prefetch`` with ``ahead``,
under the same landing lock), and tells the parent over a pipe what happened to each entry; the
parent answers go and settles its waiting gets from those messages (``Prefetch._from_lander``).

The child owns no part of go's protocol: its stdin, stdout and stderr are /dev/null from the
start (go waits for the helper's stdout to close). It stops when the stream ends, when the parent
says so (at its close, by closing the command pipe), and when the parent is gone (the command
pipe ends as well); once stopped, it exits within ``_STOP_GRACE_S`` even while a request to the
gate hangs. Not by a signal: a SIGTERM handler that stopped the prefetch took the lock of an
``Event`` the child's main thread could be holding right then, and the child hung for ever,
holding the landing lock (seen once in about thirty builds).
Anything it would tell a person goes to the parent, which says it once. Without ``os.fork``
(Windows) or with ``GOCACHEGATE_PREFETCH_PROCESS=0`` the landing runs in the helper's threads
instead.

Messages, child to parent: ``kind(1) length(u32) payload``:

    I  action ids the stream will bring (32 bytes each; several messages)
    K  the list is complete; payload: the manifest as the gate had it (empty: none)
    L  landed: action(32) output(32) size(u64) put ns(i64) compute ms(i64)
    A  absent (the gate has none, or it was corrupt): action(32)
    F  not landed, ask the gate alone: action(32)
    C  corrupt, for the session report: action(32)
    T  say once: key, NUL, message (UTF-8)
    B  nothing landed here: a ``gocacheprog warm`` lands this manifest already (or L1 cannot be
       locked); the parent prefetches in its own threads, which follow that warm
    E  the end: prefetched entries, stream bytes on the wire, entries received and never landed (u64 each)

Commands, parent to child: ``kind(1) action(32)``, dropped when the pipe is full (a get waits at
most ``wait_seconds`` for its entry, then asks the gate alone):

    H  hold: go's gets show the manifest stale; land no more ahead, only what the parent asks for
       (and say so in the landing lock's file: other go commands with this key stop following)
    W  want: go asks for this entry; land it (once it arrives, if it has not yet)
"""

from __future__ import annotations

import contextlib
import functools
import os
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from . import warming
from .config import Config
from .l1 import L1Entry
from .prefetch import ABSENT, FETCH, Prefetch, PrefetchSettings
from .workers import Workers

__all__ = ["ENABLE_ENV", "Lander", "Message", "start"]

ENABLE_ENV = "GOCACHEGATE_PREFETCH_PROCESS"
_HEADER = struct.Struct(">cI")
_LANDED = struct.Struct(">32s32sQqq")
_END = struct.Struct(">QQQ")
_COMMAND = struct.Struct(">c32s")
#: How long a stopped child may take to finish what it is landing before it exits regardless. A
#: stop cuts the stream at once, but not a manifest request to a slow gate, which could otherwise
#: keep the child (and the landing lock) past go's close for the remote timeout, and the helper's
#: close waiting for it.
_STOP_GRACE_S = 0.5
#: How long a child may outlive the end of its command pipe, whatever its main thread is stuck in:
#: it holds the landing lock, and the go commands of the job with its key would follow it.
_EXIT_AFTER_STOP_S = 5.0
_IDS_PER_MESSAGE = 2048
_WANT_THREADS = 8

#: A message as the parent reads it: its kind and payload.
Message = tuple[bytes, bytes]


class Lander:
    """The parent's handle on the child: its messages, commands to it, and a way to stop it."""

    def __init__(self, pid: int, fd: int, commands_fd: int) -> None:
        self.pid = pid
        self._fd = fd
        self._commands = commands_fd
        self._lock = threading.Lock()
        self._stopped = False  # the command pipe is closed: its descriptor's number may be reused

    def hold(self) -> None:
        """Tell the child to land no more ahead of go, only what ``want`` names."""
        self._command(b"H", bytes(32))

    def want(self, action_id: bytes) -> None:
        """Tell the child go asks for this entry."""
        self._command(b"W", action_id)

    def _command(self, kind: bytes, action_id: bytes) -> None:
        with self._lock:
            if not self._stopped:  # the pipe is closed then
                with contextlib.suppress(OSError):  # full (the get waits, then asks alone) or gone
                    os.write(self._commands, _COMMAND.pack(kind, action_id))

    def messages(self) -> Iterator[Message]:
        """The child's messages until it exits; then it is reaped."""
        buf = b""
        try:
            while True:
                data = os.read(self._fd, 1 << 16)
                if not data:
                    return
                buf += data
                start = 0
                while len(buf) - start >= _HEADER.size:
                    kind, length = _HEADER.unpack_from(buf, start)
                    end = start + _HEADER.size + length
                    if end > len(buf):
                        break
                    yield kind, buf[start + _HEADER.size:end]
                    start = end
                buf = buf[start:]
        finally:
            self.stop()
            os.close(self._fd)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)

    def stop(self) -> None:
        """Ask the child to stop streaming and exit: the end of its command pipe says so (once);
        never raises."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            os.close(self._commands)


def landed_entry(payload: bytes, output_path: Callable[[bytes], str]) -> tuple[bytes, L1Entry, int]:
    """An ``L`` message: the action, its entry in L1 (``output_path`` of its output id) and compute ms."""
    action, output, size, put_ns, compute_ms = _LANDED.unpack(payload)
    put_time = datetime.fromtimestamp(put_ns / 1e9, UTC)
    return action, L1Entry(output, size, put_time, output_path(output)), compute_ms


def end_counts(payload: bytes) -> tuple[int, int, int]:
    """An ``E`` message: entries prefetched, stream bytes, and entries received but never landed."""
    prefetched, wire_bytes, wasted = _END.unpack(payload)
    return prefetched, wire_bytes, wasted


def start(cfg: Config, settings: PrefetchSettings) -> Lander | None:
    """Fork the child that lands this go command's manifest; None where it cannot (the landing
    then runs in threads). Call before any thread starts: a fork copies only the calling thread."""
    if not hasattr(os, "fork") or os.environ.get(ENABLE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    go_pid = os.getppid()
    read_fd, write_fd = os.pipe()
    commands_read, commands_write = os.pipe()
    os.set_blocking(commands_write, False)  # go's gets never wait on a busy child
    try:
        pid = os.fork()
    except OSError:
        for fd in (read_fd, write_fd, commands_read, commands_write):
            os.close(fd)
        return None
    if pid:
        os.close(write_fd)
        os.close(commands_read)
        return Lander(pid, read_fd, commands_write)
    os.close(read_fd)  # the child: never returns
    os.close(commands_write)
    code = 1
    try:
        _child(cfg, settings, go_pid, write_fd, commands_read)
        code = 0
    finally:
        os._exit(code)


class _Pipe:
    """The child's end: whole messages, from any thread; once the parent is gone, ``stopping`` is set."""

    def __init__(self, fd: int, stopping: threading.Event) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._stopping = stopping

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        data = memoryview(_HEADER.pack(kind, len(payload)) + payload)
        with self._lock:
            try:
                while data:
                    data = data[os.write(self._fd, data):]
            except OSError:
                self._stopping.set()


class _Reporter:
    """What the child's ``Prefetch`` reports (``Prefetch.reporter``), sent to the parent."""

    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe

    def wanted(self, action_ids: list[bytes], manifest: bytes) -> None:
        for i in range(0, len(action_ids), _IDS_PER_MESSAGE):
            self._pipe.send(b"I", b"".join(action_ids[i:i + _IDS_PER_MESSAGE]))
        self._pipe.send(b"K", manifest)

    def landed(self, action_id: bytes, entry: L1Entry, compute_ms: int) -> None:
        put_ns = int(entry.put_time.timestamp() * 1e9)
        self._pipe.send(b"L", _LANDED.pack(action_id, entry.output_id, entry.size, put_ns, compute_ms))

    def settled(self, action_id: bytes, state: str) -> None:
        if state in (ABSENT, FETCH):
            self._pipe.send(b"A" if state == ABSENT else b"F", action_id)


def _obey(commands: int, prefetch: Prefetch, lock: warming.Landing, stopping: threading.Event) -> None:
    """Carry out the parent's commands until it is gone (``wait`` lands a held entry on its thread)."""
    wants = Workers("want", _WANT_THREADS)

    def land(action_id: bytes) -> None:
        prefetch.wait(action_id)  # the reporter tells the parent how it went

    buf = b""
    while data := os.read(commands, 1 << 12):  # until the parent says stop, or is gone
        buf += data
        whole = len(buf) - len(buf) % _COMMAND.size
        for offset in range(0, whole, _COMMAND.size):
            kind, action_id = _COMMAND.unpack_from(buf, offset)
            if kind == b"H":
                prefetch.hold()
                lock.hold_only()  # go commands with this key stop following us: we land none of theirs
            elif kind == b"W":
                wants.submit(functools.partial(land, action_id))
        buf = buf[whole:]
    prefetch.stop()
    stopping.set()
    time.sleep(_EXIT_AFTER_STOP_S)  # the main thread exits well before this, unless a bug holds it
    os._exit(1)


def _detach() -> None:
    """Let go of go's pipes: go waits for the helper's stdout to close, and must not wait for us."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the child's life


def _child(cfg: Config, settings: PrefetchSettings, go_pid: int, fd: int, commands: int) -> None:
    from .l1 import L1
    from .manifest import command_key
    from .remote import remote_for
    from .stats import Stats

    _detach()
    stopping = threading.Event()  # the parent said stop, or it is gone
    pipe = _Pipe(fd, stopping)
    key = command_key(os.environ, ppid=go_pid)  # go is our parent's parent
    l1 = L1(cfg.dir, cfg.l1_max_bytes)
    try:
        lock = warming.hold(l1.root, key.key)
    except OSError:
        lock = None
    if lock is None:
        pipe.send(b"B")
        return
    said: set[str] = set()

    def say_once(topic: str, message: str) -> None:
        if topic not in said:
            said.add(topic)
            pipe.send(b"T", f"{topic}\0{message}".encode())

    def in_store(write: Callable[[L1], L1Entry | None], again: bool) -> L1Entry | None:
        return write(l1)  # no scratch directory here: what L1 cannot take is the parent's to fetch (F)

    stats = Stats()
    remote = remote_for(cfg._replace(read_only=True))
    assert remote is not None  # the parent forks only with a gate URL
    prefetch = Prefetch(l1, remote, stats, settings._replace(ahead=True), lambda: key, say_once,
                        lambda action_id: pipe.send(b"C", action_id), in_store)
    prefetch.reporter = _Reporter(pipe)
    threading.Thread(target=_obey, args=(commands, prefetch, lock, stopping), name="commands", daemon=True).start()
    prefetch.start()
    stopped_at = None
    while not prefetch.finish(0.05):
        if stopping.is_set():
            prefetch.stop()
        if prefetch.stopped:
            stopped_at = stopped_at or time.monotonic()
            if time.monotonic() - stopped_at > _STOP_GRACE_S:
                lock.close()  # stuck in a request a stop cannot cut short (the manifest's): exit without it
                return
    while prefetch.holding and not prefetch.stopped and not stopping.is_set():
        stopping.wait(0.05)  # held for the parent's gets (``_obey``) until it closes: it stops us then
    prefetch.close()
    counts = stats.snapshot()
    pipe.send(b"E", _END.pack(counts["prefetched"], counts["prefetch_bytes"], counts["prefetch_wasted"]))
    lock.close()
