"""Where the helper's bearer token comes from: a static value, or a file that the kubelet rotates.

A projected ServiceAccount token is rewritten in place every so often; the file source checks the
file's identity (mtime, size, inode) at most once a second and re-reads only when it changed.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Protocol

__all__ = ["FileToken", "StaticToken", "TokenSource"]


class TokenSource(Protocol):
    def token(self) -> str | None:
        """The current token, or None when there is none to send."""
        ...

    def refresh(self) -> None:
        """The gate refused the token: look again before the next request."""
        ...


class StaticToken:
    def __init__(self, value: str) -> None:
        self._value = value.strip()

    def token(self) -> str | None:
        return self._value or None

    def refresh(self) -> None:
        pass


class FileToken:
    _CHECK_EVERY_S = 1.0

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[float, int, int] | None = None
        self._value: str | None = None
        self._checked = 0.0

    def token(self) -> str | None:
        now = time.monotonic()
        if now - self._checked < self._CHECK_EVERY_S:
            return self._value
        with self._lock:
            self._checked = now
            try:
                st = os.stat(self._path)
                stamp = (st.st_mtime, st.st_size, st.st_ino)
                if stamp != self._stamp:
                    with open(self._path) as f:
                        self._value = f.read().strip() or None
                    self._stamp = stamp
            except OSError:
                self._value, self._stamp = None, None
            return self._value

    def refresh(self) -> None:
        self._checked = 0.0
        self._stamp = None
