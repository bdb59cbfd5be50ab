"""SIGTERM while requests are in flight: readiness turns false first, requests already started
finish (a slow upload is stored whole), new connections are refused once the listener closes, the
process exits 0, and the usage ledger's counts reach storage on the way out."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import struct
import time
from pathlib import Path

import httpx

from tests.conftest import StartGate

NS = "draining"


def test_sigterm_finishes_in_flight_requests_and_flushes_the_ledger(gate_factory: StartGate) -> None:
    gate = gate_factory({"server": {"drain_seconds": 1.0, "graceful_timeout_seconds": 20},
                         "usage": {"flush_seconds": 3600}})  # only the shutdown flush can write the ledger
    body = os.urandom(3 << 20)
    action = hashlib.sha256(b"slow upload").hexdigest()
    hit_body = b"already there\n" * 100
    hit_action = hashlib.sha256(b"hit").hexdigest()
    headers = {"X-Go-Output-Id": hashlib.sha256(hit_body).hexdigest(), "X-Go-Size": str(len(hit_body))}
    put = httpx.put(f"{gate.url}/v1/ns/{NS}/actions/{hit_action}", content=hit_body, headers=headers)
    assert put.status_code == 201

    slow = http.client.HTTPConnection("127.0.0.1", gate.port, timeout=30)
    slow.putrequest("PUT", f"/v1/ns/{NS}/actions/{action}")
    slow.putheader("Content-Length", str(len(body)))
    slow.putheader("X-Go-Size", str(len(body)))
    slow.putheader("X-Go-Output-Id", hashlib.sha256(body).hexdigest())
    slow.endheaders()
    slow.send(body[: 1 << 20])  # a third of the body, then the gate is told to stop

    with httpx.Client(base_url=gate.url) as client:
        gate.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        deadline = signalled + 2
        while (ready := client.get("/readyz")).status_code == 200:
            assert time.monotonic() < deadline, "readiness did not turn false"
            time.sleep(0.02)
        assert ready.status_code == 503 and ready.json() == {"error": "shutting down"}
        assert time.monotonic() - signalled < 1.0, "readiness must turn false first"
        hit = client.get(f"/v1/ns/{NS}/actions/{hit_action}")  # still served while draining
        assert hit.status_code == 200 and hit.content == hit_body

    time.sleep(1.5)  # the drain is over: the listener closes, the slow upload is still in flight
    try:
        refused = httpx.get(f"{gate.url}/healthz", timeout=2).status_code
    except httpx.TransportError:
        refused = 0
    assert refused == 0, "a new connection was accepted after the drain"
    for start in range(1 << 20, len(body), 256 << 10):
        slow.send(body[start : start + (256 << 10)])
        time.sleep(0.05)
    resp = slow.getresponse()
    assert resp.status == 201, resp.read()
    assert gate.proc.wait(timeout=20) == 0

    stored = gate.storage_path / "ac" / NS / action[:2] / action
    assert stored.is_file()
    segments = [object_bytes(p) for p in (gate.storage_path / "usage").rglob("*.json")]
    assert segments, "the usage ledger was not flushed at shutdown"
    rows = [row for segment in segments for row in json.loads(segment)["rows"]]
    puts = sum(row["counts"].get("puts_new", 0) for row in rows if row["namespace"] == NS)
    assert puts == 2, json.dumps(rows)  # both uploads, the slow one included


def object_bytes(path: Path) -> bytes:
    """An object of the local store without its header (server/storage/local.py: GCL1 | u32 | JSON | bytes)."""
    data = path.read_bytes()
    assert data[:4] == b"GCL1"
    (length,) = struct.unpack_from(">I", data, 4)
    return data[8 + length :]
