"""A real gate process on the gcs backend, on the emulator: what reaches GCS for each API call,
counted twice (the emulator's access log, the gate's own storage metrics), and what clients get."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import httpx
import pytest
import zstandard
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StartGate
from tests.emulator import Emulator, EmulatorRequest
from tests.gatefixture import GateProcess

pytestmark = pytest.mark.gcs

NS = "gcs-tests"


@pytest.fixture
def gcs_gate(gate_factory: StartGate, gcs_emulator: Emulator) -> Iterator[GateProcess]:
    config = {"storage": {"backend": "gcs", "bucket": gcs_emulator.bucket, "timeout_seconds": 5}}
    yield gate_factory(config, env=gcs_emulator.env())


def action_id(n: int) -> str:
    return hashlib.sha256(f"action {n}".encode()).hexdigest()


def put(gate: GateProcess, action: str, body: bytes, **headers: str) -> httpx.Response:
    output_id = headers.pop("output_id", hashlib.sha256(body).hexdigest())
    size = headers.pop("size", str(len(body)))
    return httpx.put(
        f"{gate.url}/v1/ns/{NS}/actions/{action}",
        content=body,
        headers={"X-Go-Output-Id": output_id, "X-Go-Size": size, **headers},
    )


def get(gate: GateProcess, action: str, **headers: str) -> httpx.Response:
    return httpx.get(f"{gate.url}/v1/ns/{NS}/actions/{action}", headers=headers)


def storage_ops(gate: GateProcess) -> dict[tuple[str, str], float]:
    """The metered wrapper's counters as the gate exports them: (op, outcome) -> count."""
    text = httpx.get(f"{gate.url}/metrics").text
    ops: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gocachegate_storage_operations_total" and sample.labels["backend"] == "gcs":
                key = (sample.labels["op"], sample.labels["outcome"])
                ops[key] = ops.get(key, 0) + sample.value
    return ops


def delta(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def entry_requests(requests: list[EmulatorRequest]) -> list[tuple[str, int]]:
    """What the gate asked GCS for, readiness probes left out."""
    return [(r.kind, r.status) for r in requests if "readiness-probe" not in r.path]


def test_put_then_hit_cost_one_write_and_one_read(gcs_gate: GateProcess, gcs_emulator: Emulator) -> None:
    body = os.urandom(3000)
    action = action_id(1)
    seen, ops = len(gcs_emulator.requests()), storage_ops(gcs_gate)

    assert put(gcs_gate, action, body).status_code == 201
    requests = gcs_emulator.requests()
    put_requests, seen = entry_requests(requests[seen:]), len(requests)
    assert put_requests == [("get", 404), ("upload", 200)]  # exists? (Class B), then the one write
    ops_after_put = storage_ops(gcs_gate)
    assert delta(ops, ops_after_put) == {("stat", "miss"): 1, ("write", "ok"): 1}

    for _ in range(3):
        answer = get(gcs_gate, action)
        assert answer.status_code == 200 and answer.content == body
    requests = gcs_emulator.requests()
    assert entry_requests(requests[seen:]) == [("media", 200)] * 3  # a hit is one read, no stat
    seen = len(requests)
    assert delta(ops_after_put, storage_ops(gcs_gate)) == {("read", "ok"): 3}

    assert put(gcs_gate, action, body).status_code == 200  # already there: nothing written
    assert entry_requests(gcs_emulator.requests()[seen:]) == [("get", 200)]
    assert len(gcs_emulator.object_names(f"ac/{NS}/")) == 1


def test_miss_is_one_read(gcs_gate: GateProcess, gcs_emulator: Emulator) -> None:
    seen = len(gcs_emulator.requests())
    assert get(gcs_gate, action_id(2)).status_code == 404
    assert entry_requests(gcs_emulator.requests()[seen:]) == [("media", 404)]


def test_digest_mismatch_writes_nothing(gcs_gate: GateProcess, gcs_emulator: Emulator) -> None:
    body = os.urandom(5000)
    wrong = hashlib.sha256(b"something else").hexdigest()
    seen = len(gcs_emulator.requests())
    assert put(gcs_gate, action_id(3), body, output_id=wrong).status_code == 400
    assert put(gcs_gate, action_id(3), body, size=str(len(body) + 1)).status_code == 400
    assert "upload" not in [kind for kind, _ in entry_requests(gcs_emulator.requests()[seen:])]
    assert gcs_emulator.object_names() == []
    assert get(gcs_gate, action_id(3)).status_code == 404


def test_compressed_and_plain_clients_get_the_same_bytes(gcs_gate: GateProcess, gcs_emulator: Emulator) -> None:
    plain = b"package main // a compressible object file\n" * 4000
    compressed = zstandard.ZstdCompressor().compress(plain)
    assert put(gcs_gate, action_id(4), plain).status_code == 201
    assert (
        put(
            gcs_gate,
            action_id(5),
            compressed,
            output_id=hashlib.sha256(plain).hexdigest(),
            size=str(len(plain)),
            **{"Content-Encoding": "zstd"},
        ).status_code
        == 201
    )

    for action in (action_id(4), action_id(5)):
        as_plain = get(gcs_gate, action, **{"Accept-Encoding": "identity"})
        assert "Content-Encoding" not in as_plain.headers
        assert as_plain.content == plain
        assert as_plain.headers["X-Go-Size"] == str(len(plain))
        with httpx.stream(
            "GET", f"{gcs_gate.url}/v1/ns/{NS}/actions/{action}", headers={"Accept-Encoding": "zstd"}
        ) as as_zstd:
            raw = b"".join(as_zstd.iter_raw())
        assert as_zstd.headers.get("Content-Encoding") == "zstd"
        assert len(raw) < len(plain) / 10
        assert zstandard.ZstdDecompressor().decompressobj().decompress(raw) == plain

    # stored compressed: the objects are far smaller than what Go put
    sizes = [int(info["size"]) for info in gcs_emulator.objects(f"ac/{NS}/")]
    assert len(sizes) == 2 and max(sizes) < len(plain) / 10
