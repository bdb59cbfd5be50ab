"""Counters of one helper invocation: written as JSON at close, posted to the gate as a session."""

from __future__ import annotations

import json
import os
import threading

__all__ = ["FIELDS", "Stats"]


#: The counters, in the order they are written. Go waits on our imports, so no dataclasses here.
FIELDS = (
    "gets", "hits", "misses", "local_hits", "remote_hits", "puts", "uploads",
    "upload_errors",
    "uploads_dropped",  # still queued when close's flush bound ran out
    "remote_errors", "corrupt",
    "bytes_downloaded",  # on the wire (compressed when the gate sent zstd)
    "bytes_uploaded",  # on the wire
    "remote_wait_ms",  # time go spent waiting on the remote side
    "compute_ms_saved",  # compute time recorded with the entries that remote hits served
    "prefetched",  # entries the prefetch landed in L1 (docs/prefetch.md)
    "prefetch_hits",  # gets they served (counted in remote_hits too)
    "prefetch_bytes",  # the prefetch stream, on the wire
    "prefetch_wasted",  # landed, and never asked for by this go command
    "manifests_sent",  # 1 when this command's manifest was sent at close
)


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(FIELDS, 0)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                self._counts[name] += delta

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

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
            + (f", prefetched {s['prefetched']} ({s['prefetch_hits']} used, {s['prefetch_bytes'] / 1e6:.1f} MB)"
               if s["prefetched"] else "")
        )
