"""Counters of one helper invocation: written as JSON at close, posted to the gate as a session."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field, fields

__all__ = ["Stats"]


@dataclass
class Stats:
    gets: int = 0
    hits: int = 0
    misses: int = 0
    local_hits: int = 0
    remote_hits: int = 0
    puts: int = 0
    uploads: int = 0
    upload_errors: int = 0
    uploads_dropped: int = 0  # still queued when close's flush bound ran out
    remote_errors: int = 0
    corrupt: int = 0
    bytes_downloaded: int = 0  # on the wire (compressed when the gate sent zstd)
    bytes_uploaded: int = 0  # on the wire
    remote_wait_ms: int = 0  # time go spent waiting on the remote side
    compute_ms_saved: int = 0  # compute time recorded with the entries that remote hits served
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def write(self, path: str) -> None:
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.snapshot(), f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)

    def summary(self) -> str:
        s = self.snapshot()
        return (
            f"gocacheprog: {s['gets']} gets, {s['hits']} hits "
            f"({s['local_hits']} local, {s['remote_hits']} remote), "
            f"{s['misses']} misses, {s['puts']} puts, {s['uploads']} uploaded, "
            f"{s['upload_errors'] + s['remote_errors']} remote errors, {s['corrupt']} corrupt, "
            f"{s['bytes_downloaded'] / 1e6:.1f} MB down, {s['bytes_uploaded'] / 1e6:.1f} MB up, "
            f"remote wait {s['remote_wait_ms']} ms"
        )
