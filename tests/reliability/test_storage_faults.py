"""Storage failing on a share of its calls: a fault-injecting proxy between the gate and the GCS
emulator answers 503, stalls past the gate's storage timeout, or loses the answer of a call that
did reach the bucket. The gate answers 503 (never 500, never a wrong body), the helper takes that
as a miss or a dropped upload, the build is the reference one, and nothing in the bucket is corrupt.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zstandard

from tests.conftest import StartGate
from tests.emulator import Emulator, start_emulator
from tests.gatefixture import GateProcess
from tests.gohelpers import Machine
from tests.reliability.support import FaultyProxy, Reference, digest, metric

pytestmark = pytest.mark.gcs


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with start_emulator() as emu:
        yield emu


@pytest.fixture
def proxy(emulator: Emulator) -> Iterator[FaultyProxy]:
    faults = FaultyProxy(emulator.url, error_rate=0.15, stall_rate=0.04, lost_rate=0.04, stall_seconds=2.5)
    with faults.running():
        yield faults


@pytest.fixture
def gate(gate_factory: StartGate, emulator: Emulator, proxy: FaultyProxy) -> GateProcess:
    env = {**emulator.env(), "STORAGE_EMULATOR_HOST": proxy.url}
    return gate_factory({"storage": {"backend": "gcs", "bucket": emulator.bucket, "timeout_seconds": 1.5}}, env=env)


def bucket_problems(emulator: Emulator) -> tuple[int, list[str]]:
    """Every entry object in the bucket, read straight from the emulator: (how many, those that are
    not whole: a frame whose payload does not decode to its size and SHA-256)."""
    names = emulator.object_names("ac/")
    bad = []
    for name in names:
        quoted = urllib.parse.quote(name, safe="")
        url = f"{emulator.url}/download/storage/v1/b/{emulator.bucket}/o/{quoted}?alt=media"
        with urllib.request.urlopen(url, timeout=10) as resp:
            frame = resp.read()
        (length,) = struct.unpack_from(">I", frame, 4)
        header = json.loads(frame[8 : 8 + length])
        payload = frame[8 + length :]
        try:
            if header["encoding"] == "zstd":
                payload = zstandard.ZstdDecompressor().decompressobj().decompress(payload)
        except zstandard.ZstdError:
            bad.append(name)
            continue
        if len(payload) != header["size"] or hashlib.sha256(payload).hexdigest() != header["output_id"]:
            bad.append(name)
    return len(names), bad


def test_gate_answers_503_and_stores_nothing_corrupt(gate: GateProcess, proxy: FaultyProxy,
                                                      emulator: Emulator) -> None:
    ns = "faults"
    bodies = [os.urandom(n) if n % 2 else b"object code " * (n // 12) for n in (700, 5_000, 90_001, 2_000_000)]
    answered: Counter[str] = Counter()
    stored: dict[str, bytes] = {}
    with httpx.Client(base_url=gate.url, timeout=30) as client:
        for i in range(60):
            body = bodies[i % len(bodies)]
            action = hashlib.sha256(b"action %d" % i).hexdigest()
            put = client.put(f"/v1/ns/{ns}/actions/{action}", content=body,
                             headers={"X-Go-Output-Id": hashlib.sha256(body).hexdigest(), "X-Go-Size": str(len(body))})
            answered[f"put {put.status_code}"] += 1
            if put.status_code in (200, 201):
                stored[action] = body
            got = client.get(f"/v1/ns/{ns}/actions/{action}", headers={"Accept-Encoding": "zstd"})
            answered[f"get {got.status_code}"] += 1
            if got.status_code == 200:  # (httpx decodes zstd itself)
                assert got.content == body, "a wrong body was served"
            for resp in (put, got):
                assert resp.status_code in (200, 201, 404, 503), (resp.status_code, resp.text)
                if resp.status_code >= 400:
                    assert resp.json()["error"], resp.text
    assert answered["put 503"] + answered["get 503"] > 0, answered
    assert proxy.outcomes["error"] and proxy.outcomes["stall"] and proxy.outcomes["lost"], proxy.outcomes
    assert metric(gate.url, "gocachegate_requests_total", code="500") == 0

    proxy.set(enabled=False)
    with httpx.Client(base_url=gate.url, timeout=30) as client:
        for action, body in stored.items():  # every acknowledged put is there, whole
            got = client.get(f"/v1/ns/{ns}/actions/{action}")
            assert got.status_code == 200 and got.content == body
    count, bad = bucket_problems(emulator)
    assert count >= len(stored) and not bad, bad
    print(f"\nstorage faults: {dict(proxy.outcomes)}; gate answered {dict(answered)}")


@pytest.mark.go
def test_build_through_failing_storage_is_the_reference_build(reference: Reference, gate: GateProcess,
                                                               proxy: FaultyProxy, emulator: Emulator,
                                                               tmp_path: Path) -> None:
    machine = Machine(tmp_path / "m", gate.url, GOCACHEGATE_NAMESPACE="faulty")
    run = machine.go("build", "-o", str(tmp_path / "app"), ".", cwd=reference.module).check()
    assert digest(tmp_path / "app") == reference.binary_sha
    s = run.stats
    assert s["corrupt"] == 0 and s["gets"] == s["hits"] + s["misses"], s
    assert s["upload_errors"] + s["remote_errors"] > 0 or "gate unavailable" in run.stderr, (s, proxy.outcomes)
    assert metric(gate.url, "gocachegate_requests_total", code="503") > 0
    assert metric(gate.url, "gocachegate_requests_total", code="500") == 0

    proxy.set(enabled=False)
    count, bad = bucket_problems(emulator)
    assert count > 0 and not bad, bad
    fresh = Machine(tmp_path / "fresh", gate.url, GOCACHEGATE_NAMESPACE="faulty")
    again = fresh.go("build", "-o", str(tmp_path / "again"), ".", cwd=reference.module).check()
    assert again.stats["corrupt"] == 0 and again.stats["remote_errors"] == 0 and again.stats["remote_hits"] > 0
    assert digest(tmp_path / "again") == reference.binary_sha
