"""Stored entries damaged behind the gate's back (bytes flipped, objects cut short) in the local
store and in the GCS bucket: the build still succeeds with the reference binary, every damaged
entry is a miss that go computes locally, and the counters say so.

Who notices: an entry stored plain and cut short is refused by the gate itself (its frame says
how long it is: 404, removed, ``gocachegate_cache_corrupt_entries_total``); every other damage
reaches the helper, whose SHA-256 (or zstd decoder) refuses it (``corrupt`` in its stats).
"""

from __future__ import annotations

import json
import re
import struct
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import StartGate
from tests.emulator import Emulator, start_emulator
from tests.gohelpers import Machine
from tests.reliability.support import Reference, digest, fill_gate, l1_entries, metric

pytestmark = pytest.mark.go

NS = "damaged"


@dataclass(frozen=True)
class Damage:
    action: str
    how: str  # "flip" or "cut"
    encoding: str  # how the gate stored the payload

    @property
    def seen_by_gate(self) -> bool:
        return self.how == "cut" and self.encoding == "identity"


def entry_encoding(frame: bytes) -> str:
    """The payload encoding named in a stored entry frame (server/entries.py: GCE1 | u32 | JSON)."""
    assert frame[:4] == b"GCE1"
    (length,) = struct.unpack_from(">I", frame, 4)
    encoding: str = json.loads(frame[8 : 8 + length])["encoding"]
    return encoding


def damage(data: bytes, how: str) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF]) if how == "flip" else data[:-16]


def pick(reference: Reference) -> list[tuple[str, str]]:
    """20 entries of the build, big enough that the last 16 bytes are payload: half flipped, half cut."""
    big = [e.action for e in l1_entries(reference.l1) if e.size >= 256]
    chosen = big[:: max(1, len(big) // 20)][:20]
    return [(action, "flip" if i % 2 == 0 else "cut") for i, action in enumerate(chosen)]


def damage_local(storage: Path, plan: list[tuple[str, str]]) -> list[Damage]:
    done = []
    for action, how in plan:
        path = storage / "ac" / NS / action[:2] / action
        data = path.read_bytes()
        (meta,) = struct.unpack_from(">I", data, 4)  # server/storage/local.py: GCL1 | u32 | JSON | object
        done.append(Damage(action, how, entry_encoding(data[8 + meta :])))
        path.write_bytes(damage(data, how))
    return done


def damage_bucket(emulator: Emulator, plan: list[tuple[str, str]]) -> list[Damage]:
    """Rewrite objects in the bucket (a media upload: the emulator stores whatever it is sent, with a
    CRC32C of the damaged bytes, so GCS's own check passes and only the entry's digest can tell)."""
    done = []
    for action, how in plan:
        name = f"ac/{NS}/{action[:2]}/{action}"
        quoted = urllib.parse.quote(name, safe="")
        with urllib.request.urlopen(f"{emulator.url}/download/storage/v1/b/{emulator.bucket}/o/{quoted}?alt=media",
                                    timeout=10) as resp:
            data = resp.read()
        done.append(Damage(action, how, entry_encoding(data)))
        query = urllib.parse.urlencode({"uploadType": "media", "name": name})
        upload = urllib.request.Request(f"{emulator.url}/upload/storage/v1/b/{emulator.bucket}/o?{query}",
                                        data=damage(data, how), method="POST")
        with urllib.request.urlopen(upload, timeout=10) as resp:
            assert resp.status == 200
    return done


@pytest.fixture(params=["local", pytest.param("gcs", marks=pytest.mark.gcs)])
def backend(request: pytest.FixtureRequest) -> Iterator[Emulator | None]:
    if request.param == "local":
        yield None
        return
    with start_emulator() as emulator:
        yield emulator


def test_damaged_entries_are_counted_misses_and_the_build_is_right(
    reference: Reference, gate_factory: StartGate, backend: Emulator | None, tmp_path: Path
) -> None:
    logged = {"server": {"access_log": True}}  # the log says which entries go asked for
    if backend is None:
        gate = gate_factory(logged)
    else:
        gate = gate_factory({**logged, "storage": {"backend": "gcs", "bucket": backend.bucket}}, env=backend.env())
    fill_gate(gate.url, NS, reference.l1)
    plan = pick(reference)
    damaged = damage_local(gate.storage_path, plan) if backend is None else damage_bucket(backend, plan)
    assert {d.encoding for d in damaged} == {"identity", "zstd"}, "both payload kinds should be damaged"

    machine = Machine(tmp_path / "m", gate.url, GOCACHEGATE_NAMESPACE=NS, GOCACHEGATE_VERBOSE="1")
    run = machine.go("build", "-o", str(tmp_path / "app"), ".", cwd=reference.module).check()
    assert digest(tmp_path / "app") == reference.binary_sha

    s = run.stats
    asked = set(re.findall(rf'"GET /v1/ns/{NS}/actions/([0-9a-f]{{64}}) HTTP', gate.log()))
    met = [d for d in damaged if d.action in asked]  # a hit high in the graph spares go the rest
    assert len(met) >= 5 and {d.encoding for d in met} == {"identity", "zstd"}, (len(asked), damaged)
    by_helper = [d for d in met if not d.seen_by_gate]
    by_gate = [d for d in met if d.seen_by_gate]
    assert s["corrupt"] == len(by_helper), (s, damaged)
    assert s["remote_errors"] == 0 and s["remote_hits"] + s["misses"] == s["gets"], s
    assert s["misses"] >= len(met)  # each damaged entry go met was computed again
    assert metric(gate.url, "gocachegate_cache_corrupt_entries_total", namespace=NS) == len(by_gate)
    assert run.stderr.count("discarded a remote entry") == 1, run.stderr  # said once, counted always
    assert not list((tmp_path / "m" / "l1").glob("*/.tmp-*"))
