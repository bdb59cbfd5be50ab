"""Hostile input against a real gate process: names built to escape the store, bodies that lie
about their length, a zstd bomb, and clients that go quiet. Answers are 4xx with a reason, nothing
reaches storage that should not, memory stays bounded, and quiet clients are cut off.
(In-process cases of the same families are in tests/gate/test_cache_api.py.)
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import time
from pathlib import Path

import httpx
import pytest
import zstandard

from tests.conftest import StartGate
from tests.gatefixture import GateProcess
from tests.reliability.support import metric

HEX = "ab" * 32
OPS = "gocachegate_storage_operations_total"

HOSTILE_PATHS = [
    f"/v1/ns/../actions/{HEX}",
    f"/v1/ns/%2e%2e/actions/{HEX}",
    f"/v1/ns/a%2Fb/actions/{HEX}",
    f"/v1/ns/a/b/actions/{HEX}",
    f"/v1/ns/..%2F..%2Fetc/actions/{HEX}",
    f"/v1/ns/.hidden/actions/{HEX}",
    f"/v1/ns/%C3%BCn%C3%AFc%C3%B8de/actions/{HEX}",
    f"/v1/ns/ok%00/actions/{HEX}",
    f"/v1/ns/ok%5C..%5C/actions/{HEX}",
    f"/v1/ns/{'n' * 129}/actions/{HEX}",
    "/v1/ns/ok/actions/..",
    "/v1/ns/ok/actions/%2e%2e%2f%2e%2e%2fgate.yaml",
    f"/v1/ns/ok/actions/{HEX}%2F..",
    f"/v1/ns/ok/actions/{HEX}a",  # 65 characters
    f"/v1/ns/ok/actions/{HEX[:-1]}",  # 63
    f"/v1/ns/ok/actions/{HEX.upper()}",
    f"/v1/ns/ok/actions/{HEX[:-1]}%C3%A9",
    f"/v1/ns/ok/actions/{HEX}%00",
    f"/v1/admin/entries/..%2F../{HEX}",
    f"/v1/admin/entries/ok/..%2F..%2F{HEX[:58]}",
    "/v1/ns/ok/manifests/..%2F..%2Fgate.yaml",
]


def raw(gate: GateProcess, method: str, path: str, body: bytes = b"", **headers: str) -> tuple[int, bytes]:
    """A request sent exactly as written (no client normalizes the path on the way)."""
    conn = http.client.HTTPConnection("127.0.0.1", gate.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def files_under(directory: Path) -> set[Path]:
    return {p for p in directory.rglob("*") if p.is_file()}


def test_hostile_names_never_reach_storage(gate: GateProcess) -> None:
    body = b"x" * 100
    put_headers = {"X-Go-Output-Id": hashlib.sha256(body).hexdigest(), "X-Go-Size": str(len(body))}
    files_before = files_under(gate.directory)
    ops_before = metric(gate.url, OPS)
    for path in HOSTILE_PATHS:
        for method in ("GET", "PUT", "DELETE"):
            status, answer = raw(gate, method, path, body if method == "PUT" else b"",
                                 **(put_headers if method == "PUT" else {}))
            assert 400 <= status < 500, (method, path, status, answer)
            assert answer.startswith(b'{"error":'), (method, path, answer)
    assert metric(gate.url, OPS) == ops_before, "a hostile name reached the storage layer"
    assert files_under(gate.directory) - files_before == set()
    assert not (gate.storage_path / "ac").exists()


def test_content_length_that_lies(gate_factory: StartGate) -> None:
    gate = gate_factory({"server": {"client_timeout_seconds": 1.0}})
    body = b"y" * 1000
    headers = {"X-Go-Output-Id": hashlib.sha256(body).hexdigest(), "X-Go-Size": str(len(body))}
    path = f"/v1/ns/lies/actions/{HEX}"

    # Shorter than X-Go-Size: refused before the body is read.
    status, answer = raw(gate, "PUT", path, body[:10], **headers)
    assert status == 400 and b"Content-Length does not match X-Go-Size" in answer
    # Shorter than the bytes that follow: the rest is no HTTP request, and is refused as such.
    status, answer = raw(gate, "PUT", path, body, **headers, **{"Content-Length": "10"})
    assert status == 400, answer

    # Longer than what comes: the client goes quiet after half; the gate hangs up on it.
    with socket.create_connection(("127.0.0.1", gate.port)) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Content-Length": str(len(body))}.items())
        sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: gate\r\n{head}\r\n".encode() + body[:500])
        started = time.monotonic()
        sock.settimeout(10)
        answer = sock.recv(65536)
        assert time.monotonic() - started < 5, "the gate waited on a body that never came"
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer
    assert not (gate.storage_path / "ac").exists()
    assert httpx.get(f"{gate.url}/healthz").status_code == 200


def test_oversized_body_is_413_before_it_is_sent(gate_factory: StartGate) -> None:
    gate = gate_factory({"limits": {"max_entry_bytes": 1 << 20}})
    with socket.create_connection(("127.0.0.1", gate.port)) as sock:
        sock.sendall(f"PUT /v1/ns/big/actions/{HEX} HTTP/1.1\r\nHost: gate\r\nContent-Length: {64 << 20}\r\n"
                     f"X-Go-Size: {64 << 20}\r\nX-Go-Output-Id: {HEX}\r\n\r\n".encode())
        sock.settimeout(10)
        answer = b""
        while b"}" not in answer and (more := sock.recv(65536)):  # not one byte of the body was sent
            answer += more
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"over the limit" in answer


def vm(pid: int, name: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {name}")


def test_zstd_bomb_is_refused_with_bounded_memory(gate_factory: StartGate) -> None:
    gate = gate_factory({"limits": {"max_entry_bytes": 256 << 20}})
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(1 << 30))  # 1 GiB of zeros
    assert len(bomb) < 256 << 10
    httpx.get(f"{gate.url}/healthz")
    peak_before = vm(gate.proc.pid, "VmHWM")
    for declared in (1000, 200 << 20):  # far below what it decodes to, and near the limit
        headers = {"X-Go-Output-Id": HEX, "X-Go-Size": str(declared), "Content-Encoding": "zstd"}
        resp = httpx.put(f"{gate.url}/v1/ns/bomb/actions/{HEX}", content=bomb, headers=headers, timeout=120)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"] in ("decoded size exceeds X-Go-Size", "digest mismatch: SHA-256 of the body "
                                        "is not X-Go-Output-Id") or "bad zstd body" in resp.json()["error"]
    grown = vm(gate.proc.pid, "VmHWM") - peak_before
    assert grown < 64, f"the bomb cost {grown:.0f} MB of memory"
    assert not (gate.storage_path / "ac").exists()


def test_quiet_clients_are_cut_off_and_steady_ones_are_not(gate_factory: StartGate) -> None:
    gate = gate_factory({"server": {"client_timeout_seconds": 1.0}})

    def closed_within(sock: socket.socket, seconds: float) -> bool:
        sock.settimeout(seconds)
        try:
            return sock.recv(1024) == b""
        except TimeoutError:
            return False

    with socket.create_connection(("127.0.0.1", gate.port)) as silent:
        assert closed_within(silent, 5), "a connection that never sent a byte stayed open"
    with socket.create_connection(("127.0.0.1", gate.port)) as slowloris:
        slowloris.sendall(b"GET /healthz HTTP/1.1\r\nHost: gate\r\nX-Slow: ")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 5 and not closed:
            try:
                slowloris.sendall(b"a")  # a byte at a time, a header that never ends
            except OSError:
                closed = True
                break
            closed = closed_within(slowloris, 0.3)
        assert closed, "a header sent a byte at a time held the connection"

    body = b"z" * 40_000
    conn = http.client.HTTPConnection("127.0.0.1", gate.port, timeout=30)
    conn.putrequest("PUT", f"/v1/ns/steady/actions/{HEX}")
    for name, value in {"Content-Length": str(len(body)), "X-Go-Size": str(len(body)),
                        "X-Go-Output-Id": hashlib.sha256(body).hexdigest()}.items():
        conn.putheader(name, value)
    conn.endheaders()
    for start in range(0, len(body), 5_000):  # 8 pieces, 0.5 s apart: slow, never quiet for 1 s
        conn.send(body[start : start + 5_000])
        time.sleep(0.5)
    assert conn.getresponse().status == 201
    conn.close()


@pytest.fixture
def gate(gate_factory: StartGate) -> GateProcess:
    return gate_factory()
