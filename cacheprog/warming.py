"""Who is landing a manifest into a local cache right now, so that no two processes land it twice.

``gocacheprog warm`` holds an exclusive ``flock`` on ``DIR/warming-<digest of the key>.lock`` while
it lands a manifest into the L1 at ``DIR``. A helper whose go command has the same key and the same
L1, started while that warm still runs, follows it (``prefetch.py``): it reads the manifest but
streams nothing, and a get for an entry the warm has not landed yet waits for it to appear in L1.
Streaming too would land every entry the warm had not reached a second time, on the same cores:
with std, a warm started together with the build took the build to 3.75x native warm when the
build's helper prefetched as well, and to 3.10x when it followed the warm (docs/prefetch.md).

The lock goes with the process: a warm that stops or dies releases it, and the gets still waiting
then ask the gate themselves. A landing that ends removes its lock file before it lets go of it, so
an L1 that outlives many commands (a developer's, a node's) does not keep a file per key for ever.
A process that opened the file just before it was removed would lock a file nobody else can find:
``hold`` checks that the file it locked is still the one at the path, and opens it again if not.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os

__all__ = ["Landing", "Watch", "hold", "watch"]


def _path(root: str, key: str) -> str:
    return os.path.join(os.path.abspath(root), f"warming-{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock")


class Landing:
    """The lock of the process that lands a key; ``close`` removes the lock file and releases the
    lock (the process's exit releases it too, and leaves the file for the next holder)."""

    def __init__(self, fd: int, path: str) -> None:
        self._fd = fd
        self._path = path

    def close(self) -> None:
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
