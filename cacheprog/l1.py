"""The local disk cache (L1): shared by every go command and helper of a job, without locks.

Layout, close to Go's own cache: ``DIR/xx/<action>-a`` holds ``v1 <output> <size> <put-ns>`` and
``DIR/xx/<output>-d`` holds the body (``xx`` = the first two hex digits). Every file lands by
rename from a temp file in the same directory, so a reader sees a whole file or none, and two
writers of the same entry both write the same bytes. The modification time is the LRU clock:
a hit moves it forward (at most every few minutes, to spare writes), and ``trim`` deletes the
oldest files beyond the size bound, never one used in the last hour (a running go command may
still read a path it was handed).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import BinaryIO, NamedTuple

__all__ = ["L1", "L1Entry", "L1Error"]

_TOUCH_AFTER_S = 600  # refresh the LRU clock of a file used less recently than this
_TRIM_EVERY_S = 300  # at most one trim per this many seconds per cache directory
_KEEP_RECENT_S = 3600  # trim never deletes files used more recently than this
_STALE_TEMP_S = 3600
# Temp names: unique within this process by the counter, across processes by pid and a random tag.
_TEMP_TAG = f".tmp-{os.getpid()}-{os.urandom(4).hex()}-"
_temp_numbers = itertools.count()


def _renew_temp_tag() -> None:
    """A forked child (the prefetch's ``lander.py``) would otherwise make its parent's temp names."""
    global _TEMP_TAG
    _TEMP_TAG = f".tmp-{os.getpid()}-{os.urandom(4).hex()}-"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_temp_tag)


class L1Error(Exception):
    """The local cache could not be written (disk full, read-only, permissions)."""


class L1Entry(NamedTuple):
    output_id: bytes
    size: int
    put_time: datetime
    path: str  # the body on disk: what go reads (DiskPath)


class L1:
    def __init__(self, root: str, max_bytes: int) -> None:
        self.root = os.path.abspath(root)
        self.max_bytes = max_bytes

    def _path(self, hex_id: str, kind: str) -> str:
        return os.path.join(self.root, hex_id[:2], f"{hex_id}-{kind}")

    def output_path(self, output_id: bytes) -> str:
        return self._path(output_id.hex(), "d")

    def get(self, action_id: bytes) -> L1Entry | None:
        """The entry for an action, if both its files are here and agree; never raises."""
        action_path = self._path(action_id.hex(), "a")
        try:
            fd = os.open(action_path, os.O_RDONLY | os.O_CLOEXEC)  # 3 syscalls; open() makes 7 and a buffer
            try:
                fields = os.read(fd, 200).split()
            finally:
                os.close(fd)
            if len(fields) != 4 or fields[0] != b"v1":
                return None
            output_id = bytes.fromhex(fields[1].decode())
            size = int(fields[2])
            put_ns = int(fields[3])
            path = self.output_path(output_id)
            st = os.stat(path)
        except (OSError, ValueError):
            return None
        if st.st_size != size:
            return None
        now = time.time()
        if now - st.st_mtime > _TOUCH_AFTER_S:
            try:
                os.utime(path)
                os.utime(action_path)
            except OSError:
                pass
        return L1Entry(output_id, size, datetime.fromtimestamp(put_ns / 1e9, UTC), path)

    def lacking(self, action_ids: Iterable[bytes]) -> list[bytes]:
        """The actions without an entry here. One listing of the root spares a failed open for
        every action whose shard does not exist yet: in a fresh L1, all of them."""
        try:
            shards = set(os.listdir(self.root))
        except OSError:
            shards = set()
        return [a for a in action_ids if a.hex()[:2] not in shards or self.get(a) is None]

    def put(self, action_id: bytes, output_id: bytes, body: bytes, put_time: datetime) -> L1Entry:
        """Store a body and the action that names it; raises L1Error."""
        path = self.output_path(output_id)
        try:
            same = os.stat(path).st_size == len(body)
        except OSError:
            same = False
        if not same:
            _write_file(path, body)
        return self.put_action(action_id, output_id, len(body), put_time)

    def create_temp(self, output_id: bytes) -> _TempFile:
        """A temp file beside the output's final place, for a body that arrives in pieces."""
        return _TempFile(os.path.join(self.root, output_id.hex()[:2]))

    def commit_output(self, tmp: str, output_id: bytes) -> str:
        path = self.output_path(output_id)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            _unlink_quietly(tmp)
            raise L1Error(f"cannot write {path}: {exc.strerror}") from exc
        return path

    def put_action(self, action_id: bytes, output_id: bytes, size: int, put_time: datetime) -> L1Entry:
        put_ns = int(put_time.timestamp() * 1e9)
        record = f"v1 {output_id.hex()} {size} {put_ns}\n".encode()
        _write_file(self._path(action_id.hex(), "a"), record)
        return L1Entry(output_id, size, put_time, self.output_path(output_id))

    def trim_if_due(self) -> int:
        """Trim when no helper did in the last few minutes; returns the bytes freed."""
        stamp = os.path.join(self.root, "trim.stamp")
        try:
            if time.time() - os.stat(stamp).st_mtime < _TRIM_EVERY_S:
                return 0
        except FileNotFoundError:
            pass
        except OSError:
            return 0
        try:
            os.makedirs(self.root, exist_ok=True)
            with open(stamp, "wb"):
                pass
        except OSError:
            return 0
        return self.trim()

    def trim(self) -> int:
        """Delete the least recently used files until the cache is under 90% of its bound."""
        now = time.time()
        files: list[tuple[float, int, str]] = []
        total = 0
        try:
            shards = [e.path for e in os.scandir(self.root) if e.is_dir() and len(e.name) == 2]
        except OSError:
            return 0
        for shard in shards:
            try:
                entries = list(os.scandir(shard))
            except OSError:
                continue
            for entry in entries:
                try:
                    st = entry.stat()
                except OSError:
                    continue
                if entry.name.startswith(".tmp-"):
                    if now - st.st_mtime > _STALE_TEMP_S:
                        _unlink_quietly(entry.path)
                    continue
                files.append((st.st_mtime, st.st_size, entry.path))
                total += st.st_size
        if total <= self.max_bytes:
            return 0
        target = int(self.max_bytes * 0.9)
        freed = 0
        files.sort()
        for mtime, size, path in files:
            if total - freed <= target or now - mtime < _KEEP_RECENT_S:
                break
            # Looked at again: a hit since the listing moved its clock, and its path may be in
            # go's hands now (the listing of a large cache takes seconds).
            try:
                if time.time() - os.stat(path).st_mtime < _KEEP_RECENT_S:
                    continue
            except OSError:
                continue
            if _unlink_quietly(path):
                freed += size
        return freed


class _TempFile:
    """``with`` block yielding (path, file); the file is closed on exit and removed on error."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = _temp_path(directory)
        self.file: BinaryIO | None = None

    def __enter__(self) -> tuple[str, BinaryIO]:
        try:
            self.file = os.fdopen(_create(self.path), "wb")
        except OSError as exc:
            raise L1Error(f"cannot write in {self.directory}: {exc.strerror}") from exc
        return self.path, self.file

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        assert self.file is not None
        try:
            self.file.close()
        except OSError as close_exc:
            _unlink_quietly(self.path)
            raise L1Error(f"cannot write in {self.directory}: {close_exc.strerror}") from close_exc
        if exc_type is not None:
            _unlink_quietly(self.path)
            if isinstance(exc, OSError):
                raise L1Error(f"cannot write in {self.directory}: {exc.strerror}") from exc


def _temp_path(directory: str) -> str:
    return os.path.join(directory, f"{_TEMP_TAG}{next(_temp_numbers)}")


def _create(path: str) -> int:
    """A new file (never an existing one) open for writing, its directory made if missing. Raises OSError."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, flags, 0o666)


def _write_file(path: str, data: bytes) -> None:
    """``data`` into ``path`` by rename from a temp file beside it (plain syscalls: this runs for
    every entry a build lands); raises L1Error."""
    tmp = _temp_path(os.path.dirname(path))
    try:
        fd = _create(tmp)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise L1Error(f"cannot write {path}: {exc.strerror}") from exc


def _unlink_quietly(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except OSError:
        return False
