"""Load on one gate: many clients at once, a mix of hits, misses and puts of 1 KB to 8 MB, for a
bounded time; then every acknowledged put is read back and checked against its digest.

    python -m tests.reliability.loadgen --backend local --seconds 60 --clients 64

starts a gate (and, for ``gcs``, the GCS emulator) on loopback and prints the figures as JSON:
requests by kind and status, transport errors, 5xx, lost puts, latency percentiles, and the
gate's resident memory (sampled every 0.25 s, and its peak from the kernel). The suite runs the
same function for 15 s (tests/reliability/test_load.py).

Clients are threads with one kept-alive ``http.client`` connection each, the way the helper talks
to the gate; bodies come from a pool made once (incompressible and compressible, sizes skewed
small as Go's entries are), and every put names a new action.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

__all__ = ["LoadResult", "run_load"]

# (share of puts, smallest, largest): most entries are small, a few are large
_SIZES = [(0.70, 1 << 10, 64 << 10), (0.22, 64 << 10, 1 << 20), (0.08, 1 << 20, 8 << 20)]
_MIX = [("hit", 0.5), ("miss", 0.2), ("put", 0.3)]
_SEED_ENTRIES = 48


@dataclass(frozen=True)
class Body:
    data: bytes
    output_id: str


def _size(rng: random.Random) -> int:
    share = rng.random()
    for weight, low, high in _SIZES:
        if share < weight:
            return int(low * (high / low) ** rng.random())
        share -= weight
    return _SIZES[-1][2]


def _bodies(rng: random.Random, count: int = 40) -> list[Body]:
    made = []
    for i in range(count):
        size = _size(rng)
        if i % 2:
            data = os.urandom(size)
        else:  # compressible, like most object files
            data = (b"go object %d " % i) * (size // 12 + 1)
            data = data[:size]
        made.append(Body(data, hashlib.sha256(data).hexdigest()))
    return made


@dataclass
class LoadResult:
    seconds: float
    clients: int
    requests: Counter[str] = field(default_factory=Counter)  # "kind status"
    transport_errors: int = 0
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    acknowledged: int = 0
    lost: list[str] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)  # the gate's RSS, sampled
    peak_rss_mb: float = 0.0  # VmHWM: the kernel's peak over the gate's life

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    @property
    def server_errors(self) -> int:
        return sum(n for key, n in self.requests.items() if key.split()[1].startswith("5"))

    def percentile(self, q: float, kind: str | None = None) -> float:
        values = sorted(v for k, vs in self.latencies_ms.items() if kind in (None, k) for v in vs)
        return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0

    def summary(self) -> dict[str, Any]:
        third = max(1, len(self.rss_mb) // 3)
        return {
            "seconds": round(self.seconds, 1),
            "clients": self.clients,
            "requests": self.total,
            "per_second": round(self.total / self.seconds, 1),
            "by_kind_and_status": dict(sorted(self.requests.items())),
            "transport_errors": self.transport_errors,
            "5xx": self.server_errors,
            "acknowledged_puts": self.acknowledged,
            "lost_puts": len(self.lost),
            "latency_ms": {
                kind or "all": {f"p{round(q * 100)}": round(self.percentile(q, kind), 1) for q in (0.5, 0.99)}
                for kind in (None, "hit", "miss", "put")
            },
            "gate_rss_mb": {
                "first_third_max": round(max(self.rss_mb[:third], default=0), 1),
                "last_third_max": round(max(self.rss_mb[-third:], default=0), 1),
                "peak": round(self.peak_rss_mb, 1),
            },
        }


def _memory(pid: int, field_name: str) -> float:
    """A VmRSS/VmHWM figure of a process, in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class _Client:
    """One kept-alive connection; reconnects after an error, as the helper's pool does."""

    def __init__(self, host: str, port: int, token: str | None) -> None:
        self.host, self.port = host, port
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None,
                headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            self.conn.request(method, path, body=body, headers={**self.auth, **headers})
            resp = self.conn.getresponse()
            data = resp.read()
            if resp.will_close:
                self.close()
            return resp.status, data, {k.lower(): v for k, v in resp.getheaders()}
        except (http.client.HTTPException, OSError):
            self.close()
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def run_load(url: str, gate_pid: int, *, seconds: float, clients: int, namespace: str = "load",
             token: str | None = None, seed: int = 64) -> LoadResult:
    """Drive the gate at ``url`` for ``seconds`` with ``clients`` threads, then read back every
    acknowledged put. Bounded: each thread stops at the deadline, the read-back has a timeout."""
    target = url.removeprefix("http://")
    host, port = target.split(":")[0], int(target.split(":")[1].rstrip("/"))
    rng = random.Random(seed)
    bodies = _bodies(rng)
    result = LoadResult(seconds, clients)
    stored: list[tuple[str, Body]] = []
    lock = threading.Lock()
    prefix = f"/v1/ns/{namespace}/actions/"

    def put(client: _Client, action: str, body: Body, zstd: bool) -> int:
        headers = {"X-Go-Output-Id": body.output_id, "X-Go-Size": str(len(body.data)),
                   "Content-Type": "application/octet-stream"}
        payload = body.data
        if zstd:
            payload = zstandard.ZstdCompressor(level=1).compress(body.data)
            headers["Content-Encoding"] = "zstd"
        status, _, _ = client.request("PUT", prefix + action, payload, headers)
        if status == 201:
            with lock:
                stored.append((action, body))
        return status

    seeder = _Client(host, port, token)
    for i in range(_SEED_ENTRIES):
        assert put(seeder, os.urandom(32).hex(), bodies[i % len(bodies)], zstd=False) in (200, 201)
    seeder.close()

    stop_at = time.monotonic() + seconds
    done = threading.Event()

    def sample_memory() -> None:
        while not done.wait(0.25):
            result.rss_mb.append(_memory(gate_pid, "VmRSS"))

    def worker(n: int) -> None:
        local = random.Random(seed * 1000 + n)
        client = _Client(host, port, token)
        counts: Counter[str] = Counter()
        latencies: dict[str, list[float]] = {"hit": [], "miss": [], "put": []}
        errors = 0
        while time.monotonic() < stop_at:
            kind = local.choices([k for k, _ in _MIX], [w for _, w in _MIX])[0]
            started = time.perf_counter()
            try:
                if kind == "put":
                    status = put(client, os.urandom(32).hex(), local.choice(bodies), zstd=local.random() < 0.5)
                else:
                    if kind == "hit":
                        with lock:
                            action = local.choice(stored)[0]
                    else:
                        action = os.urandom(32).hex()
                    accept = {"Accept-Encoding": "zstd"} if local.random() < 0.7 else {}
                    status, _, _ = client.request("GET", prefix + action, None, accept)
            except (http.client.HTTPException, OSError):
                errors += 1
                continue
            latencies[kind].append((time.perf_counter() - started) * 1000)
            counts[f"{kind} {status}"] += 1
        client.close()
        with lock:
            result.requests.update(counts)
            result.transport_errors += errors
            for kind, values in latencies.items():
                result.latencies_ms.setdefault(kind, []).extend(values)

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    done.set()
    sampler.join()
    result.peak_rss_mb = _memory(gate_pid, "VmHWM")
    result.acknowledged = len(stored)
    result.lost = _read_back(host, port, token, prefix, stored)
    return result


def _read_back(host: str, port: int, token: str | None, prefix: str, stored: list[tuple[str, Body]]) -> list[str]:
    """The acknowledged actions the gate no longer serves whole and right (four readers)."""
    lost: list[str] = []
    lock = threading.Lock()
    todo = iter(list(stored))

    def reader() -> None:
        client = _Client(host, port, token)
        dctx = zstandard.ZstdDecompressor()
        while True:
            with lock:
                item = next(todo, None)
            if item is None:
                break
            action, body = item
            try:
                status, data, headers = client.request("GET", prefix + action, None, {"Accept-Encoding": "zstd"})
                if headers.get("content-encoding") == "zstd":
                    data = dctx.decompressobj().decompress(data)
                good = (status == 200 and hashlib.sha256(data).hexdigest() == body.output_id
                        and headers.get("x-go-output-id") == body.output_id)
            except (http.client.HTTPException, OSError, zstandard.ZstdError):
                good = False
            if not good:
                with lock:
                    lost.append(action)
        client.close()

    readers = [threading.Thread(target=reader, daemon=True) for _ in range(4)]
    for t in readers:
        t.start()
    for t in readers:
        t.join(600)
    return lost


@contextmanager
def _gate(backend: str, root: Path) -> Iterator[tuple[str, int]]:
    from tests.emulator import start_emulator
    from tests.gatefixture import start_gate

    with ExitStack() as stack:
        config: dict[str, Any] = {}
        env = None
        if backend == "gcs":
            emulator = stack.enter_context(start_emulator(data_dir=root / "bucket"))
            config = {"storage": {"backend": "gcs", "bucket": emulator.bucket}}
            env = emulator.env()
        gate = stack.enter_context(start_gate(root / "gate", config, env=env))
        yield gate.url, gate.proc.pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["local", "gcs"], default="local")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gocachegate-load-") as scratch, _gate(args.backend, Path(scratch)) as (
        url,
        pid,
    ):
        result = run_load(url, pid, seconds=args.seconds, clients=args.clients)
    summary = {"backend": args.backend, **result.summary()}
    json.dump(summary, sys.stdout, indent=1)
    print()
    return 0 if result.server_errors == 0 and not result.lost and result.transport_errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
