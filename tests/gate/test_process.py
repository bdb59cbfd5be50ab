"""The gate as it runs: a real ``gocachegate serve`` process on a loopback port."""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import StartGate
from tests.gate.conftest import entry_headers, new_action, token_config
from tests.gatefixture import GateProcess, start_gate


@pytest.fixture(scope="module")
def shared_gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GateProcess]:
    """One gate for tests that leave nothing behind."""
    with start_gate(tmp_path_factory.mktemp("gate")) as gate:
        yield gate


def raw_request(gate: GateProcess, method: str, path: str, body: bytes = b"", **headers: str) -> tuple[int, bytes]:
    """A request with the path sent byte for byte (http.client does not normalize it)."""
    conn = http.client.HTTPConnection("127.0.0.1", gate.port, timeout=10)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_round_trip_and_miss(gate: GateProcess) -> None:
    body = os.urandom(3000) * 3
    action = new_action()
    with httpx.Client(base_url=gate.url) as client:
        assert client.get(f"/v1/ns/default/actions/{action}").status_code == 404
        resp = client.put(f"/v1/ns/default/actions/{action}", content=body, headers=entry_headers(body))
        assert resp.status_code == 201
        resp = client.get(f"/v1/ns/default/actions/{action}")
        assert resp.status_code == 200 and resp.content == body
        assert resp.headers["x-go-output-id"] == hashlib.sha256(body).hexdigest()
    assert gate.entries("default") == 1


@pytest.mark.parametrize(
    "path",
    [
        "/v1/ns/../actions/" + "a" * 64,
        "/v1/ns/ok/actions/..",
        "/v1/ns/ok/actions/../../../etc/passwd",
        "/v1/ns/./actions/" + "a" * 64,
    ],
)
def test_dot_segments_are_400(shared_gate: GateProcess, path: str) -> None:
    status, body = raw_request(shared_gate, "GET", path)
    assert status == 400 and b"bad " in body
    status, _ = raw_request(shared_gate, "PUT", path, b"x", **entry_headers(b"x"))
    assert status == 400
    assert not any(shared_gate.storage_path.rglob("*"))


def test_racing_puts_one_201_one_200(gate: GateProcess) -> None:
    action = new_action()
    bodies = [os.urandom(4 << 20), os.urandom(4 << 20)]
    statuses: list[int] = []
    barrier = threading.Barrier(2)

    def put(body: bytes) -> None:
        with httpx.Client(base_url=gate.url, timeout=30) as client:
            barrier.wait()
            resp = client.put(f"/v1/ns/race/actions/{action}", content=body, headers=entry_headers(body))
            statuses.append(resp.status_code)

    threads = [threading.Thread(target=put, args=(body,)) for body in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 201]
    resp = httpx.get(f"{gate.url}/v1/ns/race/actions/{action}", headers={"Accept-Encoding": "identity"})
    assert resp.content in bodies
    assert gate.entries("race") == 1
    assert not [p for p in gate.storage_path.rglob(".~tmp-*")]


def test_413_while_streaming_over_a_socket(gate_factory: StartGate) -> None:
    gate = gate_factory({"limits": {"max_entry_bytes": 1 << 20}})
    announced = b"a" * (1 << 20)

    def body() -> Iterator[bytes]:  # chunked: no Content-Length to refuse up front
        for _ in range(64):
            yield b"a" * 65536

    with httpx.Client(base_url=gate.url, timeout=30) as client:
        resp = client.put(f"/v1/ns/big/actions/{new_action()}", content=body(), headers=entry_headers(announced))
        assert resp.status_code == 413, resp.text
        resp = client.put(
            f"/v1/ns/big/actions/{new_action()}",
            content=b"b" * ((1 << 20) + 1),
            headers=entry_headers(b"b" * ((1 << 20) + 1)),
        )
        assert resp.status_code == 413 and "X-Go-Size" in resp.json()["error"]
    assert gate.entries("big") == 0


def test_static_tokens_in_a_real_process(gate_factory: StartGate) -> None:
    gate = gate_factory(token_config(("r", "reader-sa", "reader", ["*"]), ("w", "writer-sa", "writer", ["gardener.*"])))
    body = b"output bytes"
    action = new_action()
    path = f"/v1/ns/gardener.gardener/actions/{action}"
    with httpx.Client(base_url=gate.url) as client:
        assert client.put(path, content=body, headers=entry_headers(body)).status_code == 401
        resp = client.put(path, content=body, headers={**entry_headers(body), "Authorization": "Bearer r"})
        assert resp.status_code == 403
        assert gate.entries("gardener.gardener") == 0
        resp = client.put(path, content=body, headers={**entry_headers(body), "Authorization": "Bearer w"})
        assert resp.status_code == 201
        resp = client.get(path, headers={"Authorization": "Bearer r"})
        assert resp.status_code == 200 and resp.content == body
    assert gate.entries("gardener.gardener") == 1
    assert "Bearer" not in gate.log()  # subjects are logged with decisions; tokens never


def test_sigterm_turns_readiness_false_first_then_exits_0(gate_factory: StartGate) -> None:
    gate = gate_factory({"server": {"drain_seconds": 1.5}})
    with httpx.Client(base_url=gate.url) as client:
        assert client.get("/readyz").status_code == 200
        started = time.monotonic()
        gate.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        resp = client.get("/readyz")
        assert resp.status_code == 503 and resp.json() == {"error": "shutting down"}
        assert client.get("/healthz").status_code == 200  # still serving while draining
        assert client.get(f"/v1/ns/default/actions/{new_action()}").status_code == 404
    assert gate.proc.wait(timeout=15) == 0
    assert 1.4 < time.monotonic() - started < 10


def test_sigint_skips_the_drain(gate_factory: StartGate) -> None:
    gate = gate_factory({"server": {"drain_seconds": 60}})
    started = time.monotonic()
    gate.proc.send_signal(signal.SIGINT)
    assert gate.proc.wait(timeout=15) == 0
    assert time.monotonic() - started < 10


def test_gate_from_a_ready_config_file(tmp_path: Path) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text(f"storage:\n  path: {tmp_path / 'elsewhere'}\n  fsync: false\nlimits:\n  max_entry_bytes: 10\n")
    with start_gate(tmp_path / "gate", config_file=config) as gate:
        body = b"x" * 11
        resp = httpx.put(f"{gate.url}/v1/ns/n/actions/{new_action()}", content=body, headers=entry_headers(body))
        assert resp.status_code == 413
        assert gate.config_path == config
