"""The gate's side, in process: manifests by role, the prefetch stream's frames and costs, the hot tier."""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
from pathlib import Path

import pytest
import zstandard

from cacheprog.manifest import decode, encode
from tests.gate.conftest import InProcess, entry_headers, in_process, new_action, token_config

pytestmark = pytest.mark.anyio

NS = "team.repo"
TOKENS = token_config(
    ("reader-token", "ci:presubmit", "reader", ["team.*"]),
    ("writer-token", "ci:postsubmit", "writer", ["team.*"]),
)
READER = {"Authorization": "Bearer reader-token"}
WRITER = {"Authorization": "Bearer writer-token"}
ENTRY = struct.Struct(">32s32sQqqBQ")


async def _put(gate: InProcess, body: bytes) -> str:
    action = new_action()
    resp = await gate.client.put(f"/v1/ns/{NS}/actions/{action}", content=body,
                                 headers={**entry_headers(body, **{"X-Go-Compute-Ms": "42"}), **WRITER})
    assert resp.status_code == 201, resp.text
    return action


def _frames(data: bytes) -> list[tuple[str, bytes, bytes]]:
    """(kind, action, decoded payload) per frame, as the helper reads the stream; checks the end frame."""
    assert data[:4] == b"GCP1"
    out: list[tuple[str, bytes, bytes]] = []
    pos, sent = 4, 0
    while True:
        kind = data[pos:pos + 1]
        pos += 1
        if kind == b"Z":
            assert struct.unpack(">I", data[pos:pos + 4])[0] == sent and pos + 4 == len(data)
            return out
        if kind in (b"M", b"S"):
            out.append((kind.decode(), data[pos:pos + 32], b""))
            pos += 32
            continue
        assert kind == b"E"
        action, output, size, put_ms, compute_ms, encoding, length = ENTRY.unpack_from(data, pos)
        pos += ENTRY.size
        payload = data[pos:pos + length]
        pos += length
        if encoding == 1:
            payload = zstandard.ZstdDecompressor().decompress(payload, max_output_size=size)
        assert len(payload) == size and hashlib.sha256(payload).digest() == output
        assert put_ms > 1_600_000_000_000 and compute_ms == 42
        out.append(("E", action, payload))
        sent += 1


async def test_writers_store_manifests_and_readers_only_read_them(tmp_path: Path) -> None:
    async with in_process(tmp_path, TOKENS) as gate:
        url = f"/v1/ns/{NS}/manifests/go-test-all"
        assert (await gate.client.get(url, headers=READER)).status_code == 404
        manifest = encode([os.urandom(32) for _ in range(100)], "go test ./...")
        assert (await gate.client.put(url, content=manifest, headers=READER)).status_code == 403
        assert (await gate.client.put(url, content=manifest, headers=WRITER)).status_code == 204
        got = await gate.client.get(url, headers=READER)
        assert got.status_code == 200 and got.content == manifest
        newer = encode([os.urandom(32) for _ in range(3)], "go test ./...")
        assert (await gate.client.put(url, content=newer, headers=WRITER)).status_code == 204
        assert decode((await gate.client.get(url, headers=READER)).content).ids == decode(newer).ids
        assert (await gate.client.put(url, content=b"GCM1junk", headers=WRITER)).status_code == 400
        assert (await gate.client.put(url, content=newer[:-1], headers=WRITER)).status_code == 400
        bad_key = await gate.client.put(f"/v1/ns/{NS}/manifests/..%2Fx", content=newer, headers=WRITER)
        assert bad_key.status_code == 400
        assert (await gate.client.get(url)).status_code == 401
        assert gate.ops()[("write", "ok")] == 2  # the refused and bad ones wrote nothing


async def test_the_stream_carries_every_entry_that_exists_at_one_read_each(tmp_path: Path) -> None:
    async with in_process(tmp_path, TOKENS) as gate:
        bodies = [b"small", os.urandom(3000), b"z" * 200_000, os.urandom((1 << 20) + 12345)]  # plain, zstd, > head
        actions = [await _put(gate, body) for body in bodies]
        missing = new_action()
        asked = [actions[0], missing, *actions[1:]]
        reads_before = gate.ops().get(("read", "ok"), 0)
        resp = await gate.client.post(f"/v1/ns/{NS}/prefetch", headers=READER,
                                      content=b"".join(bytes.fromhex(a) for a in asked))
        assert resp.status_code == 200, resp.text
        frames = _frames(resp.content)
        assert sorted((kind, action.hex()) for kind, action, _ in frames) == sorted(
            [("E", a) for a in actions] + [("M", missing)])
        assert {action.hex(): payload for kind, action, payload in frames if kind == "E"} == dict(
            zip(actions, bodies, strict=True))
        assert gate.ops()[("read", "ok")] - reads_before == len(actions)
        assert gate.ops()[("read", "miss")] == 1


async def test_bad_prefetch_requests_are_refused(tmp_path: Path) -> None:
    async with in_process(tmp_path, TOKENS) as gate:
        assert (await gate.client.post(f"/v1/ns/{NS}/prefetch", content=b"x" * 33, headers=READER)).status_code == 400
        assert (await gate.client.post("/v1/ns/other/prefetch", content=b"x" * 32, headers=READER)).status_code == 403
        empty = await gate.client.post(f"/v1/ns/{NS}/prefetch", content=b"", headers=READER)
        assert empty.status_code == 200 and _frames(empty.content) == []


async def test_an_unreadable_entry_is_skipped_not_sent(tmp_path: Path) -> None:
    async with in_process(tmp_path, TOKENS) as gate:
        good, broken = await _put(gate, b"good entry"), await _put(gate, b"broken entry")
        path = gate.storage_path / "ac" / NS / broken[:2] / broken
        data = path.read_bytes()
        path.write_bytes(data.replace(b"GCE1", b"XXXX"))  # the frame magic: the gate cannot read it
        resp = await gate.client.post(f"/v1/ns/{NS}/prefetch", headers=READER,
                                      content=bytes.fromhex(good) + bytes.fromhex(broken))
        assert sorted((k, a.hex()) for k, a, _ in _frames(resp.content)) == sorted([("E", good), ("S", broken)])


async def test_the_hot_tier_reads_storage_once_for_many_jobs(tmp_path: Path) -> None:
    async with in_process(tmp_path, {**TOKENS, "hot_tier": {"enabled": True, "max_bytes": 1 << 20}}) as gate:
        small = [await _put(gate, os.urandom(2000)) for _ in range(5)]
        large = await _put(gate, os.urandom((1 << 20) + 1))  # over max_object_bytes: never kept
        reads = gate.ops().get(("read", "ok"), 0)
        for _ in range(3):  # three jobs warming from the same entries, the first ones at the same time
            got = await asyncio.gather(*(gate.client.get(f"/v1/ns/{NS}/actions/{a}", headers=READER)
                                         for a in [*small, *small, large]))
            assert all(r.status_code == 200 for r in got)
        stream = await gate.client.post(f"/v1/ns/{NS}/prefetch", headers=READER,
                                        content=b"".join(bytes.fromhex(a) for a in small))
        assert len(_frames(stream.content)) == 5
        assert gate.ops()[("read", "ok")] - reads == len(small) + 3  # each small one once; the large one per job
        metrics = (await gate.client.get("/metrics")).text
        hit_series = 'gocachegate_hot_tier_reads_total{result="hit"}'
        hits = next(line for line in metrics.splitlines() if line.startswith(hit_series))
        assert float(hits.split()[-1]) >= 2 * len(small)
        # Deleting through the gate's entries drops the hot copy: the next read is a miss.
        await gate.gate.entries.storage.delete(f"ac/{NS}/{small[0][:2]}/{small[0]}")
        assert (await gate.client.get(f"/v1/ns/{NS}/actions/{small[0]}", headers=READER)).status_code == 404


async def test_the_hot_tier_is_bounded_in_bytes(tmp_path: Path) -> None:
    async with in_process(tmp_path, {"hot_tier": {"enabled": True, "max_bytes": 10_000}}) as gate:
        actions = [await _put_open(gate, os.urandom(3000)) for _ in range(6)]
        for action in actions:
            assert (await gate.client.get(f"/v1/ns/{NS}/actions/{action}")).status_code == 200
        metrics = (await gate.client.get("/metrics")).text
        held = next(line for line in metrics.splitlines() if line.startswith("gocachegate_hot_tier_bytes "))
        assert 0 < float(held.split()[-1]) <= 10_000
        reads = gate.ops()[("read", "ok")]
        assert (await gate.client.get(f"/v1/ns/{NS}/actions/{actions[-1]}")).status_code == 200  # recent: kept
        assert gate.ops()[("read", "ok")] == reads
        assert (await gate.client.get(f"/v1/ns/{NS}/actions/{actions[0]}")).status_code == 200  # oldest: evicted
        assert gate.ops()[("read", "ok")] == reads + 1


async def _put_open(gate: InProcess, body: bytes) -> str:
    action = new_action()
    resp = await gate.client.put(f"/v1/ns/{NS}/actions/{action}", content=body, headers=entry_headers(body))
    assert resp.status_code == 201
    return action
