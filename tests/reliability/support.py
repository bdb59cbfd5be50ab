"""Parts the reliability tests share: a reference build, filling a gate from an L1, reading the
gate's counters, and two misbehaving servers (a listener that never answers, a fault-injecting
proxy in front of the GCS emulator).

The reference is what "the same result as without a cache" means: the sample module built by the
go command with no GOCACHEPROG at all, and once more through the helper with no gate (its L1 is
then a complete set of the module's entries, used to fill gates without another cold build).
"""

from __future__ import annotations

import hashlib
import http.client
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "FaultyProxy",
    "L1Entry",
    "Reference",
    "check_l1",
    "digest",
    "fill_gate",
    "l1_entries",
    "metric",
    "stalled_listener",
]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Reference:
    module: Path  # the sample module's source
    binary_sha: str  # of the binary go builds with no cache program at all
    native_seconds: float  # that cold build
    helper_seconds: float  # the same cold build through the helper with no gate
    l1: Path  # the helper's L1 after it: every entry of the build


@dataclass(frozen=True)
class L1Entry:
    action: str
    output: str
    size: int
    body: Path


def l1_entries(l1: Path) -> list[L1Entry]:
    """The action records of an L1 directory (docs/helper.md: ``xx/<action>-a``) and their bodies."""
    found = []
    for record in sorted(l1.glob("*/*-a")):
        version, output, size, _ = record.read_text().split()
        assert version == "v1"
        found.append(L1Entry(record.name[:-2], output, int(size), l1 / output[:2] / f"{output}-d"))
    return found


def check_l1(l1: Path) -> int:
    """Every body file is named by its SHA-256 and every action record names a body of its size (or
    one trimmed away: a miss, not an error). Returns how many action records there are."""
    for body in l1.glob("*/*-d"):
        assert hashlib.sha256(body.read_bytes()).hexdigest() == body.name[:-2], f"{body} is not what it is named"
    for record in l1.glob("*/*-a"):
        _, output, size, _ = record.read_text().split()
        path = l1 / output[:2] / f"{output}-d"
        assert not path.exists() or path.stat().st_size == int(size), record
    assert not list(l1.glob("*/.tmp-*")), "temp files left behind"
    return len(list(l1.glob("*/*-a")))


def fill_gate(url: str, namespace: str, l1: Path, token: str | None = None) -> int:
    """PUT every entry of ``l1`` into the gate as the helper would (plain bodies); returns how many."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    stored = 0
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for entry in l1_entries(l1):
            resp = client.put(
                f"/v1/ns/{namespace}/actions/{entry.action}",
                content=entry.body.read_bytes(),
                headers={"X-Go-Output-Id": entry.output, "X-Go-Size": str(entry.size)},
            )
            assert resp.status_code in (200, 201), resp.text
            stored += resp.status_code == 201
    return stored


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of a gate metric's samples whose labels include ``labels`` (0 when there are none)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@contextmanager
def stalled_listener(greet: Callable[[socket.socket], None] | None = None) -> Iterator[str]:
    """A URL whose server accepts every connection and never answers (nor closes) it; ``greet``
    first gets each connection, to read from it or send part of an answer."""
    server = socket.create_server(("127.0.0.1", 0), backlog=512)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)
            if greet is not None:
                greet(conn)

    thread = threading.Thread(target=accept, name="stalled-listener", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


@dataclass
class FaultyProxy:
    """Forwards HTTP to ``upstream`` (the GCS emulator), failing a share of the calls on purpose.

    Each call draws once: with probability ``error_rate`` it gets
    a 503 without reaching the emulator; with ``stall_rate`` it is held for ``stall_seconds`` and
    the connection is closed unanswered (the emulator never sees it); with ``lost_rate`` it reaches
    the emulator but its answer is replaced by a 503 (done, and the caller cannot know). The rest
    pass. ``outcomes`` counts what happened; ``enabled`` turns the faults off and on.
    """

    upstream: str
    error_rate: float = 0.0
    stall_rate: float = 0.0
    lost_rate: float = 0.0
    stall_seconds: float = 3.0
    seed: int = 8
    enabled: bool = True
    outcomes: Counter[str] = field(default_factory=Counter)
    url: str = ""

    def _draw(self) -> str:
        with self._lock:
            if not self.enabled:
                return "pass"
            x = self._random.random()
        if x < self.error_rate:
            return "error"
        if x < self.error_rate + self.stall_rate:
            return "stall"
        if x < self.error_rate + self.stall_rate + self.lost_rate:
            return "lost"
        return "pass"

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    @contextmanager
    def running(self) -> Iterator[FaultyProxy]:
        self._lock = threading.Lock()
        self._random = random.Random(self.seed)
        proxy = self
        target = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    parts = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(parts)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _serve(self) -> None:
                body = self._body()
                outcome = proxy._draw()
                proxy._count(outcome)
                if outcome == "error":
                    self._answer(503, [("Content-Type", "application/json")], b'{"error": {"code": 503}}')
                    return
                if outcome == "stall":
                    time.sleep(proxy.stall_seconds)
                    self.close_connection = True
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")}
                upstream = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body if body or self.command in (
                        "POST", "PUT", "PATCH") else None, headers=headers)
                    resp = upstream.getresponse()
                    data = resp.read()
                    if outcome == "lost":
                        self._answer(503, [("Content-Type", "application/json")], b'{"error": {"code": 503}}')
                        return
                    self._answer(resp.status, resp.getheaders(), data)
                finally:
                    upstream.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, name="faulty-proxy", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()

    def set(self, *, enabled: bool) -> None:
        with self._lock:
            self.enabled = enabled
