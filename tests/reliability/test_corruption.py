"""Stored entries damaged behind the gate's back (bytes flipped, objects cut short) in the local
store and in the GCS bucket: the build still succeeds with the reference binary, every damaged
entry is a miss that go computes locally, and the counters say so.

Who notices: an entry stored plain and cut short is refused by the gate itself (its frame says
how long it is: 404, removed, ``gocachegate_cache_corrupt_entries_total``); every other damage
reaches the helper, whose SHA-256 (or zstd decoder) refuses it (``corrupt`` in its stats).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import StartGate
from tests.emulator import Emulator, start_emulator
from tests.gatefixture import GateProcess
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


def damage(data: bytes, how: str) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF]) if how == "flip" else data[:-16]


class LocalStore:
    """Entry objects as files of the local backend (server/storage/local.py: GCL1 | u32 | JSON | object)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, action: str) -> Path:
        return self.root / "ac" / NS / action[:2] / action

    def frame(self, action: str) -> bytes:
        data = self._path(action).read_bytes()
        (meta,) = struct.unpack_from(">I", data, 4)
        return data[8 + meta :]

    def damage(self, action: str, how: str) -> None:
        path = self._path(action)
        path.write_bytes(damage(path.read_bytes(), how))


class Bucket:
    """Entry objects in the emulator's bucket, rewritten by a media upload: the emulator stores what
    it is sent with a CRC32C of those bytes, so GCS's own check passes and only the digest can tell."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    def frame(self, action: str) -> bytes:
        quoted = urllib.parse.quote(f"ac/{NS}/{action[:2]}/{action}", safe="")
        url = f"{self.emulator.url}/download/storage/v1/b/{self.emulator.bucket}/o/{quoted}?alt=media"
        with urllib.request.urlopen(url, timeout=10) as resp:
            data: bytes = resp.read()
            return data

    def damage(self, action: str, how: str) -> None:
        query = urllib.parse.urlencode({"uploadType": "media", "name": f"ac/{NS}/{action[:2]}/{action}"})
        upload = urllib.request.Request(f"{self.emulator.url}/upload/storage/v1/b/{self.emulator.bucket}/o?{query}",
                                        data=damage(self.frame(action), how), method="POST")
        with urllib.request.urlopen(upload, timeout=10) as resp:
            assert resp.status == 200


def encoding_of(frame: bytes) -> str:
    """The payload encoding named in a stored entry frame (server/entries.py: GCE1 | u32 | JSON)."""
    assert frame[:4] == b"GCE1"
    (length,) = struct.unpack_from(">I", frame, 4)
    encoding: str = json.loads(frame[8 : 8 + length])["encoding"]
    return encoding


def asked(log: str) -> set[str]:
    return set(re.findall(rf'"GET /v1/ns/{NS}/actions/([0-9a-f]{{64}}) HTTP', log))


def damage_some(store: LocalStore | Bucket, candidates: list[str]) -> list[Damage]:
    """Up to 4 entries of each (flip, cut) x (identity, zstd), big enough that 16 bytes are payload."""
    plan: dict[tuple[str, str], list[str]] = {}
    for action in candidates:
        encoding = encoding_of(store.frame(action))
        for how in ("flip", "cut"):
            chosen = plan.setdefault((how, encoding), [])
            if len(chosen) < 4 and all(action not in c for c in plan.values()):
                chosen.append(action)
    done = []
    for (how, encoding), actions in plan.items():
        for action in actions:
            store.damage(action, how)
            done.append(Damage(action, how, encoding))
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
        store: LocalStore | Bucket = LocalStore(gate.storage_path)
    else:
        gate = gate_factory({**logged, "storage": {"backend": "gcs", "bucket": backend.bucket}}, env=backend.env())
        store = Bucket(backend)
    fill_gate(gate.url, NS, reference.l1)
    # A warm build first: go asks a warm gate for the top of its action graph only, so damage
    # entries it will ask for again (a miss makes it ask for more, never less).
    # (No prefetch for it: it would leave a manifest, and the build under test would then meet each
    # damaged entry twice, on the prefetch stream and in its own get, and count it twice.)
    Machine(tmp_path / "probe", gate.url, GOCACHEGATE_NAMESPACE=NS, GOCACHEGATE_PREFETCH="0").go(
        "build", "-o", str(tmp_path / "probe.bin"), ".", cwd=reference.module).check()
    sizes = {e.action: e.size for e in l1_entries(reference.l1)}
    damaged = damage_some(store, sorted(a for a in asked(gate.log()) if sizes.get(a, 0) >= 256))
    assert {(d.how, d.encoding) for d in damaged} == {(h, e) for h in ("flip", "cut") for e in ("identity", "zstd")}

    seen = len(gate.log())
    machine = Machine(tmp_path / "m", gate.url, GOCACHEGATE_NAMESPACE=NS, GOCACHEGATE_VERBOSE="1")
    run = machine.go("build", "-o", str(tmp_path / "app"), ".", cwd=reference.module).check()
    assert digest(tmp_path / "app") == reference.binary_sha

    s = run.stats
    assert {d.action for d in damaged} <= asked(gate.log()[seen:])
    by_helper = [d for d in damaged if not d.seen_by_gate]
    assert s["corrupt"] == len(by_helper), (s, damaged)
    assert s["remote_errors"] == 0 and s["remote_hits"] + s["misses"] == s["gets"], s
    assert s["misses"] >= len(damaged)  # each damaged entry was computed again
    assert run.stderr.count("discarded a remote entry") == 1, run.stderr  # said once, counted always
    assert not list((tmp_path / "m" / "l1").glob("*/.tmp-*"))

    # The helper named them in its session report; the gate checked each and removed it.
    deadline = time.monotonic() + 20
    while (left := [d for d in damaged if state(gate, d.action) == "corrupt"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"still stored: {left}"
    # Each counted once: at the hit by the gate's own check (cut plain ones), or when it checked a report.
    assert metric(gate.url, "gocachegate_cache_corrupt_entries_total", namespace=NS) == len(damaged)
    # So the next job meets none of them, and its puts store them whole again.
    healed = Machine(tmp_path / "healed", gate.url, GOCACHEGATE_NAMESPACE=NS)
    after = healed.go("build", "-o", str(tmp_path / "healed.bin"), ".", cwd=reference.module).check()
    assert after.stats["corrupt"] == 0 and digest(tmp_path / "healed.bin") == reference.binary_sha
    assert {state(gate, d.action) for d in damaged} == {"whole"}, "the next job's puts did not store them again"


def state(gate: GateProcess, action: str) -> str:
    """What the gate serves for an action: "absent", "whole", or "corrupt" (httpx decodes zstd)."""
    try:
        resp = httpx.get(f"{gate.url}/v1/ns/{NS}/actions/{action}", timeout=10)
    except httpx.DecodingError:
        return "corrupt"
    if resp.status_code == 404:
        return "absent"
    assert resp.status_code == 200, resp.text
    return "whole" if hashlib.sha256(resp.content).hexdigest() == resp.headers["X-Go-Output-Id"] else "corrupt"


def test_a_report_cannot_remove_a_good_entry(gate_factory: StartGate) -> None:
    gate = gate_factory()
    body = b"a good entry\n" * 100
    action = hashlib.sha256(b"good").hexdigest()
    headers = {"X-Go-Output-Id": hashlib.sha256(body).hexdigest(), "X-Go-Size": str(len(body))}
    assert httpx.put(f"{gate.url}/v1/ns/{NS}/actions/{action}", content=body, headers=headers).status_code == 201
    report = {"gets": 1, "misses": 1, "corrupt": 1, "corrupt_actions": [action, "0" * 64]}
    assert httpx.post(f"{gate.url}/v1/ns/{NS}/sessions", json=report).status_code == 202
    bad = httpx.post(f"{gate.url}/v1/ns/{NS}/sessions", json={"corrupt_actions": ["../../etc"]})
    assert bad.status_code == 400 and bad.json()["error"]
    time.sleep(0.5)
    assert state(gate, action) == "whole"
    assert metric(gate.url, "gocachegate_cache_corrupt_entries_total", namespace=NS) == 0
