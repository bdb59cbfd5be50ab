"""Who is landing a manifest into a local cache right now, so that no two processes land it twice.

``gocacheprog warm`` holds an exclusive ``flock`` on ``DIR/warming-<digest of the key>.lock`` while
it lands a manifest into the L1 at ``DIR``. A helper whose go command has the same key and the same
L1, started while that warm still runs, follows it (``prefetch.py``): it reads the manifest but
streams nothing, and a get for an entry the warm has not landed yet waits for it to appear in L1.
Streaming too would land every entry the warm had not reached a second time, on the same cores:
with std, a warm started together with the build took the build to 3.75x native warm when the
build's helper prefetched as well, and to 3.10x when it followed the warm (docs/prefetch.md).

The lock goes with the process: a warm that stops or dies releases it, and the gets still waiting
then ask the gate themselves. A landing that ends removes its lock file before it lets go of it,
so an L1 that outlives many commands (a developer's, a node's) does not keep a file per key for
ever. A process that opened the file just before it was removed would lock a file nobody else can
find: ``hold`` checks that the file it locked is still the one at the path, and opens it again if
not.

A helper's landing whose go command showed the manifest stale lands only what its own go asks for
from then on (``Prefetch.hold``); it keeps the lock but writes ``hold`` into the file. A follower
then stops waiting for it (its gets would wait in vain), and a go command started later with the
same key neither follows nor streams the stale manifest again: its gets go the way they go
without a manifest. A new holder empties the file: one that died may have left ``hold`` in it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading

__all__ = ["Landing", "Watch", "hold", "watch"]

_HOLDING = b"hold\n"  # what a landing that lands only on demand writes into its lock file


def _path(root: str, key: str) -> str:
    return os.path.join(os.path.abspath(root), f"warming-{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock")


class Landing:
    """The lock of the process that lands a key; ``close`` removes the lock file and releases the
    lock (the process's exit releases it too, and leaves the file for the next holder)."""

    def __init__(self, fd: int, path: str) -> None:
        self._fd = fd
        self._path = path
        self._lock = threading.Lock()  # ``hold_only`` comes from another thread than ``close``
        self._closed = False

    def hold_only(self) -> None:
        """Say that this landing no longer lands ahead: the manifest proved stale."""
        with self._lock, contextlib.suppress(OSError):  # unsaid, followers wait as they did before
            if not self._closed:
                os.pwrite(self._fd, _HOLDING, 0)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            with contextlib.suppress(OSError):  # still holding the lock: whoever opens the path now makes a new file
                os.unlink(self._path)
            os.close(self._fd)


def hold(root: str, key: str) -> Landing | None:
    """Take the lock for landing ``key`` into the L1 at ``root``; None when another process holds
    it. Raises OSError when the lock file cannot be made."""
    os.makedirs(root, exist_ok=True)
    path = _path(root, key)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(fd, path):
                os.ftruncate(fd, 0)  # a holder that died leaves its file, and maybe its ``hold``
                return Landing(fd, path)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # its holder removed it after we opened it: lock the file at the path now


def _same_file(fd: int, path: str) -> bool:
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)


class Watch:
    """Another process's landing of a key, seen from outside; ``close`` lets go of the lock file."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def close(self) -> None:
        os.close(self._fd)

    def holding(self) -> bool:
        """Whether that process lands only what its own go command asks for (``Landing.hold_only``)."""
        try:
            return os.pread(self._fd, len(_HOLDING), 0) == _HOLDING
        except OSError:
            return False

    def active(self) -> bool:
        """Whether that process still holds its lock."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        return False


def watch(root: str, key: str) -> Watch | None:
    """The landing of ``key`` into the L1 at ``root`` by another process, if one is under way.
    Never raises: a lock file that cannot be read means no landing to follow."""
    try:
        fd = os.open(_path(root, key), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    seen = Watch(fd)
    if seen.active():
        return seen
    seen.close()
    return None
